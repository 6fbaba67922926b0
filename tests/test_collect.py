"""`metadt collect`: datasets, card consistency, resume, medium choice, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metadt.collect.collector import checkpoint_steps, choose_medium, collect, mixed_split
from metadt.config.collect import CollectConfig, SACConfig
from metadt.data.dataset import QUALITIES, Dataset, return_stats


class Interrupt(Exception):
    pass


def smoke(family: str = "point-robot", **changes) -> CollectConfig:
    return CollectConfig.for_family(family, "smoke").replace(device="cpu", **changes)


@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "pr"
    collect(smoke(), out, seed=0)
    return out


def _arrays(ds: Dataset, quality: str) -> dict[str, np.ndarray]:
    store = ds.store(quality, mmap=False)
    return {name: np.asarray(store.column(name)).copy()
            for name in ("obs", "actions", "rewards", "next_obs", "terminals")}


# ---------------------------------------------------------------- the card


def test_card_consistent_with_stores(smoke_dataset):
    ds = Dataset.open(smoke_dataset)
    card = ds.card
    cfg = CollectConfig.from_dict(card.collection["config"])
    fam = ds.family
    assert card.family == "point-robot"
    assert len(card.tasks) == cfg.num_tasks == fam.num_tasks
    assert card.train_ids == list(range(cfg.num_train))
    assert card.test_ids == list(range(cfg.num_train, cfg.num_tasks))
    assert set(ds.qualities) == set(QUALITIES)
    assert sorted(card.random_returns) == sorted(str(i) for i in range(len(card.tasks)))
    n_med, n_exp = mixed_split(cfg.episodes_per_task, cfg.mixed_medium_fraction)
    for q in QUALITIES:
        store = ds.store(q)
        per_task = cfg.episodes_per_task if q != "mixed" else n_med + n_exp
        assert store.num_episodes == per_task * len(card.tasks)
        assert sorted(store.tasks()) == list(range(len(card.tasks)))
        assert set(np.asarray(store.episode_lengths()).tolist()) == {card.horizon}
        assert card.qualities[q]["returns"] == return_stats(store)
        for t in range(len(card.tasks)):
            assert len(store.episodes_of_task(t)) == per_task
    # the chosen checkpoints follow the protocol's rule
    evals = {int(s): np.asarray(v) for s, v in card.collection["checkpoint_evals"].items()}
    rand = np.asarray([card.random_returns[str(i)] for i in range(len(card.tasks))])
    steps, _ = choose_medium(evals, rand, cfg.steps_per_task)
    med = card.qualities["medium"]["checkpoints"]
    assert [med[str(i)]["step"] for i in range(len(card.tasks))] == steps.tolist()
    exp = card.qualities["expert"]["checkpoints"]
    assert {v["step"] for v in exp.values()} == {cfg.steps_per_task}
    for i in range(len(card.tasks)):
        assert med[str(i)]["eval_return"] == pytest.approx(evals[med[str(i)]["step"]][i])
    assert card.qualities["mixed"]["composition"] == {"medium": n_med, "expert": n_exp}
    # mixed = first medium episodes + first expert episodes of each task
    mixed, medium, expert = (np.asarray(ds.store(q).episode_returns()) for q in
                             ("mixed", "medium", "expert"))
    m_s, e_s, x_s = (ds.store(q) for q in ("medium", "expert", "mixed"))
    for t in range(len(card.tasks)):
        want = np.concatenate([medium[m_s.episodes_of_task(t)][:n_med],
                               expert[e_s.episodes_of_task(t)][:n_exp]])
        np.testing.assert_allclose(np.sort(mixed[x_s.episodes_of_task(t)]), np.sort(want))
    assert card.collection["budget"]["steps_per_task"] == cfg.steps_per_task
    # actions respect the bounds
    for q in QUALITIES:
        a = _arrays(ds, q)["actions"]
        assert np.all(np.abs(a) <= 0.1 + 1e-6)
    # the random quality is uniform over the action box: moments of U(-0.1, 0.1)
    a = _arrays(ds, "random")["actions"].astype(np.float64)
    assert abs(a.mean()) < 3 * 0.1 / np.sqrt(3 * a.size)
    assert a.std() == pytest.approx(0.2 / np.sqrt(12), rel=0.1)


def test_rerun_of_finished_dataset_is_a_noop(smoke_dataset):
    before = (smoke_dataset / "card.json").read_text()
    events = []
    collect(smoke(), smoke_dataset, seed=0, progress=events.append)
    assert (smoke_dataset / "card.json").read_text() == before
    assert events and events[-1]["phase"] == "done" and events[-1]["already"]
    with pytest.raises(FileExistsError, match=r"finished collection with a different config: "
                                              r"different steps_per_task \(240 here"):
        collect(smoke(steps_per_task=240), smoke_dataset, seed=0)
    collect(smoke(torch_threads=2), smoke_dataset, seed=0)  # a runtime field: still a no-op
    assert (smoke_dataset / "card.json").read_text() == before
    with pytest.raises(FileExistsError):
        collect(smoke(), smoke_dataset, seed=1)


# ---------------------------------------------------------------- resume


def _interrupt_at(phase: str, pred):
    def progress(ev):
        if ev.get("phase") == phase and pred(ev):
            raise Interrupt(f"simulated kill in {phase}")
    return progress


@pytest.mark.parametrize("where", ["train", "rollout"])
def test_resume_after_interruption_matches_uninterrupted(tmp_path, smoke_dataset, where):
    cfg = smoke()
    out = tmp_path / "resumed"
    if where == "train":  # after a resume point (every 100 steps), before the end
        stop = _interrupt_at("train", lambda ev: ev["step"] >= 140)
    else:
        stop = _interrupt_at("rollout", lambda ev: ev["quality"] == "medium")
    with pytest.raises(Interrupt):
        collect(cfg, out, seed=0, progress=stop)
    assert not (out / "card.json").exists()
    with pytest.raises(FileNotFoundError):
        Dataset.open(out)
    events = []
    collect(cfg, out, seed=0, progress=events.append)
    if where == "train":
        first = next(ev for ev in events if ev["phase"] == "train")
        assert first["step"] == 100  # resumed, not restarted
    else:
        assert not any(ev["phase"] == "train" and ev["step"] < cfg.steps_per_task
                       for ev in events)
    a, b = Dataset.open(smoke_dataset), Dataset.open(out)
    assert a.card.qualities == b.card.qualities
    assert a.card.random_returns == b.card.random_returns
    for q in QUALITIES:
        for name, arr in _arrays(a, q).items():
            np.testing.assert_array_equal(arr, _arrays(b, q)[name], err_msg=f"{q}/{name}")


def test_unfinished_collection_with_other_config_is_refused(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(Interrupt):
        collect(smoke(), out, seed=0,
                progress=_interrupt_at("train", lambda ev: ev["step"] >= 40))
    with pytest.raises(FileExistsError, match=r"unfinished collection with a different config: "
                                              r"different eval_episodes \(3 here, 2 in config"):
        collect(smoke(eval_episodes=3), out, seed=0)
    # how it runs may change (threads, keeping the replay memories): the same collection
    from metadt.collect.collector import collection_dir

    identity = collection_dir(out).stored()
    collection_dir(out).check({**identity, "config": {**identity["config"], "torch_threads": 2,
                                                      "keep_replay": True}})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        collect(smoke(), tmp_path / "other", seed=0)


# ---------------------------------------------------------------- medium choice


def test_choose_medium_picks_checkpoint_nearest_the_midpoint():
    evals = {10: np.array([-15.0, -9.0]), 20: np.array([-10.0, -6.0]),
             30: np.array([-6.0, -5.5]), 40: np.array([-4.0, -5.0])}
    rand = np.array([-16.0, -7.0])
    steps, mid = choose_medium(evals, rand, final_step=40)
    np.testing.assert_allclose(mid, [-10.0, -6.0])
    assert steps.tolist() == [20, 20]
    # the final checkpoint is never the medium one while others exist
    steps, _ = choose_medium({10: np.array([-9.0]), 20: np.array([-5.0])}, np.array([-1.0]), 20)
    assert steps.tolist() == [10]
    assert checkpoint_steps(smoke(steps_per_task=100, checkpoint_every=40)) == [40, 80, 100]


# ---------------------------------------------------------------- quality


def _optimal_point_robot_return(goal, horizon: int = 20) -> float:
    """Walk straight at full speed (each axis clipped to 0.1 per step), then stay."""
    g = np.asarray(goal, dtype=np.float64)
    s = np.zeros(2)
    total = 0.0
    for _ in range(horizon):
        s = s + np.clip(g - s, -0.1, 0.1)
        total -= float(np.linalg.norm(s - g))
    return total


def test_optimal_return_helper():
    assert _optimal_point_robot_return([0.0, 0.0]) == 0.0
    # 0.25 away on one axis: 0.15, 0.05, then 0 -> -0.2
    assert _optimal_point_robot_return([0.25, 0.0]) == pytest.approx(-0.2)


def test_qualities_ordered_on_point_robot(tmp_path):
    """random < medium < expert per task on a small dedicated point-robot budget (the SAC
    policies themselves: no rollout noise; the preset's noisy rollouts of the full budget
    are ordered on all 50 tasks, docs/collect.md)."""
    cfg = CollectConfig.for_family("point-robot", "cpu").replace(
        rollout_noise=0.0,
        num_tasks=3, num_train=2, steps_per_task=800, checkpoint_every=80, eval_episodes=5,
        random_episodes=10, episodes_per_task=10, rollout_parallel=10, resume_every=400,
        updates_per_step=0.5, device="cpu", sac=SACConfig(hidden_dim=64, batch_size=64,
                                                           alpha=0.003, lr=1e-3))
    ds = collect(cfg, tmp_path / "pr", seed=0)
    card = ds.card
    for t in range(3):
        r = card.random_return(t)
        med = card.returns("medium")[t]["mean"]
        exp = card.returns("expert")[t]["mean"]
        assert r < med < exp, (t, r, med, exp)
        assert exp > _optimal_point_robot_return(card.tasks[t]["goal"]) - 0.5 * abs(r)


# ---------------------------------------------------------------- every family


@pytest.mark.parametrize("family", ["point-robot", "cheetah-vel", "cheetah-dir", "ant-dir",
                                    "hopper-param", "walker-param", "reach"])
def test_smoke_preset_runs_for_every_family(tmp_path, family):
    try:
        from metadt.envs import family_class

        family_class(family)
    except ImportError as exc:  # pragma: no cover - optional simulator missing
        pytest.skip(f"{family}: {exc}")
    ds = collect(smoke(family), tmp_path / family, seed=0)
    assert set(ds.qualities) == set(QUALITIES)
    assert ds.store("expert").num_episodes > 0
    assert ds.card.obs_dim == ds.family.obs_dim
    # the MuJoCo families and Meta-World collect with one task-conditioned agent (cpu, smoke)
    mode = "per-task" if family == "point-robot" else "task-conditioned"
    assert ds.card.collection["sac_mode"] == mode
    assert CollectConfig.for_family(family, "cpu").sac_mode == mode
    assert CollectConfig.for_family(family, "paper").sac_mode == "per-task"


# ---------------------------------------------------------------- config + CLI


def test_config_presets_and_overrides():
    for preset in ("paper", "cpu", "smoke"):
        for fam in ("point-robot", "cheetah-vel", "reach"):
            CollectConfig.for_family(fam, preset).validate()
    paper = CollectConfig.for_family("point-robot", "paper")
    assert paper.steps_per_task == 2000 and paper.sac.batch_size == 256
    assert CollectConfig.for_family("cheetah-vel", "paper").steps_per_task == 500_000
    cfg = paper.with_overrides(["steps_per_task=10", "sac.lr=1e-3", "alpha=0.1",
                                "num_tasks=none"])
    assert (cfg.steps_per_task, cfg.sac.lr, cfg.sac.alpha, cfg.num_tasks) == (10, 1e-3, 0.1, None)
    assert CollectConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="no field"):
        paper.with_overrides(["nope=1"])
    with pytest.raises(ValueError):
        CollectConfig.for_family("nope", "cpu")
    with pytest.raises(ValueError):
        paper.replace(episodes_per_task=0).validate()


def test_cli_collect_and_info(tmp_path, capsys):
    from metadt.cli import main

    out = tmp_path / "cli"
    assert main(["collect", "--family", "point-robot", "--preset", "smoke", "--out", str(out),
                 "--quiet", "--set", "num_tasks=3", "--set", "num_train=2",
                 "--set", "device=cpu"]) == 0
    assert (out / "card.json").is_file()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("point-robot", "expert", "medium", "mixed", "random", "train 2", "test 1"):
        assert word in text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "point-robot"
    assert main(["collect", "--family", "point-robot", "--preset", "smoke", "--out",
                 str(tmp_path / "x"), "--print-config", "--set", "sac.lr=0.01"]) == 0
    assert json.loads(capsys.readouterr().out)["sac"]["lr"] == 0.01
    assert main(["info", str(tmp_path / "missing")]) == 1


def test_rollout_noise_is_added_per_task_block_reproducibly():
    """`rollout_noise`: Gaussian noise of std noise x half-range on top of the policy's
    action, the whole run's draws sliced per block of tasks (a rank reproduces them)."""
    from metadt.collect.collector import _noisy_fn

    low, high = np.array([-0.1, -0.1]), np.array([0.1, 0.1])
    act = lambda obs: np.full(obs.shape[:-1] + (2,), 0.05)  # noqa: E731
    full = _noisy_fn(act, 0.5, low, high, np.random.default_rng(3), 4, range(4))
    part = _noisy_fn(act, 0.5, low, high, np.random.default_rng(3), 4, range(1, 3))
    obs = np.zeros((4, 5000, 2), np.float32)
    a = full(obs)
    np.testing.assert_array_equal(part(obs[1:3]), a[1:3])
    assert abs((a - 0.05).std() - 0.5 * 0.1) < 0.002 and abs((a - 0.05).mean()) < 0.002
    with pytest.raises(ValueError, match="rollout_noise"):
        CollectConfig(rollout_noise=-1.0).validate()


