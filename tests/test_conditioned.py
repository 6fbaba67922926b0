"""One task-conditioned SAC agent for every task (``sac_mode="task-conditioned"``):
what it sees, what it stores, resume, the medium rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt.collect.collector import _ROLLOUT, _sub_seed, choose_medium, collect
from metadt.collect.replay import Replay
from metadt.collect.sac import (PolicyParams, SACEnsemble, TaskConditionedSAC,
                                feature_normalizer, fold_task_features)
from metadt import tensorfile
from metadt.config.collect import CollectConfig, SACConfig
from metadt.data.dataset import QUALITIES, Dataset


class Interrupt(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conditioned(family: str = "point-robot", **changes) -> CollectConfig:
    return CollectConfig.for_family(family, "smoke").replace(
        device="cpu", sac_mode="task-conditioned", **changes)


def _arrays(ds: Dataset, quality: str) -> dict[str, np.ndarray]:
    store = ds.store(quality, mmap=False)
    return {name: np.asarray(store.column(name)).copy()
            for name in ("obs", "actions", "rewards", "next_obs", "terminals")}


def _manual_actor(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The actor MLP written out with matmuls (the reference)."""
    h = x
    for k in range(0, len(params), 2):
        h = h @ params[k][0] + params[k + 1][0, 0]
        if k + 2 < len(params):
            h = torch.relu(h)
    return h


# ---------------------------------------------------------------- the agent


