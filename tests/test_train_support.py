"""Test helpers for the model/training tests (no tests here).

- ``make_point_dataset``: a small point-robot dataset of scripted policies of
  different quality, written through ``write_dataset``;
- ``interrupted_world_model_checkpoints``: the final checkpoints of an uninterrupted
  world-model run and of one stopped early and resumed.
"""
from __future__ import annotations

import numpy as np


def store_class():
    """The trajectory store class (the Rust one)."""
    from metadt import TrajectoryStore

    return TrajectoryStore


def point_episodes(goal, n, noise, rng, horizon=20, bound=0.1):
    """Scripted point-robot episodes: move toward the goal with Gaussian action noise."""
    out = []
    goal = np.asarray(goal, np.float64)
    for _ in range(n):
        s = np.zeros(2)
        obs, acts, rews, nxt = [], [], [], []
        for _t in range(horizon):
            a = np.clip(np.clip(goal - s, -bound, bound) + noise * rng.standard_normal(2), -bound, bound)
            s2 = s + a
            obs.append(s), acts.append(a), rews.append(-np.linalg.norm(s2 - goal)), nxt.append(s2)
            s = s2
        out.append(tuple(np.asarray(x, np.float32) for x in (obs, acts, rews, nxt)))
    return out


def make_point_dataset(path, goals, num_train, episodes=8, qualities=None, seed=0,
                       store_cls=None):
    """A point-robot dataset with the given goals (first `num_train` are train tasks)."""
    from metadt.data.dataset import DatasetCard, write_dataset

    store_cls = store_cls or store_class()
    qualities = qualities or {"expert": 0.01, "medium": 0.06}
    rng = np.random.default_rng(seed)
    stores = {}
    for q, noise in qualities.items():
        st = store_cls(2, 2)
        for t, g in enumerate(goals):
            for o, a, r, n in point_episodes(g, episodes, noise, rng):
                st.add_episode(o, a, r, n, task=t)
        stores[q] = st
    tasks = [{"family": "point-robot", "goal": [float(x), float(y)]} for x, y in goals]
    card = DatasetCard(family="point-robot", family_seed=seed, obs_dim=2, act_dim=2, horizon=20,
                       tasks=tasks, train_ids=list(range(num_train)),
                       test_ids=list(range(num_train, len(goals))))
    return write_dataset(path, card, stores)


def interrupted_world_model_checkpoints(data, cfg, stop: int, root):
    """``(uninterrupted, resumed)`` final checkpoints of ``cfg``: run A trains straight
    through; run B trains ``stop`` steps (the same seeds), is turned into an unfinished
    run of ``cfg`` and resumed."""
    import json

    from metadt import tensorfile
    from metadt.train.checkpoint import CHECKPOINT_FILE, CHECKPOINT_KIND
    from metadt.train.world_model import train_world_model

    train_world_model(data, cfg, root / "a", progress=False)
    train_world_model(data, cfg.replace(num_steps=stop), root / "b", progress=False)
    (root / "b" / "model.safetensors").unlink()
    (root / "b" / "config.json").write_text(json.dumps(cfg.to_dict()))
    train_world_model(data, cfg, root / "b", progress=False)
    return tuple(tensorfile.load(root / r / CHECKPOINT_FILE, CHECKPOINT_KIND) for r in "ab")