def test_diversity_and_oracle_against_hand_computed_values():
    from metadt import TrajectoryStore
    from metadt.data.dataset import diversity
    from metadt.envs import make_family

    s = TrajectoryStore(2, 2)
    firsts = {0: [[0.1, 0.0], [-0.1, 0.0], [0.1, 0.0]], 1: [[0.0, 0.05], [0.0, 0.05]]}
    rets = {0: [-1.0, -2.0, -6.0], 1: [-3.0, -3.0]}
    for t in (0, 1):
        for a0, r in zip(firsts[t], rets[t]):
            acts = np.zeros((4, 2))
            acts[0] = a0
            s.add_episode(np.zeros((4, 2)), acts, np.full(4, r / 4), task=t)
    d = diversity(s)
    assert d[0]["return_std"] == pytest.approx(np.std([-1.0, -2.0, -6.0]))
    assert d[0]["first_action_std"] == pytest.approx((np.std([0.1, -0.1, 0.1]) + 0.0) / 2)
    assert d[1]["return_std"] == pytest.approx(0.0) and d[1]["first_action_std"] == pytest.approx(0.0)
    fam = make_family("point-robot", seed=0)
    for task in fam.tasks[:5]:
        assert fam.oracle_return(task) == pytest.approx(_optimal_point_robot_return(task["goal"]))
    with pytest.raises(NotImplementedError, match="point-robot"):
        make_family("cheetah-vel", seed=0).oracle_return({"family": "cheetah-vel", "velocity": 1.0})
