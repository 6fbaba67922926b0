"""The agents' replay memory: metadt's `TrajectoryStore` in its online mode.

All tasks step together, so one step of the ensemble adds one transition per
task (``add_step`` with the task id; an episode closes at the horizon). Each
agent then samples its own batch from its own task. One store per task
(``layout="per-task"``) or one shared store sampled with ``tasks=[i]``
(``layout="shared"``) give the same data; ``benches/bench_sac.py`` measures
both and the faster one is the default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metadt.runtime import to_torch
from metadt.seeding import replay_seed

LAYOUTS = ("per-task", "shared")
DEFAULT_LAYOUT = "per-task"


def _store_cls():
    from metadt import TrajectoryStore

    return TrajectoryStore


class Replay:
    """Replay memory of ``num_tasks`` agents (task ``i`` = agent ``i``)."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int,
                 capacity_per_task: int | None = None, layout: str = DEFAULT_LAYOUT,
                 stores: list[Any] | None = None) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown replay layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.n, self.obs_dim, self.act_dim = int(num_tasks), int(obs_dim), int(act_dim)
        self.layout = layout
        self.capacity_per_task = capacity_per_task
        if stores is not None:
            self.stores = stores
        else:
            cls = _store_cls()
            if layout == "per-task":
                self.stores = [cls(obs_dim, act_dim, capacity=capacity_per_task)
                               for _ in range(self.n)]
            else:
                cap = None if capacity_per_task is None else capacity_per_task * self.n
                self.stores = [cls(obs_dim, act_dim, capacity=cap)]

    # ---- writing
    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_obs: np.ndarray, terminals: np.ndarray, done: bool) -> None:
        """One transition per task (rows ``i`` of the ``[N, ...]`` arrays).

        ``done`` closes the episodes (the horizon); ``terminals`` (true
        terminations only, never time limits) stop bootstrapping.
        """
        obs = np.asarray(obs, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        next_obs = np.asarray(next_obs, dtype=np.float32)
        for i in range(self.n):
            store = self.stores[i] if self.layout == "per-task" else self.stores[0]
            task = 0 if self.layout == "per-task" else i
            store.add_step(obs[i], actions[i], float(rewards[i]), next_obs[i], bool(done),
                           task=task, terminal=bool(terminals[i]))

    @property
    def steps_per_task(self) -> int:
        return int(sum(s.num_steps for s in self.stores)) // self.n

    # ---- sampling
    def sample(self, batch: int, seed: int, update: int,
               device: torch.device, task_offset: int = 0) -> dict[str, torch.Tensor]:
        """Per-agent batches stacked as ``[N, batch, ...]`` float32 tensors (agent ``i``
        samples with the seed of task ``task_offset + i``: a block of a larger run's
        tasks draws what the whole run draws for them)."""
        parts = []
        for i in range(self.n):
            s = replay_seed(seed, update, int(task_offset) + i)
            if self.layout == "per-task":
                parts.append(self.stores[i].sample_transitions(batch, context_len=0, seed=s))
            else:
                parts.append(self.stores[0].sample_transitions(batch, context_len=0, tasks=[i], seed=s))
        out = {}
        for key in ("obs", "actions", "rewards", "next_obs", "terminals"):
            arr = np.stack([np.asarray(p[key], dtype=np.float32) for p in parts])
            out[key] = to_torch(arr, device)
        return out

    def sample_pooled(self, batch: int, seed: int, update: int,
                      device: torch.device) -> dict[str, torch.Tensor]:
        """One batch of ``batch`` transitions drawn uniformly over every task's memory (a
        task-conditioned agent's batch): the batch keys as ``[1, batch, ...]`` float32 and
        ``tasks [batch]`` int64. Needs the ``shared`` layout (one store, one draw)."""
        if self.layout != "shared":
            raise ValueError("sample_pooled needs the shared replay layout")
        got = self.stores[0].sample_transitions(batch, context_len=0, seed=replay_seed(seed, update, 0))
        out = {key: to_torch(np.asarray(got[key], dtype=np.float32)[None], device)
               for key in ("obs", "actions", "rewards", "next_obs", "terminals")}
        out["tasks"] = to_torch(got["tasks"], device, np.int64)
        return out

    # ---- persistence (resume)
    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for k, store in enumerate(self.stores):
            store.save(str(path / f"store_{k:04d}"))

    @classmethod
    def load(cls, path: str | os.PathLike, num_tasks: int, obs_dim: int, act_dim: int,
             capacity_per_task: int | None, layout: str) -> "Replay":
        path = Path(path)
        store_cls = _store_cls()
        count = num_tasks if layout == "per-task" else 1
        stores = []
        for k in range(count):
            s = store_cls.load(str(path / f"store_{k:04d}"), mmap=False)
            stores.append(s)
        return cls(num_tasks, obs_dim, act_dim, capacity_per_task, layout, stores=stores)
