"""Vectorized stepping across tasks: one environment per task, stepped together.

The interface (shared by every backend and by point-robot's pure-NumPy
vector env):

- ``num_envs``, ``tasks``, ``horizon``, ``single_observation_space``,
  ``single_action_space``, ``observation_space``, ``action_space``;
- ``reset(seed=None, options=None) -> (obs [N, obs_dim] float64, infos)``;
  env ``i`` is seeded with ``seed + i`` (gymnasium's convention); without a
  seed, the first reset uses the seed given at construction (if any);
- ``step(actions [N, act_dim]) -> (obs, rewards [N], terminated [N] bool,
  truncated [N] bool, infos)``; infos is a dict of arrays of length N (for
  example ``success`` for Meta-World). Actions are clipped to the bounds; a
  wrong shape raises ValueError;
- **no autoreset**: all tasks of a family share one horizon, so all envs
  truncate together at the horizon; the caller then calls ``reset``
  (stepping past the horizon raises RuntimeError);
- ``set_tasks(tasks)`` switches every env to a new task (same count) without
  rebuilding; ``close()``.

Backends: ``"sync"`` (`SyncTaskVectorEnv`, a plain loop in this process) and
``"async"`` (`AsyncTaskVectorEnv`, gymnasium's `AsyncVectorEnv` with
autoreset disabled, one worker process per task). On the 2-core reference
machine the sync loop was faster for every family (see ``docs/envs.md`` and
``benches/bench_envs.py``), so it is the default.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.vector.vector_env import AutoresetMode

from metadt.envs.base import Task, check_actions
from metadt.seeding import env_seeds

BACKENDS = ("sync", "async")


def make_task_vector_env(family: Any, tasks: list[Task], seed: int | None = None,
                         backend: str = "sync") -> "TaskVectorEnv":
    if backend == "sync":
        return SyncTaskVectorEnv(family, tasks, seed=seed)
    if backend == "async":
        return AsyncTaskVectorEnv(family, tasks, seed=seed)
    raise ValueError(f"unknown vector backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _seeds(seed: int | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return env_seeds(seed, n)


def stack_infos(infos: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-env info dicts -> one dict of arrays (keys present in every env)."""
    if not infos:
        return {}
    keys = [k for k in infos[0] if all(k in i for i in infos[1:])]
    out: dict[str, np.ndarray] = {}
    for k in keys:
        try:
            out[k] = np.asarray([i[k] for i in infos])
        except ValueError:  # ragged values: keep them as objects
            arr = np.empty(len(infos), dtype=object)
            arr[:] = [i[k] for i in infos]
            out[k] = arr
    return out


class TaskVectorEnv(VectorEnv):
    """Common attributes of the task vector envs (no autoreset)."""

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def _init_common(self, family: Any, tasks: list[Task], seed: int | None) -> None:
        self.family = family
        self.num_envs = len(tasks)
        self._tasks = [dict(t) for t in tasks]
        self.horizon = int(family.horizon)
        self.act_dim = int(family.act_dim)
        self.obs_dim = int(family.obs_dim)
        self.action_low = np.asarray(family.action_low, dtype=np.float64)
        self.action_high = np.asarray(family.action_high, dtype=np.float64)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float64)
        self.single_action_space = spaces.Box(self.action_low, self.action_high, dtype=np.float64)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._pending_seed = seed
        _seeds(seed, 1)  # validate

    @property
    def tasks(self) -> list[Task]:
        return [dict(t) for t in self._tasks]

    def _check_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> list[Task]:
        tasks = list(tasks)
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks, got {len(tasks)}")
        for t in tasks:
            self.family.check_task(t)
        return [dict(t) for t in tasks]

    def _take_seed(self, seed: int | None) -> list[int | None]:
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return _seeds(seed, self.num_envs)

    def _actions(self, actions: Any) -> np.ndarray:
        return check_actions(actions, self.num_envs, self.act_dim, self.action_low, self.action_high)


class SyncTaskVectorEnv(TaskVectorEnv):
    """One env per task in this process, stepped in a loop."""

    def __init__(self, family: Any, tasks: list[Task], seed: int | None = None) -> None:
        self._init_common(family, tasks, seed)
        self.envs = [family.make_env(t) for t in self._tasks]
        self._obs = np.zeros((self.num_envs, self.obs_dim), dtype=np.float64)
        self._rew = np.zeros(self.num_envs, dtype=np.float64)
        self._term = np.zeros(self.num_envs, dtype=bool)
        self._trunc = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        infos = []
        for i, (env, s) in enumerate(zip(self.envs, self._take_seed(seed))):
            obs, info = env.reset(seed=s, options=options)
            self._obs[i] = obs
            infos.append(info)
        return self._obs.copy(), stack_infos(infos)

    def step(self, actions: Any):
        acts = self._actions(actions)
        infos = []
        for i, env in enumerate(self.envs):
            obs, rew, term, trunc, info = env.step(acts[i])
            self._obs[i] = obs
            self._rew[i] = rew
            self._term[i] = term
            self._trunc[i] = trunc
            infos.append(info)
        return (self._obs.copy(), self._rew.copy(), self._term.copy(), self._trunc.copy(),
                stack_infos(infos))

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        tasks = self._check_tasks(tasks)
        for env, t in zip(self.envs, tasks):
            env.set_task(t)
        self._tasks = tasks

    def close(self, **kwargs: Any) -> None:
        for env in getattr(self, "envs", []):
            env.close()
        self.envs = []


def _make_env(family: Any, task: Task):
    return family.make_env(task)


class AsyncTaskVectorEnv(TaskVectorEnv):
    """gymnasium's `AsyncVectorEnv` (one process per task), autoreset disabled."""

    def __init__(self, family: Any, tasks: list[Task], seed: int | None = None,
                 context: str | None = None) -> None:
        from gymnasium.vector import AsyncVectorEnv

        self._init_common(family, tasks, seed)
        fns = [functools.partial(_make_env, family, t) for t in self._tasks]
        self._vec = AsyncVectorEnv(fns, shared_memory=True, copy=True, context=context,
                                   autoreset_mode=AutoresetMode.DISABLED)

    @staticmethod
    def _clean(infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in infos.items() if not k.startswith("_")}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seeds = self._take_seed(seed)
        obs, infos = self._vec.reset(seed=seeds if seeds[0] is not None else None,
                                     options=options)
        return np.asarray(obs, dtype=np.float64), self._clean(infos)

    def step(self, actions: Any):
        obs, rew, term, trunc, infos = self._vec.step(self._actions(actions))
        return (np.asarray(obs, dtype=np.float64), np.asarray(rew, dtype=np.float64),
                np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool), self._clean(infos))

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        tasks = self._check_tasks(tasks)
        self._vec.set_attr("task", tasks)
        self._tasks = tasks

    def close(self, **kwargs: Any) -> None:
        vec = getattr(self, "_vec", None)
        if vec is not None:
            vec.close(**kwargs)
            self._vec = None
