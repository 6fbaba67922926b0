"""Meta-World ML1 families: reach (protocol), sweep and door-lock (extras).

Tasks come from metaworld's ML1 benchmark (metaworld >= 3, ``reach-v3``,
``sweep-v3``, ``door-lock-v3``): ``metaworld.ML1(env_name, seed=seed)``
generates 50 training and 50 test goals; a family of ``n`` tasks with
``num_train`` training tasks takes ``num_train`` distinct ML1 *train* tasks
and ``n - num_train`` distinct ML1 *test* tasks, chosen with
``np.random.default_rng(seed).choice(50, size, replace=False)`` (train
first, then test). Default 20 = 15 + 5.

A task is JSON:

    {"family": "reach", "env_name": "reach-v3", "split": "train" | "test",
     "ml1_seed": 0, "ml1_index": 17, "rand_vec": [...], "goal": [x, y, z],
     "data": "<base64 of metaworld's pickled task data>"}

``data`` is metaworld's own ``Task.data`` (a pickle) as ML1 made it, kept in
the card for reference and for older metadt versions, but never unpickled: a
card is data a user may receive. The task is defined by its JSON fields; what
``env.set_task`` receives is re-encoded from ``rand_vec`` and ``env_name``
(metaworld's task data is exactly ``{"rand_vec", "env_cls",
"partially_observable": True}``).
``goal`` is the env's target position for the task (``_target_pos`` after a
reset), used as the task features.

Environment (`MetaWorldTaskEnv`): metaworld's env (``partially_observable``:
the goal is zeroed in the observation), obs 39, act 4 in [-1, 1], horizon 500,
Meta-World's own (v2) reward, ``info["success"]`` (0.0/1.0, float) on every
step. Never terminates (metaworld's auto-terminate-on-success wrapper is not
used); ``truncated=True`` at step 500, then ``reset()`` is required. Resets
are deterministic for a task (the goal and object positions are frozen by
``set_task``); ``reset(seed=s)`` seeds the env's generator.

Note: the ML1 goals are a function of the seed *and* of the metaworld
version; tasks are saved with every dataset, so rebuild from the card.
"""
from __future__ import annotations

import base64
import pickle
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metadt.envs.base import EpisodeClock, Task, TaskFamily, TaskProperty, check_action, require_family

HORIZON = 500
N_GOALS = 50


MAX_RAND_VEC = 64


