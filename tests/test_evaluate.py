"""Evaluation loop against a hand-built two-task case with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt.config.evaluate import EvaluateConfig
from metadt.evaluate.evaluator import Evaluator, Subject, TaskTargets, eval_task_ids
from metadt.evaluate.few_shot import own_prompts, stack_prompts
from metadt._core import ACTION_PAD
from metadt.evaluate.history import record_steps
from metadt.evaluate.metrics import normalized, summarize, task_rows
from metadt.evaluate.rollout import rollout


# ---------------------------------------------------------------- the case
class LineEnvs:
    """1-D point on a line: s' = s + a (a clipped to [-1, 1]), reward -|s' - goal|."""

    def __init__(self, family, tasks, seed=None):
        self.family, self.goals = family, np.array([t["goal"] for t in tasks], dtype=float)
        self.n, self.t, self.s = len(tasks), 0, np.zeros((len(tasks), 1))
        family.envs_made += 1

    def reset(self, seed=None, options=None):
        self.t, self.s = 0, np.zeros((self.n, 1))
        return self.s.copy(), {}

    def step(self, actions):
        assert self.t < self.family.horizon, "stepped past the horizon"
        a = np.clip(np.asarray(actions, float), -1, 1)
        self.s = self.s + a
        self.t += 1
        rew = -np.abs(self.s[:, 0] - self.goals)
        trunc = np.full(self.n, self.t >= self.family.horizon)
        return self.s.copy(), rew, np.zeros(self.n, bool), trunc, {"success": np.abs(self.s[:, 0] - self.goals) < 0.5}

    def close(self):
        pass


class TwoTaskFamily:
    """Task 0: goal +3; task 1: goal -3 (task 0 train, task 1 test); horizon 6."""

    name = "two-task-line"
    obs_dim, act_dim, horizon, return_scale = 1, 1, 6, 10.0

    def __init__(self):
        self.tasks = [{"goal": 3.0}, {"goal": -3.0}]
        self.train_ids, self.test_ids = [0], [1]
        self.action_low, self.action_high = np.array([-1.0]), np.array([1.0])
        self.envs_made = 0

    def make_vector_env(self, tasks, seed=None):
        return LineEnvs(self, tasks, seed)


class ConstantPolicy:
    """Always moves by `a` (the known answer: return of a constant walk)."""

    def __init__(self, a):
        self.a, self.calls = a, []

    def predict_action(self, batch, world_model=None):
        self.calls.append({k: v.clone() for k, v in batch.items()})
        return torch.full((batch["obs"].shape[0], 1), float(self.a))


class PromptFollower:
    """Moves toward the sign of the prompt's last state; without a prompt: +1.

    With a prompt taken from its own +1 walk on the -3 task, it still goes +1
    (it can only follow what the prompt shows): used to check prompts are the
    agent's own. With a prompt showing negative states it goes -1.
    """

    def predict_action(self, batch, world_model=None):
        n = batch["obs"].shape[0]
        if "prompt_obs" not in batch:
            return torch.ones(n, 1)
        return torch.sign(batch["prompt_obs"][:, -1, :]).reshape(n, 1)


class GoalReader:
    """The right answer from the context: after one step the reward tells the goal's side.

    At t=0 the context is empty (all padding): step +1. At t=1 the one real transition
    in the context says r_0 = -|1 - goal|: -2 for goal +3, -4 for goal -3; step toward
    the goal, then keep the previous action. Reads ctx_* exactly as the world model
    would: the transitions strictly before the current step.
    """

    def predict_action(self, batch, world_model=None):
        K = batch["obs"].shape[1]
        h = batch["ctx_obs"].shape[1] - K
        prev_r = batch["ctx_rewards"][:, K - 1:K - 1 + h][:, -1]
        prev_a = batch["ctx_actions"][:, K - 1:K - 1 + h][:, -1, 0]
        real = batch["ctx_mask"][:, K - 1:K - 1 + h][:, -1]
        t = batch["timesteps"][:, -1]
        out = torch.ones(batch["obs"].shape[0])
        out = torch.where(real & (t == 1), torch.where(prev_r > -3, 1.0, -1.0), out)
        out = torch.where(real & (t > 1), prev_a, out)
        assert not bool((real & (t == 0)).any()), "t=0 context must be padding"
        return out.reshape(-1, 1)


def walk_return(a, goal, horizon):
    return float(sum(-abs(a * (t + 1) - goal) for t in range(horizon)))


# -------------------------------------------------------------- history
def test_live_windows_left_pad_windows_and_contexts():
    from metadt import TrajectoryStore

    K, h = 4, 3
    live = TrajectoryStore(1, 1)
    streams, tasks, targets = np.array([0, 1]), np.array([0, 1]), np.array([-5.0, -20.0])

    def batch(obs):
        return live.live_windows(streams, obs, targets, tasks, window_len=K, context_len=h, return_scale=10.0)

    obs = np.zeros((2, 1))
    b = batch(obs)
    assert b["obs"].shape == (2, K, 1) and b["ctx_obs"].shape == (2, K + h, 1)
    np.testing.assert_array_equal(b["mask"][0], [False, False, False, True])
    np.testing.assert_array_equal(b["actions"][0, :3, 0], [ACTION_PAD] * 3)
    np.testing.assert_allclose(b["rtg"][:, -1], [-0.5, -2.0])
    np.testing.assert_array_equal(b["tasks"], [0, 1])
    np.testing.assert_array_equal(b["episodes"], [-1, -1])
    assert not b["ctx_mask"].any(), "t=0: the context is all padding"
    assert np.all(b["ctx_obs"] == 0) and np.all(b["ctx_rewards"] == 0)
    nxt = np.array([[1.0], [-1.0]])
    record_steps(live, streams, tasks, obs, np.array([[1.0], [-1.0]]), np.array([-2.0, -4.0]), nxt)
    obs = nxt
    b = batch(obs)
    # context of the last position = ctx[K-1 : K-1+h]: one real transition (step 0), left-padded
    c = slice(K - 1, K - 1 + h)
    np.testing.assert_array_equal(b["ctx_mask"][0, c], [False, False, True])
    np.testing.assert_allclose(b["ctx_rewards"][:, c][:, -1], [-2.0, -4.0])
    np.testing.assert_allclose(b["ctx_actions"][:, c][:, -1, 0], [1.0, -1.0])
    np.testing.assert_allclose(b["ctx_obs"][:, c][:, -1, 0], [0.0, 0.0])  # s_0
    np.testing.assert_allclose(b["rtg"][:, -2:], [[-0.5, -0.3], [-2.0, -1.6]])
    np.testing.assert_array_equal(b["timesteps"][0], [0, 0, 0, 1])
    np.testing.assert_allclose(b["actions"][:, -2, 0], [1.0, -1.0])  # step 0's action
    np.testing.assert_allclose(b["obs"][:, -1, 0], [1.0, -1.0])      # the current obs
    assert b["actions"][0, -1, 0] == 0.0                              # step t: unknown yet
    assert b["rewards"][0, -1] == 0.0 and not b["ctx_mask"][:, -1].any()
    for _ in range(4):
        record_steps(live, streams, tasks, obs, np.ones((2, 1)), np.zeros(2), obs + 1)
        obs = obs + 1
    b = batch(obs)  # t = 5: the context of the last position is steps 2..4, all real
    assert b["ctx_mask"][:, c].all()
    np.testing.assert_array_equal(b["timesteps"][0], [2, 3, 4, 5])
    assert b["mask"].all()
    # a stream's task is its open episode's: asking for another is an error, as is a bad shape
    with pytest.raises(ValueError, match="task"):
        live.live_windows(streams, obs, targets, np.array([1, 1]), window_len=K)
    with pytest.raises(ValueError, match="obs"):
        live.live_windows(streams, obs[:1], targets, tasks, window_len=K)


def test_rollout_constant_policy_known_returns():
    fam = TwoTaskFamily()
    pol = ConstantPolicy(1.0)
    tr = rollout(pol, fam, [0, 1, 1], target_returns=[-1.0, -2.0, -2.0], window_len=3, context_len=2,
                 return_scale=fam.return_scale)
    assert fam.envs_made == 1, "all tasks stepped together in one vector env"
    assert len(pol.calls) == fam.horizon, "one batched model call per step"
    assert pol.calls[0]["obs"].shape[0] == 3
    np.testing.assert_allclose(tr.returns, [walk_return(1, 3, 6), walk_return(1, -3, 6),
                                            walk_return(1, -3, 6)])
    assert tr.obs.shape == (3, 6, 1) and tr.next_obs.shape == (3, 6, 1)
    np.testing.assert_allclose(tr.next_obs[:, :-1], tr.obs[:, 1:])
    # rtg decreases by the rewards received (divided by the return scale)
    last = pol.calls[-1]
    np.testing.assert_allclose(last["rtg"][0, -1].item(),
                               (-1.0 - tr.rewards[0, :5].sum()) / 10.0, rtol=1e-5)
    assert tr.success is not None and tr.success[0] and not tr.success[1]


def test_rollout_context_policy_finds_the_goal():
    fam = TwoTaskFamily()
    tr = rollout(GoalReader(), fam, [0, 1], target_returns=[0.0, 0.0], window_len=3, context_len=2,
                 return_scale=10.0)
    # task 0: +1 every step; task 1: +1 then reads the reward and goes -1 (known walk)
    assert tr.actions[0, :, 0].tolist() == [1.0] * 6
    assert tr.actions[1, :, 0].tolist() == [1.0] + [-1.0] * 5
    np.testing.assert_allclose(tr.returns, [walk_return(1, 3, 6), -11.0])


# ---------------------------------------------------------------- prompts
def test_prompt_segments_rtg_timesteps_and_short_episodes():
    from metadt import TrajectoryStore

    s = TrajectoryStore(1, 1)
    s.add_episode(np.arange(4.0)[:, None], np.zeros((4, 1)), np.array([-1.0, -2.0, -3.0, -4.0]))
    s.add_episode(np.full((1, 1), 7.0), np.full((1, 1), 0.5), np.array([-1.0]))
    p = s.prompt_segments([0, 1], [1, 0], 2, return_scale=10.0)
    np.testing.assert_allclose(p["prompt_rtg"], [[-0.9, -0.7], [0.0, -0.1]], rtol=1e-6)
    np.testing.assert_array_equal(p["prompt_timesteps"], [[1, 2], [0, 0]])
    np.testing.assert_allclose(p["prompt_obs"][:, :, 0], [[1.0, 2.0], [0.0, 7.0]])
    np.testing.assert_array_equal(p["prompt_mask"], [[True, True], [False, True]])
    np.testing.assert_allclose(p["prompt_actions"][1, :, 0], [ACTION_PAD, 0.5])
    np.testing.assert_array_equal(p["prompt_episodes"], [0, 1])
    for eps, starts in (([0], [3]), ([1], [1]), ([2], [0]), ([0, 1], [0])):
        with pytest.raises(ValueError):
            s.prompt_segments(eps, starts, 2, return_scale=10.0)


def test_own_prompt_comes_from_the_best_own_episode():
    fam = TwoTaskFamily()
    tr = rollout(ConstantPolicy(1.0), fam, [1, 1], target_returns=[0.0, 0.0], window_len=2,
                 context_len=2, return_scale=10.0)
    tr.rewards[1] += 1.0  # make the second episode the best
    tr.obs[1] += 100.0    # and recognizable
    prompts, info = own_prompts(tr, prompt_len=2, prompt_start_min=2, return_scale=10.0, strategy="last",
                                rng=np.random.default_rng(0))
    assert list(prompts) == [1] and info[1]["source"] == "own"
    assert info[1]["start"] == 4 and info[1]["episode_return"] == pytest.approx(tr.returns[1])
    np.testing.assert_allclose(prompts[1].obs[0], tr.obs[1, 4:6])
    rnd, _ = own_prompts(tr, prompt_len=2, prompt_start_min=2, return_scale=10.0, strategy="random",
                         rng=np.random.default_rng(0))
    assert 2 <= int(rnd[1].starts[0]) <= 4, "segment start in [h, T-k]"
    stacked = stack_prompts(prompts, np.array([1, 1, 1]))
    assert stacked.obs.shape == (3, 2, 1)


# ---------------------------------------------------------------- evaluator
def _targets(fam):
    return TaskTargets(split={1: "test", 0: "train"}, target={1: -5.0, 0: -5.0},
                       dataset_max={1: -4.0, 0: -4.0}, dataset_mean={1: -10.0, 0: -10.0},
                       random={1: -20.0, 0: -20.0})


def test_evaluator_settings_and_report_numbers():
    fam = TwoTaskFamily()
    subj = Subject(method="meta-dt", policy=ConstantPolicy(-1.0), family=fam, window_len=3,
                   context_len=2, prompt_len=2, return_scale=10.0, prompt_strategy="last")
    cfg = EvaluateConfig(episodes=2, few_shot_episodes=3, few_shot_noise=0.0, few_shot_rounds=1,
                         settings=("zero-shot", "few-shot"))
    saved = []
    res = Evaluator(subj, cfg, _targets(fam)).run(save=lambda r: saved.append(dict(r)))
    assert set(res["settings"]) == {"zero-shot", "few-shot"} and len(saved) == 2
    zs = res["settings"]["zero-shot"]["returns"]
    assert zs["1"] == [walk_return(-1, -3, 6)] * 2 and zs["0"] == [walk_return(-1, 3, 6)] * 2
    fs = res["settings"]["few-shot"]
    assert fs["collect_returns"]["1"] == [walk_return(-1, -3, 6)] * 3
    assert fs["prompts"]["1"]["source"] == "own"
    # the report's numbers are the raw episode returns' mean / std over test tasks and seeds
    res2 = Evaluator(Subject(**{**subj.__dict__, "seed": 1, "policy": ConstantPolicy(-0.5)}),
                     cfg, _targets(fam)).run()
    rows = task_rows([res, res2])
    summ = {(e["method"], e["setting"]): e for e in summarize(rows, "test")}
    vals = [walk_return(-1, -3, 6), walk_return(-0.5, -3, 6)]
    z = summ[("meta-dt", "zero-shot")]
    assert z["return_mean"] == pytest.approx(np.mean(vals))
    assert z["return_std"] == pytest.approx(np.std(vals))
    assert z["normalized_mean"] == pytest.approx(np.mean([(v + 20) / 16 for v in vals]))
    assert z["dataset_max"] == -4.0 and z["seeds"] == [0, 1] and z["tasks"] == [1]


def test_evaluator_resumes_finished_settings():
    fam = TwoTaskFamily()
    pol = ConstantPolicy(1.0)
    subj = Subject(method="dt", policy=pol, family=fam, window_len=2, context_len=2, prompt_len=2,
                   return_scale=10.0)
    ev = Evaluator(subj, EvaluateConfig(episodes=1), _targets(fam))
    first = ev.run()
    n = len(pol.calls)
    again = ev.run(first)
    assert len(pol.calls) == n and again is first


def test_few_shot_prompt_only_sees_own_trajectories():
    """The few-shot setting builds its prompt from the zero-shot episodes it just ran.

    The policy follows its prompt's sign: its own walk on the -3 task goes +1 (it starts
    with +1), so a prompt made of its own episodes keeps it going +1, while any
    demonstration of the task (which goes toward -3) would turn it around.
    """
    fam = TwoTaskFamily()
    subj = Subject(method="meta-dt", policy=PromptFollower(), family=fam, window_len=2, context_len=2,
                   prompt_len=2, return_scale=10.0, prompt_strategy="random")

    class NoStore:
        def __call__(self):
            raise AssertionError("few-shot must not open the dataset")

    ev = Evaluator(subj, EvaluateConfig(episodes=1, few_shot_noise=0.0, settings=("few-shot",)),
                   _targets(fam), expert_store=NoStore())
    res = ev.run()
    assert res["settings"]["few-shot"]["returns"]["1"] == [walk_return(1, -3, 6)]


def test_rollout_action_noise_is_seeded_clipped_and_centred():
    fam = TwoTaskFamily()
    ids = [0] * 300

    def go(noise, seed):
        return rollout(ConstantPolicy(0.0), fam, ids, target_returns=[0.0] * 300, window_len=2,
                       context_len=2, return_scale=10.0, seed=seed, action_noise=noise).actions

    assert np.all(go(0.0, 1) == 0.0), "no noise: the policy's action exactly"
    a = go(0.5, 1)
    np.testing.assert_array_equal(a, go(0.5, 1))  # reproducible from the seed
    assert not np.array_equal(a, go(0.5, 2))
    assert a.min() >= -1.0 and a.max() <= 1.0, "clipped to the action bounds"
    # std 0.5 x half the range (1) = 0.5, slightly reduced by clipping at 2 sigma
    assert abs(a.mean()) < 0.02 and 0.45 < a.std() < 0.5
    with pytest.raises(ValueError, match="action_noise"):
        go(-0.1, 1)


def test_few_shot_rounds_reprompt_with_the_best_own_episode():
    """Round 1 explores with noise; the best own episode's segment prompts round 2 and the
    evaluation. PromptFollower goes +1 without a prompt (away from task 1's goal -3) and
    follows the sign of the prompt's last state: only an own noisy episode that ended on
    the negative side can turn it around, and the best own episode of task 1 is one."""
    fam = TwoTaskFamily()
    subj = Subject(method="meta-dt", policy=PromptFollower(), family=fam, window_len=2, context_len=2,
                   prompt_len=2, return_scale=10.0, prompt_strategy="last")

    def no_store():
        raise AssertionError("few-shot must not open the dataset")

    base = dict(episodes=1, few_shot_episodes=8, settings=("few-shot",))
    quiet = Evaluator(subj, EvaluateConfig(**base, few_shot_noise=0.0), _targets(fam),
                      expert_store=no_store).run()["settings"]["few-shot"]
    assert quiet["returns"]["1"] == [walk_return(1, -3, 6)], "identical copies: no way back"
    fs = Evaluator(subj, EvaluateConfig(**base, few_shot_noise=2.0, few_shot_rounds=2),
                   _targets(fam), expert_store=no_store).run()["settings"]["few-shot"]
    assert len(fs["collect_rounds"]) == 2
    assert all(len(r["1"]) == 8 for r in fs["collect_rounds"])
    assert fs["collect_returns"]["1"] == fs["collect_rounds"][0]["1"] + fs["collect_rounds"][1]["1"]
    info = fs["prompts"]["1"]
    assert info["source"] == "own" and info["candidates"] == 16
    assert info["episode_return"] == pytest.approx(max(fs["collect_returns"]["1"]))
    assert fs["returns"]["1"] == [walk_return(-1, -3, 6)], "turned toward the goal"
    with pytest.raises(ValueError, match="few_shot_noise"):
        EvaluateConfig(few_shot_noise=-1.0).validate()
    with pytest.raises(ValueError, match="few_shot_rounds"):
        EvaluateConfig(few_shot_rounds=0).validate()


def test_eval_task_ids_and_normalized():
    ids = eval_task_ids(list(range(45)), [45, 46, 47, 48, 49], 3)
    assert [t for t, s in ids.items() if s == "test"] == [45, 46, 47, 48, 49]
    assert [t for t, s in ids.items() if s == "train"] == [0, 22, 44]
    assert normalized(-4.0, -20.0, -4.0) == 1.0 and normalized(-20.0, -20.0, -4.0) == 0.0
    assert np.isnan(normalized(1.0, None, 2.0))


# ------------------------------------------------ prompts with the real store
def test_complementary_prompt_is_argmax_error_segment_of_own_best_episode():
    """argmax: the kept (best) own episode is scored; the largest-error k-segment wins."""
    fam = TwoTaskFamily()
    tr = rollout(ConstantPolicy(1.0), fam, [0, 1, 1, 0], target_returns=[0.0] * 4, window_len=2,
                 context_len=2, return_scale=10.0)
    tr.rewards[2] += 0.5  # row 2 is task 1's best, row 0 task 0's (first on ties)
    seen = []

    def scorer(store, world_model, column):
        # error = 1 at steps 3 and 4 of the episodes, 0 elsewhere: argmax k=2 start = 3
        n = store.num_steps
        err = np.zeros((n, 1), np.float32)
        for off in np.asarray(store.episode_offsets()):
            err[off + 3:off + 5] = 1.0
        seen.append((store.num_episodes, sorted(np.asarray(store.tasks()).tolist())))
        store.attach_column(column, err)

    prompts, info = own_prompts(tr, prompt_len=2, prompt_start_min=2, return_scale=10.0, strategy="argmax",
                                rng=np.random.default_rng(0), world_model=object(), scorer=scorer)
    assert seen == [(2, [0, 1])], "one kept episode per task, nothing else"
    assert info[1]["start"] == 3 and info[0]["start"] == 3
    assert info[1]["episode_return"] == pytest.approx(tr.returns[2])
    np.testing.assert_allclose(prompts[1].rewards[0], tr.rewards[2, 3:5])


def test_complementary_prompt_with_a_real_world_model():
    from metadt.config.world_model import WorldModelConfig
    from metadt.models import WorldModel

    fam = TwoTaskFamily()
    tr = rollout(ConstantPolicy(1.0), fam, [0, 1], target_returns=[0.0, 0.0], window_len=2,
                 context_len=2, return_scale=10.0)
    wm = WorldModel(1, 1, WorldModelConfig(context_len=2, gru_hidden=8, decoder_hidden=8,
                                           z_dim=4, input_embed_dim=4)).eval()
    prompts, info = own_prompts(tr, prompt_len=2, prompt_start_min=2, return_scale=10.0, strategy="argmax",
                                rng=np.random.default_rng(0), world_model=wm)
    from metadt.train.columns import StepTable  # the same errors, computed independently
    from metadt import TrajectoryStore
    from metadt.train.columns import compute_step_errors

    s = TrajectoryStore(1, 1)
    s.add_episode(tr.obs[1].astype(np.float32), tr.actions[1].astype(np.float32),
                  tr.rewards[1].astype(np.float32), next_obs=tr.next_obs[1].astype(np.float32),
                  task=1)
    err = compute_step_errors(StepTable.of(s), wm)
    scores = [err[i:i + 2].sum() for i in range(2, 5)]
    assert info[1]["start"] == 2 + int(np.argmax(scores))


def test_expert_prompt_is_a_segment_of_the_best_dataset_episode():
    from metadt import TrajectoryStore
    from metadt.evaluate.few_shot import expert_prompts

    s = TrajectoryStore(1, 1)
    for task, ret in ((1, -5.0), (1, -1.0), (0, -2.0)):
        s.add_episode(np.full((6, 1), ret, np.float32), np.zeros((6, 1), np.float32),
                      np.full(6, ret / 6, np.float32), next_obs=np.zeros((6, 1), np.float32),
                      task=task)
    prompts, info = expert_prompts(s, [1, 0], prompt_len=2, prompt_start_min=2, return_scale=10.0,
                                   strategy="last", rng=np.random.default_rng(0))
    assert info[1]["episode"] == 1 and info[1]["start"] == 4
    np.testing.assert_allclose(prompts[1].obs[0, :, 0], [-1.0, -1.0])
    np.testing.assert_allclose(prompts[1].rtg[0], [(-1.0 / 6) * 2 / 10, (-1.0 / 6) / 10], rtol=1e-5)
    assert prompts[0].source == "dataset:expert"


def test_live_batches_equal_the_training_windows():
    """Replaying a stored episode through the store's live streams gives the sample_windows
    window ending at the same step (what the policy saw in training), key by key."""
    from metadt import TrajectoryStore

    rng = np.random.default_rng(0)
    T, K, h, scale = 9, 4, 3, 10.0
    store = TrajectoryStore(2, 1)
    eps = []
    for e in range(3):
        obs = rng.normal(size=(T + 1, 2)).astype(np.float32)
        act = rng.uniform(-1, 1, size=(T, 1)).astype(np.float32)
        rew = rng.normal(size=T).astype(np.float32)
        store.add_episode(obs[:-1], act, rew, next_obs=obs[1:], task=e % 2)
        eps.append((obs, act, rew))
    b = store.sample_windows(64, window_len=K, context_len=h, return_scale=scale, seed=1)
    checked = 0
    for i in range(64):
        e = int(b["episodes"][i])
        obs, act, rew = eps[e]
        end = int(b["timesteps"][i][-1])
        live = TrajectoryStore(2, 1)
        streams, tasks = np.array([5]), np.array([e % 2])
        for t in range(end):
            record_steps(live, streams, tasks, obs[t:t + 1], act[t:t + 1], rew[t:t + 1],
                         obs[t + 1:t + 2])
        target = np.array([rew.astype(np.float64).sum()])
        lb = live.live_windows(streams, obs[end:end + 1], target, tasks, window_len=K, context_len=h,
                               return_scale=scale)
        assert sorted(lb) == sorted(b), "one layout: the same keys"
        for key in ("obs", "timesteps", "mask", "tasks"):
            np.testing.assert_array_equal(lb[key][0], np.asarray(b[key][i]), err_msg=key)
        # rtg: the target minus the rewards received, against the stored reward-to-go
        np.testing.assert_allclose(lb["rtg"][0], np.asarray(b["rtg"][i]), rtol=1e-6, atol=1e-7)
        # actions and rewards: equal except at the current step, unknown when acting
        np.testing.assert_array_equal(lb["actions"][0, :-1], np.asarray(b["actions"][i])[:-1])
        np.testing.assert_array_equal(lb["rewards"][0, :-1], np.asarray(b["rewards"][i])[:-1])
        # contexts: every context any window position uses (all but the last slot)
        for key in ("ctx_obs", "ctx_actions", "ctx_rewards", "ctx_mask"):
            np.testing.assert_array_equal(lb[key][0, :-1], np.asarray(b[key][i])[:-1], err_msg=key)
        checked += 1
    assert checked == 64


# ---------------------------------------------------------------- diagnostics
class ZRecorder(ConstantPolicy):
    """A constant walker that uses z: z of each window position = the sum of the rewards
    in its context (so z differs between the two tasks), recorded with every batch."""

    def compute_z(self, batch, world_model):
        K = batch["obs"].shape[1]
        r = batch["ctx_rewards"]
        return torch.stack([r[:, j:r.shape[1] - K + j].sum(1) for j in range(K)], 1)[..., None]

    def predict_action(self, batch, world_model=None):
        if "z" not in batch:
            batch = {**batch, "z": self.compute_z(batch, world_model)}
        return super().predict_action(batch, world_model)


def _last_calls(pol, n, start):
    return pol.calls[start:start + n]


def test_z_shuffle_changes_only_z():
    """zero-shot-z-shuffled: every env gets the z of the other task's env (same episode),
    computed at the same step; obs, actions, rtg, contexts, timesteps are untouched."""
    fam = TwoTaskFamily()
    pol = ZRecorder(0.5)
    subj = Subject(method="meta-dt-no-prompt", policy=pol, family=fam, window_len=3, context_len=2,
                   prompt_len=2, return_scale=10.0, world_model=object(),
                   training={"use_z": True})
    cfg = EvaluateConfig(episodes=2, settings=("zero-shot", "zero-shot-z-shuffled"))
    res = Evaluator(subj, cfg, _targets(fam)).run()
    assert res["settings"]["zero-shot-z-shuffled"]["z_from"] == {"1": 0, "0": 1}
    # the constant walker ignores z, so both settings see the same states and returns
    assert res["settings"]["zero-shot"]["returns"] == res["settings"]["zero-shot-z-shuffled"]["returns"]
    H = fam.horizon
    plain, shuf = pol.calls[:H], pol.calls[H:2 * H]
    # env order: task 1 (episodes 0, 1), task 0 (episodes 0, 1) -> other task, same episode
    perm = torch.tensor([2, 3, 0, 1])
    for a, b in zip(plain, shuf):
        assert set(a) == set(b)
        for k in a:
            if k != "z":
                assert torch.equal(a[k], b[k]), k
        z_own = pol.compute_z(a, None)
        assert torch.equal(b["z"], z_own[perm])
        assert not torch.equal(b["z"], z_own) or bool((z_own == 0).all())
    # a method without z has nothing to shuffle
    dt = Subject(method="dt", policy=ConstantPolicy(0.0), family=fam, window_len=3, context_len=2,
                 prompt_len=2, return_scale=10.0, training={"use_z": False})
    with pytest.raises(ValueError, match="does not use z"):
        Evaluator(dt, EvaluateConfig(episodes=1, settings=("zero-shot-z-shuffled",)),
                  _targets(fam)).run()


def test_prompt_swap_changes_only_the_prompt():
    """few-shot-prompt-swapped: the final evaluation of few-shot, with each task given the
    other task's few-shot prompt and nothing else changed."""
    fam = TwoTaskFamily()
    pol = ConstantPolicy(-1.0)
    subj = Subject(method="prompt-dt", policy=pol, family=fam, window_len=3, context_len=0,
                   prompt_len=2, return_scale=10.0, prompt_strategy="last")
    cfg = EvaluateConfig(episodes=1, few_shot_episodes=2, few_shot_rounds=1,
                         settings=("few-shot", "few-shot-prompt-swapped"))
    res = Evaluator(subj, cfg, _targets(fam)).run()
    H = fam.horizon
    fs, sw = pol.calls[H:2 * H], pol.calls[2 * H:3 * H]  # after one collection round
    assert len(pol.calls) == 3 * H  # the swap reuses the few-shot prompts (no re-collection)
    perm = torch.tensor([1, 0])  # env 0 = task 1, env 1 = task 0
    for a, b in zip(fs, sw):
        assert set(a) == set(b)
        for k in a:
            if k.startswith("prompt_"):
                assert torch.equal(b[k], a[k][perm]), k
            else:
                assert torch.equal(a[k], b[k]), k
    assert not torch.equal(fs[0]["prompt_obs"], sw[0]["prompt_obs"])
    assert res["settings"]["few-shot-prompt-swapped"]["prompt_from"] == {"1": 0, "0": 1}


def test_random_rollout_is_uniform_in_the_action_box():
    from metadt.envs import make_family
    from metadt.evaluate.rollout import random_rollout

    fam = make_family("point-robot", seed=0)
    tr = random_rollout(fam, [0, 0, 3], seed=5)
    assert tr.actions.shape == (3, 20, 2) and np.abs(tr.actions).max() <= 0.1
    assert not np.allclose(tr.actions[0], tr.actions[1])
    pos = np.cumsum(tr.actions, axis=1)  # s' = s + a from (0, 0)
    np.testing.assert_allclose(tr.next_obs, pos)
    goal = np.asarray(fam.tasks[3]["goal"])
    np.testing.assert_allclose(tr.rewards[2], -np.linalg.norm(pos[2] - goal, axis=1))
    again = random_rollout(fam, [0, 0, 3], seed=5)
    np.testing.assert_array_equal(again.actions, tr.actions)


def test_unseen_goals_are_new_and_calibrated_on_training_tasks_only():
    """eval_tasks: extra goals from another seed appended after the dataset's tasks, with
    reference returns random + c (optimal - random), c the median over the *training*
    tasks of (dataset max - random) / (optimal - random)."""
    from metadt.envs import make_family
    from metadt.evaluate.evaluator import add_unseen_tasks

    fam = make_family("point-robot", seed=0, num_tasks=4, num_train=3)
    opt = [fam.oracle_return(t) for t in fam.tasks]
    rnd = [-20.0, -25.0, -18.0, -30.0]
    frac = [0.5, 0.8, 0.6, 0.0]  # task 3 (test) must not count

    class Card:
        train_ids, test_ids = [0, 1, 2], [3]

        def returns(self, q):
            return {t: {"max": rnd[t] + frac[t] * (opt[t] - rnd[t]),
                        "mean": rnd[t] + 0.5 * frac[t] * (opt[t] - rnd[t])} for t in range(4)}

        def random_return(self, t):
            return rnd[t]

        def max_return(self, t, q):
            return self.returns(q)[t]["max"]

    cfg = EvaluateConfig(eval_tasks=3, unseen_random_episodes=50, num_train_tasks=0)
    base = TaskTargets({3: "test"}, {3: -5.0}, {3: -5.0}, {3: -9.0}, {3: -30.0})
    ext, tg = add_unseen_tasks(fam, Card(), "medium", cfg, base)
    assert ext.tasks[:4] == fam.tasks and len(ext.tasks) == 7 and tg.ids == [3, 4, 5, 6]
    assert all(tg.split[t] == "unseen" for t in (4, 5, 6)) and tg.split[3] == "test"
    assert ext.tasks[4:] == make_family("point-robot", seed=1_000_003, num_tasks=3, num_train=3).tasks
    for t in (4, 5, 6):
        r, o = tg.random[t], ext.oracle_return(ext.tasks[t])
        assert r < o
        assert tg.dataset_max[t] == pytest.approx(r + 0.6 * (o - r))  # median of .5, .8, .6
        assert tg.dataset_mean[t] == pytest.approx(r + 0.3 * (o - r))
        assert tg.target[t] == pytest.approx(tg.dataset_max[t])
    with pytest.raises(ValueError, match="task seed"):
        add_unseen_tasks(fam, Card(), "medium", cfg.replace(eval_tasks_seed=0), base)