def test_agent_input_is_observation_and_task_features_only():
    """Per task, the folded actor (what checkpoints hold) is the one actor applied to
    obs ⊕ standardized task features; tasks with equal features act identically."""
    features = np.array([[0.5, 1.0], [2.0, -1.0], [0.5, 1.0], [3.0, 0.0]])
    mean, scale = feature_normalizer(features, [0, 1, 3])
    np.testing.assert_allclose(mean, features[[0, 1, 3]].mean(0))
    np.testing.assert_allclose(scale, features[[0, 1, 3]].std(0))
    agent = TaskConditionedSAC(features, mean, scale, 3, 2, [-1, -1], [1, 1],
                               SACConfig(hidden_dim=16), device="cpu", seed=0)
    assert agent.agent.n == 1 and agent.agent.obs_dim == 3 + 2
    folded = agent.policy_snapshot()
    assert folded.num_agents == 4 and folded.params[0].shape == (4, 3, 16)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(4, 5, 3, generator=gen)
    noise = torch.randn(4, 5, 2, generator=gen)
    act, _, _ = folded.sample(obs, noise=noise)
    one = [p.detach() for p in agent.agent.policy.params]
    norm = (features - mean) / scale
    for i in range(4):
        x = torch.cat([obs[i], torch.as_tensor(norm[i], dtype=torch.float32).expand(5, 2)], -1)
        mu, log_std = _manual_actor(one, x).chunk(2, -1)
        want = torch.tanh(mu + log_std.clamp(-20, 2).exp() * noise[i])
        torch.testing.assert_close(act[i], want, rtol=1e-5, atol=1e-5)
    # same features -> the same policy: nothing else of the task reaches the agent
    for p in folded.params:
        torch.testing.assert_close(p[0], p[2], rtol=0, atol=0)
    same_obs = obs[0:1].expand(4, 5, 3)
    a0 = folded.sample(same_obs, noise=noise[0:1].expand(4, 5, 2))[0]
    torch.testing.assert_close(a0[0], a0[2], rtol=0, atol=0)
    assert not torch.allclose(a0[0], a0[1])
    # acting during training: row i in task i, with the same draws as the folded actor
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    o = torch.randn(4, 3, generator=gen)
    torch.testing.assert_close(agent.act(o, generator=g1),
                               folded.act(o, generator=g2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one-agent"):
        fold_task_features(folded, agent.features, 3)


def test_update_sees_each_transitions_task_features():
    """An update on a pooled batch equals a one-agent SAC update on obs ⊕ features of each
    transition's task (the same weights, batch and noise)."""
    features = np.array([[0.0], [1.0], [3.0]])
    cfg = SACConfig(hidden_dim=16, batch_size=8)
    agent = TaskConditionedSAC(features, np.zeros(1), np.ones(1), 2, 2, [-1, -1], [1, 1], cfg,
                               device="cpu", seed=1)
    ref = SACEnsemble(1, 3, 2, [-1, -1], [1, 1], cfg, device="cpu", seed=1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        tasks = torch.randint(0, 3, (8,), generator=gen)
        batch = {"obs": torch.randn(1, 8, 2, generator=gen),
                 "actions": torch.rand(1, 8, 2, generator=gen) * 2 - 1,
                 "rewards": torch.randn(1, 8, generator=gen),
                 "next_obs": torch.randn(1, 8, 2, generator=gen),
                 "terminals": torch.zeros(1, 8), "tasks": tasks}
        nn_, npi = torch.randn(1, 8, 2, generator=gen), torch.randn(1, 8, 2, generator=gen)
        f = torch.as_tensor(features, dtype=torch.float32)[tasks][None]
        wide = {k: v for k, v in batch.items() if k != "tasks"}
        wide["obs"] = torch.cat([batch["obs"], f], -1)
        wide["next_obs"] = torch.cat([batch["next_obs"], f], -1)
        got = agent.update(batch, noise_next=nn_, noise_pi=npi)
        want = ref.update(wide, noise_next=nn_, noise_pi=npi)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    for p, q in zip(agent.agent.policy.params, ref.policy.params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_pooled_replay_draws_over_every_task():
    rep = Replay(3, 2, 1, layout="shared")
    for t in range(4):
        obs = np.stack([np.full(2, 10.0 * i + t) for i in range(3)])
        rep.add(obs, np.zeros((3, 1)), np.arange(3.0), obs + 1, np.zeros(3, bool), t == 3)
    b = rep.sample_pooled(64, seed=0, update=0, device=torch.device("cpu"))
    assert b["obs"].shape == (1, 64, 2) and b["tasks"].shape == (64,)
    assert set(b["tasks"].tolist()) == {0, 1, 2}
    # each transition keeps its task: obs row i*10 + t, reward i
    np.testing.assert_array_equal(b["obs"][0, :, 0].numpy() // 10, b["tasks"].numpy())
    np.testing.assert_array_equal(b["rewards"][0].numpy(), b["tasks"].numpy())
    with pytest.raises(ValueError, match="shared"):
        Replay(3, 2, 1).sample_pooled(4, 0, 0, torch.device("cpu"))


# ---------------------------------------------------------------- collection


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "cv"
    collect(conditioned("cheetah-vel"), out, seed=0)
    return out


def test_stored_observations_are_the_envs_own(cheetah):
    """The dataset's observations are what the env returns (re-simulated from the stored
    actions): the task parameter never enters the offline data."""
    ds = Dataset.open(cheetah)
    card, fam = ds.card, ds.family
    assert card.collection["sac_mode"] == "task-conditioned"
    cond = card.collection["task_conditioning"]
    assert cond["agents"] == 1 and cond["feature_dim"] == 1
    assert card.collection["config"]["sac_mode"] == "task-conditioned"
    cfg = CollectConfig.from_dict(card.collection["config"])
    par = min(cfg.rollout_parallel, cfg.episodes_per_task)
    seed0 = _sub_seed(0, _ROLLOUT)  # expert: the first rolled-out quality
    store = ds.store("expert", mmap=False)
    assert store.obs_dim == fam.obs_dim == 20
    offsets, lengths = store.episode_offsets(), store.episode_lengths()
    cols = {k: np.asarray(store.column(k)) for k in ("obs", "actions", "next_obs")}
    for task in range(fam.num_tasks):
        e = int(store.episodes_of_task(task)[0])
        rows = slice(int(offsets[e]), int(offsets[e]) + int(lengths[e]))
        ep = {k: v[rows] for k, v in cols.items()}
        env = fam.make_env(fam.tasks[task])
        obs, _ = env.reset(seed=seed0 + task * par)
        sim = [obs]
        for a in np.asarray(ep["actions"], dtype=np.float64):
            obs, *_ = env.step(a)
            sim.append(obs)
        env.close()
        sim = np.asarray(sim, dtype=np.float32)
        np.testing.assert_allclose(ep["obs"], sim[:-1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ep["next_obs"], sim[1:], rtol=1e-5, atol=1e-5)


def test_checkpoints_hold_one_actor_per_task(cheetah):
    """Checkpoints have the per-task format (one stacked actor per task, the env's obs as
    input), so evaluation, the medium rule and rollouts are those of per-task SAC."""
    ds = Dataset.open(cheetah)
    ckpts = sorted((cheetah / ".work" / "checkpoints").glob("step_*.safetensors"))
    assert ckpts
    for path in ckpts:
        pol = PolicyParams.from_state_dict(tensorfile.load(path, None))
        assert pol.num_agents == ds.family.num_tasks
        assert pol.params[0].shape[1] == ds.family.obs_dim


def _interrupt(pred):
    def progress(ev):
        if ev.get("phase") == "train" and pred(ev):
            raise Interrupt("simulated kill")
    return progress


def test_resumed_conditioned_collection_equals_uninterrupted(tmp_path):
    """Killed mid-training after a resume point, rerun: the same dataset, card and medium
    checkpoints as one uninterrupted run (and the medium rule's choice on the card's
    evaluations)."""
    cfg = conditioned("point-robot", steps_per_task=240, resume_every=100, checkpoint_every=40)
    whole = collect(cfg, tmp_path / "whole", seed=0)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        collect(cfg, out, seed=0, progress=_interrupt(lambda ev: ev["step"] >= 160))
    events = []
    resumed = collect(cfg, out, seed=0, progress=events.append)
    assert next(ev for ev in events if ev["phase"] == "train")["step"] == 100
    a, b = whole.card, resumed.card
    assert a.qualities == b.qualities
    assert a.collection["checkpoint_evals"] == b.collection["checkpoint_evals"]
    assert a.collection["budget"] == b.collection["budget"]
    for q in QUALITIES:
        for name, arr in _arrays(whole, q).items():
            np.testing.assert_array_equal(arr, _arrays(resumed, q)[name], err_msg=f"{q}/{name}")
    n = len(a.tasks)
    evals = {int(s): np.asarray(v) for s, v in a.collection["checkpoint_evals"].items()}
    rand = np.asarray([a.random_returns[str(i)] for i in range(n)])
    steps, _ = choose_medium(evals, rand, cfg.steps_per_task)
    for card in (a, b):
        med = card.qualities["medium"]["checkpoints"]
        assert [med[str(i)]["step"] for i in range(n)] == steps.tolist()
    # 6 tasks, one agent: 0.5 updates per step of all tasks
    assert a.collection["budget"]["updates"] == int((240 - 40 + 1) * 0.5)


def test_per_task_mode_still_collects_mujoco(tmp_path):
    """``sac_mode=per-task`` (the paper preset's) on a MuJoCo family: one agent per task."""
    cfg = conditioned("cheetah-vel").replace(sac_mode="per-task")
    ds = collect(cfg, tmp_path / "cv", seed=0)
    assert ds.card.collection["sac_mode"] == "per-task"
    assert "task_conditioning" not in ds.card.collection
    ckpt = sorted((tmp_path / "cv" / ".work" / "checkpoints").glob("step_*.safetensors"))[-1]
    pol = PolicyParams.from_state_dict(tensorfile.load(ckpt, None))
    assert pol.num_agents == 2 and pol.params[0].shape[1] == ds.family.obs_dim
    with pytest.raises(ValueError, match="sac_mode"):
        cfg.replace(sac_mode="shared").validate()