def rand_vec_of(task: Mapping[str, Any]) -> np.ndarray:
    """The task's ``rand_vec`` (1-D, finite, at most 64 numbers) or a clear ValueError."""
    try:
        vec = np.asarray(task["rand_vec"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise ValueError("Meta-World task: rand_vec must be a list of numbers") from None
    if vec.ndim != 1 or not 0 < vec.size <= MAX_RAND_VEC or not np.all(np.isfinite(vec)):
        raise ValueError(f"Meta-World task: rand_vec must be 1 to {MAX_RAND_VEC} finite numbers")
    return vec


def encode_task_data(env_name: str, rand_vec: np.ndarray) -> bytes:
    """metaworld's ``Task.data`` for ``rand_vec``, made here (the goal hidden)."""
    return pickle.dumps({"rand_vec": np.asarray(rand_vec, dtype=np.float64),
                         "env_cls": _env_class(env_name), "partially_observable": True})


def _env_class(env_name: str):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    if env_name not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"{env_name!r} is not a Meta-World v3 environment")
    return ALL_V3_ENVIRONMENTS[env_name]


class MetaWorldTaskEnv(TaskProperty, gym.Env):
    """A Meta-World ML1 env with the metadt task interface (see module docstring)."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"]}

    def __init__(self, task: Mapping[str, Any], family_name: str, env_name: str,
                 horizon: int = HORIZON, **kwargs: Any) -> None:
        self.family_name = family_name
        self.env_name = env_name
        self.horizon = int(horizon)
        self._env = _env_class(env_name)(**kwargs)
        self._env.max_path_length = max(self._env.max_path_length, self.horizon)
        self.render_mode = self._env.render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, (39,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float64)
        self._low, self._high = self.action_space.low, self.action_space.high
        self._clock = EpisodeClock(self.horizon)
        self._ctor = dict(kwargs)
        self.set_task(task)

    def __getstate__(self) -> dict[str, Any]:
        # pickle/deepcopy rebuild the env for its current task (not its physics state)
        return {"task": self.task, "family_name": self.family_name, "env_name": self.env_name,
                "horizon": self.horizon, "ctor": self._ctor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        MetaWorldTaskEnv.__init__(self, state["task"], state["family_name"], state["env_name"],
                                  horizon=state["horizon"], **state["ctor"])

    @property
    def unwrapped_metaworld(self):
        """The underlying metaworld env."""
        return self._env

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Switch to `task` (no rebuild); call reset() before the next step."""
        from metaworld.types import Task as MWTask

        require_family(task, self.family_name)
        if task.get("env_name") != self.env_name:
            raise ValueError(f"task is for {task.get('env_name')!r}, this env runs {self.env_name!r}")
        data = encode_task_data(self.env_name, rand_vec_of(task))  # never the card's bytes
        self._env.set_task(MWTask(env_name=self.env_name, data=data))
        self._task = dict(task)
        self._clock.started = False  # the next episode must start with reset()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
        self._clock.reset()
        obs, info = self._env.reset()
        return np.asarray(obs, dtype=np.float64), dict(info)

    def step(self, action: Any):
        a = check_action(action, 4, self._low, self._high)
        truncated = self._clock.tick()
        obs, reward, _, _, info = self._env.step(a.astype(np.float32))
        info = dict(info)
        info["success"] = float(info.get("success", 0.0))
        return np.asarray(obs, dtype=np.float64), float(reward), False, truncated, info

    def render(self):
        return self._env.render()

    def close(self) -> None:
        self._env.close()


class _ML1Family(TaskFamily):
    env_name: str
    obs_dim = 39
    act_dim = 4
    horizon = HORIZON
    return_scale = 500.0
    default_num_tasks = 20
    default_num_train = 15
    vector_backend = "sync"

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        import metaworld

        num_test = n - num_train
        if num_train > N_GOALS or num_test > N_GOALS:
            raise ValueError(f"{self.name}: ML1 has {N_GOALS} train and {N_GOALS} test goals; "
                             f"asked for {num_train} train and {num_test} test tasks")
        if self.seed >= 2**32 - 1:
            raise ValueError("Meta-World seeds must be below 2**32 - 1")
        ml1 = metaworld.ML1(self.env_name, seed=self.seed)
        train_idx = rng.choice(N_GOALS, size=num_train, replace=False)
        test_idx = rng.choice(N_GOALS, size=num_test, replace=False)
        picked = [("train", int(i), ml1.train_tasks[int(i)]) for i in train_idx]
        picked += [("test", int(i), ml1.test_tasks[int(i)]) for i in test_idx]
        env = _env_class(self.env_name)()
        tasks = []
        try:
            for split, idx, mw_task in picked:
                data = pickle.loads(mw_task.data)  # our own ML1 output: trusted
                env.set_task(mw_task)
                env.reset()
                tasks.append({
                    "family": self.name, "env_name": self.env_name, "split": split,
                    "ml1_seed": self.seed, "ml1_index": idx,
                    "rand_vec": np.asarray(data["rand_vec"], dtype=np.float64).tolist(),
                    "goal": np.asarray(env._target_pos, dtype=np.float64).tolist(),
                    "data": base64.b64encode(mw_task.data).decode("ascii"),
                })
        finally:
            env.close()
        return tasks

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        if task["env_name"] != self.env_name:
            raise ValueError(f"{self.name}: task is for {task['env_name']!r}, not {self.env_name!r}")
        goal = np.asarray(task["goal"], dtype=np.float64)
        if goal.shape != (3,) or not np.all(np.isfinite(goal)):
            raise ValueError(f"{self.name}: goal must be 3 finite numbers")
        if not isinstance(task.get("data", ""), str):
            raise ValueError(f"{self.name}: data must be a base64 string (it is not read)")
        try:
            rand_vec_of(task)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        return np.asarray(task["goal"], dtype=np.float64)

    def _make_env(self, task: Task, **kwargs: Any) -> MetaWorldTaskEnv:
        return MetaWorldTaskEnv(task, self.name, self.env_name, horizon=self.horizon, **kwargs)


class ReachFamily(_ML1Family):
    """reach (protocol section 1): Meta-World ML1 ``reach-v3``, obs 39, act 4, horizon 500.

    Goal hidden from the observation; Meta-World's reward; ``info["success"]``.
    20 tasks = 15 from ML1's train goals + 5 from its test goals. Task
    features: the goal position (3,). See the module docstring.
    """

    name = "reach"
    description = "Meta-World ML1 reach-v3: reach a hidden goal position"
    env_name = "reach-v3"


class SweepFamily(_ML1Family):
    """sweep (extra): Meta-World ML1 ``sweep-v3``; as reach. The task moves the
    puck's start; the goal (features) is the table edge point in front of it."""

    name = "sweep"
    description = "Meta-World ML1 sweep-v3: sweep a puck off the table (extra)"
    env_name = "sweep-v3"


class DoorLockFamily(_ML1Family):
    """door-lock (extra): Meta-World ML1 ``door-lock-v3``; as reach. The task
    moves the door; the goal (features) is the lock's target position."""

    name = "door-lock"
    description = "Meta-World ML1 door-lock-v3: turn a door's lock (extra)"
    env_name = "door-lock-v3"
