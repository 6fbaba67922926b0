"""Point-Robot: a 2-D point that must reach a hidden goal (pure NumPy).

Protocol section 1 (and the original PEARL / Meta-DT ``PointEnv``):

- observation: the position ``s`` (2,), starting at (0, 0) every episode;
- action: a displacement (2,), clipped to [-0.1, 0.1];
- dynamics: ``s' = s + a``; reward ``-||s' - g||_2``; horizon 20, no early
  termination (``truncated=True`` at step 20);
- task: goal ``g ~ U([-1, 1]^2)``, drawn as ``rng.uniform(-1, 1, size=(n, 2))``
  with ``rng = np.random.default_rng(seed)``.

Observations are float64. The start state is deterministic, so ``reset(seed)``
only seeds ``np_random`` (kept for API compatibility). `PointRobotVectorEnv`
steps all tasks at once with NumPy array operations.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metadt.envs.base import (EpisodeClock, Task, TaskFamily, TaskProperty, check_action, require_family,
                              require_number)
from metadt.envs.vector import TaskVectorEnv

NAME = "point-robot"
ACTION_BOUND = 0.1
HORIZON = 20


def _goal(task: Mapping[str, Any]) -> np.ndarray:
    g = task["goal"]
    if not isinstance(g, (list, tuple, np.ndarray)) or len(g) != 2:
        raise ValueError(f"point-robot goal must be a pair of numbers, got {g!r}")
    return np.array([require_number({"x": g[0]}, "x"), require_number({"y": g[1]}, "y")])


class PointRobotEnv(TaskProperty, gym.Env):
    """A single point-robot task as a `gymnasium.Env` (see module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, task: Mapping[str, Any], horizon: int = HORIZON,
                 action_bound: float = ACTION_BOUND) -> None:
        self.horizon = int(horizon)
        self.action_space = spaces.Box(-action_bound, action_bound, (2,), np.float64)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self._low = self.action_space.low
        self._high = self.action_space.high
        self._clock = EpisodeClock(self.horizon)
        self._state = np.zeros(2)
        self.set_task(task)

    def set_task(self, task: Mapping[str, Any]) -> None:
        require_family(task, NAME)
        self._goal = _goal(task)
        self._task = dict(task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = np.zeros(2)
        self._clock.reset()
        return self._state.copy(), {}

    def step(self, action: Any):
        a = check_action(action, 2, self._low, self._high)
        truncated = self._clock.tick()
        self._state = self._state + a
        dist = float(np.linalg.norm(self._state - self._goal))
        return self._state.copy(), -dist, False, truncated, {"distance": dist}


class PointRobotVectorEnv(TaskVectorEnv):
    """All point-robot tasks at once, as NumPy arrays (no per-env loop)."""

    def __init__(self, family: "PointRobotFamily", tasks: list[Task],
                 seed: int | None = None) -> None:
        self._init_common(family, tasks, seed)
        self._goals = np.stack([_goal(t) for t in self._tasks])
        self._state = np.zeros((self.num_envs, 2))
        self._t = 0
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._take_seed(seed)  # deterministic start state; seeds only validated
        self._state = np.zeros((self.num_envs, 2))
        self._t = 0
        self._started = True
        return self._state.copy(), {}

    def step(self, actions: Any):
        acts = self._actions(actions)
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.horizon:
            raise RuntimeError(f"the episode ended at the horizon ({self.horizon} steps); call reset()")
        self._t += 1
        self._state = self._state + acts
        dist = np.linalg.norm(self._state - self._goals, axis=1)
        trunc = np.full(self.num_envs, self._t >= self.horizon)
        return (self._state.copy(), -dist, np.zeros(self.num_envs, dtype=bool), trunc,
                {"distance": dist})

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        self._tasks = self._check_tasks(tasks)
        self._goals = np.stack([_goal(t) for t in self._tasks])

    def close(self, **kwargs: Any) -> None:
        pass


class PointRobotFamily(TaskFamily):
    """Point-Robot (protocol section 1): obs 2, act 2 in [-0.1, 0.1], horizon 20.

    Task ``{"family": "point-robot", "goal": [gx, gy]}``, goal ~ U([-1,1]^2).
    Task features: the goal (2,). Deviations from the original: none.
    """

    name = NAME
    description = "2-D point moving toward a hidden goal in [-1,1]^2 (pure NumPy)"
    obs_dim = 2
    act_dim = 2
    horizon = HORIZON
    return_scale = 10.0
    action_bound = ACTION_BOUND
    default_num_tasks = 50
    default_num_train = 45

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        goals = rng.uniform(-1.0, 1.0, size=(n, 2))
        return [{"family": NAME, "goal": [float(x), float(y)]} for x, y in goals]

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        _goal(task)

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        return _goal(task)

    def oracle_return(self, task: Mapping[str, Any]) -> float:
        """The optimal return: every step moves to the point of the reachable box nearest
        the goal (each axis clipped to the action bound), which is optimal at every step
        at once since the k-step reachable set is the box of half-width k x bound."""
        self.check_task(task)
        g = _goal(task)
        s = np.zeros(2)
        total = 0.0
        for _ in range(self.horizon):
            s = s + np.clip(g - s, -self.action_bound, self.action_bound)
            total -= float(np.linalg.norm(s - g))
        return total

    def _make_env(self, task: Task, **kwargs: Any) -> PointRobotEnv:
        return PointRobotEnv(task, horizon=self.horizon, action_bound=self.action_bound, **kwargs)

    def make_vector_env(self, tasks: Sequence[Mapping[str, Any]] | None = None,
                        seed: int | None = None, backend: str | None = None):
        """All tasks stepped at once with NumPy (`backend` "numpy", the default),
        or the generic "sync"/"async" per-env backends (for testing)."""
        if backend in (None, "numpy"):
            tasks = self.tasks if tasks is None else list(tasks)
            if not tasks:
                raise ValueError("make_vector_env needs at least one task")
            for t in tasks:
                self.check_task(t)
            return PointRobotVectorEnv(self, [dict(t) for t in tasks], seed=seed)
        return super().make_vector_env(tasks, seed=seed, backend=backend)
