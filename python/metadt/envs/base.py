"""The task-family abstraction shared by every family, and the family registry.

A *task family* is a set of tasks that share dynamics or rewards up to a task
parameter (protocol section 1). A family owns:

- its tasks, sampled from a seed with `np.random.default_rng(seed)` and a fixed
  draw order (so the same seed gives the same tasks on any machine), as plain
  JSON-serializable dicts that always carry ``"family": <name>``;
- the train/test split, by index: the first ``num_train`` tasks are training
  tasks, the rest are test tasks. When ``num_train == num_tasks`` (cheetah-dir's
  default) training and testing use the same tasks;
- how to build an environment for a task (`make_env`) and a vectorized
  environment stepping one env per task (`make_vector_env`).

Families are looked up by name with `make_family`, and rebuilt from the tasks
saved with a dataset with `family_from_tasks` / `family_from_card`.
"""
from __future__ import annotations

import importlib
import json
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

Task = dict[str, Any]

# name -> (module, class name, one-line description). Modules are imported
# lazily so that `import metadt.envs` stays cheap (metaworld is slow to import).
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "point-robot": ("metadt.envs.point_robot", "PointRobotFamily",
                    "2-D point moving toward a hidden goal in [-1,1]^2 (pure NumPy)"),
    "cheetah-vel": ("metadt.envs.cheetah", "CheetahVelFamily",
                    "HalfCheetah running at a hidden target velocity in [0, 3]"),
    "cheetah-dir": ("metadt.envs.cheetah", "CheetahDirFamily",
                    "HalfCheetah running forward or backward (2 tasks)"),
    "ant-dir": ("metadt.envs.ant_dir", "AntDirFamily",
                "Ant running in a hidden planar direction in [0, 2pi)"),
    "hopper-param": ("metadt.envs.param", "HopperParamFamily",
                     "Hopper with randomized masses, inertias, damping and friction"),
    "walker-param": ("metadt.envs.param", "WalkerParamFamily",
                     "Walker2d with randomized masses, inertias, damping and friction"),
    "reach": ("metadt.envs.metaworld_ml1", "ReachFamily",
              "Meta-World ML1 reach-v3: reach a hidden goal position"),
    "sweep": ("metadt.envs.metaworld_ml1", "SweepFamily",
              "Meta-World ML1 sweep-v3: sweep a puck off the table (extra)"),
    "door-lock": ("metadt.envs.metaworld_ml1", "DoorLockFamily",
                  "Meta-World ML1 door-lock-v3: turn a door's lock (extra)"),
}

#: Family names mapped to a one-line description, in protocol order.
FAMILIES: dict[str, str] = {name: desc for name, (_, _, desc) in _REGISTRY.items()}


def family_class(name: str) -> type["TaskFamily"]:
    """The `TaskFamily` subclass registered under `name` (imported lazily)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown task family {name!r}{hint}; choose one of {', '.join(_REGISTRY)}")
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def make_family(name: str, seed: int = 0, num_tasks: int | None = None,
                num_train: int | None = None, **options: Any) -> "TaskFamily":
    """Build the task family `name` with tasks sampled from `seed`.

    `num_tasks` / `num_train` default to the protocol's split for the family
    (50 = 45 + 5 for point-robot and MuJoCo, 2 shared for cheetah-dir,
    20 = 15 + 5 for Meta-World). `options` are family-specific settings (for
    example ``contact_cost_weight`` for ant-dir); they are saved in the card.
    """
    return family_class(name)(seed=seed, num_tasks=num_tasks, num_train=num_train, **options)


def family_from_tasks(name: str, tasks: Sequence[Mapping[str, Any]], num_train: int,
                      seed: int | None = None, **options: Any) -> "TaskFamily":
    """Rebuild a family from saved tasks (e.g. from a dataset card).

    Every task is validated with `check_task`; the split is by index as usual.
    """
    return family_class(name)(seed=seed, num_train=num_train, tasks=tasks, **options)


def family_from_card(card: Mapping[str, Any] | str) -> "TaskFamily":
    """Rebuild a family from the dict (or JSON string) made by `TaskFamily.to_json`."""
    if isinstance(card, str):
        card = json.loads(card)
    missing = [k for k in ("name", "tasks", "num_train") if k not in card]
    if missing:
        raise ValueError(f"task-family card lacks {', '.join(missing)}")
    return family_from_tasks(card["name"], card["tasks"], card["num_train"],
                             seed=card.get("seed"), **dict(card.get("options") or {}))


def _check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


class TaskFamily(ABC):
    """A family of tasks; see the module docstring.

    Subclasses set the class attributes below and implement `_sample_tasks`,
    `_validate_task`, `task_features` and `_make_env`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    obs_dim: ClassVar[int]
    act_dim: ClassVar[int]
    horizon: ClassVar[int]
    return_scale: ClassVar[float]
    default_num_tasks: ClassVar[int] = 50
    default_num_train: ClassVar[int] = 45
    action_bound: ClassVar[float] = 1.0
    #: Names accepted in ``**options`` with their defaults (every family also
    #: accepts ``horizon``, overriding the protocol's episode length).
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int | None = 0, num_tasks: int | None = None,
                 num_train: int | None = None, tasks: Sequence[Mapping[str, Any]] | None = None,
                 **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults) - {"horizon"})
        if unknown:
            valid = ", ".join(["horizon", *self.option_defaults])
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
        horizon = options.pop("horizon", None)
        self.options: dict[str, Any] = {**self.option_defaults, **options}
        if horizon is not None:
            # episode length override (e.g. for smoke tests); recorded in the card
            self.horizon = _check_count(horizon, "horizon")  # type: ignore[misc]
            if self.horizon < 1:
                raise ValueError("horizon must be at least 1")
            self.options["horizon"] = self.horizon
        self.seed = None if seed is None else _check_count(seed, "seed")
        if tasks is None:
            if self.seed is None:
                raise ValueError("a seed is required to sample tasks")
            n = self.default_num_tasks if num_tasks is None else _check_count(num_tasks, "num_tasks")
            if n < 1:
                raise ValueError("num_tasks must be at least 1")
        else:
            given = [dict(t) if isinstance(t, Mapping) else t for t in tasks]
            if not given:
                raise ValueError("tasks must not be empty")
            n = len(given)
            if num_tasks is not None and _check_count(num_tasks, "num_tasks") != n:
                raise ValueError(f"num_tasks={num_tasks} but {n} tasks were given")
        if num_train is None:
            num_train = self._default_num_train(n)
        num_train = _check_count(num_train, "num_train")
        if not 1 <= num_train <= n:
            raise ValueError(f"num_train must be in [1, {n}], got {num_train}")
        if tasks is None:
            rng = np.random.default_rng(self.seed)
            given = self._sample_tasks(rng, n, num_train)
        for t in given:
            self.check_task(t)
        self.tasks: list[Task] = [dict(t) for t in given]
        self.num_train = num_train
        self.train_ids: list[int] = list(range(num_train))
        # all-train means train and test on the same tasks (cheetah-dir)
        self.test_ids: list[int] = list(range(num_train, n)) if num_train < n else list(range(n))
        self.action_low = np.full(self.act_dim, -self.action_bound, dtype=np.float64)
        self.action_high = np.full(self.act_dim, self.action_bound, dtype=np.float64)

    # ----------------------------------------------------------------- tasks
    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def train_tasks(self) -> list[Task]:
        return [self.tasks[i] for i in self.train_ids]

    @property
    def test_tasks(self) -> list[Task]:
        return [self.tasks[i] for i in self.test_ids]

    @classmethod
    def _default_num_train(cls, n: int) -> int:
        """The protocol's split, keeping its train fraction for other task counts."""
        if cls.default_num_train >= cls.default_num_tasks:
            return n  # train and test on the same tasks (cheetah-dir)
        if n == cls.default_num_tasks:
            return cls.default_num_train
        if n == 1:
            return 1
        frac = cls.default_num_train / cls.default_num_tasks
        return min(n - 1, max(1, int(math.floor(n * frac))))

    @abstractmethod
    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        """Draw `n` tasks from `rng` in a fixed order (the first `num_train` train)."""

    @abstractmethod
    def _validate_task(self, task: Mapping[str, Any]) -> None:
        """Raise ValueError if the family-specific fields of `task` are bad."""

    def check_task(self, task: Any) -> None:
        """Raise ValueError unless `task` is a valid task of this family."""
        if not isinstance(task, Mapping):
            raise ValueError(f"{self.name}: a task is a dict, got {type(task).__name__}")
        fam = task.get("family")
        if fam != self.name:
            raise ValueError(f"task belongs to family {fam!r}, not {self.name!r}: {_short(task)}")
        try:
            self._validate_task(task)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{self.name}: malformed task {_short(task)}: {exc}") from None

    @abstractmethod
    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        """The numeric task parameter (1-D float64), e.g. for linear probes."""

    def task_feature_matrix(self, tasks: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        tasks = self.tasks if tasks is None else tasks
        return np.stack([self.task_features(t) for t in tasks])

    # ------------------------------------------------------------------ envs
    def oracle_return(self, task: Mapping[str, Any]) -> float:
        """The optimal return of a task, where it is known analytically (point-robot);
        extra evaluation goals (`EvaluateConfig.eval_tasks`) need it."""
        raise NotImplementedError(f"{self.name} has no analytic optimal return: extra "
                                  f"evaluation tasks (eval_tasks) are available for point-robot")

    def make_env(self, task: Mapping[str, Any], **kwargs: Any):
        """A `gymnasium.Env` for `task`, with `set_task`, `task` and `horizon`."""
        self.check_task(task)
        return self._make_env(dict(task), **kwargs)

    @abstractmethod
    def _make_env(self, task: Task, **kwargs: Any):
        ...

    #: Default backend of `make_vector_env` ("sync" or "async"), chosen by
    #: measurement on a 2-core machine (see benches/bench_envs.py).
    vector_backend: ClassVar[str] = "sync"

    def make_vector_env(self, tasks: Sequence[Mapping[str, Any]] | None = None,
                        seed: int | None = None, backend: str | None = None):
        """One env per task, stepped together (no autoreset). See `metadt.envs.vector`."""
        from metadt.envs.vector import make_task_vector_env

        tasks = self.tasks if tasks is None else list(tasks)
        if not tasks:
            raise ValueError("make_vector_env needs at least one task")
        for t in tasks:
            self.check_task(t)
        return make_task_vector_env(self, [dict(t) for t in tasks], seed=seed,
                                    backend=backend or self.vector_backend)

    # ------------------------------------------------------------- the card
    def to_json(self) -> dict[str, Any]:
        """The card dict saved with a dataset: enough to rebuild the family."""
        return {
            "name": self.name,
            "seed": self.seed,
            "num_tasks": self.num_tasks,
            "num_train": self.num_train,
            "train_ids": list(self.train_ids),
            "test_ids": list(self.test_ids),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "horizon": self.horizon,
            "return_scale": self.return_scale,
            "options": dict(self.options),
            "tasks": [dict(t) for t in self.tasks],
        }

    card = to_json

    @classmethod
    def from_json(cls, card: Mapping[str, Any] | str) -> "TaskFamily":
        fam = family_from_card(card)
        if not isinstance(fam, cls):
            raise ValueError(f"card is for family {fam.name!r}, not {cls.name!r}")
        return fam

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, seed={self.seed}, "
                f"num_tasks={self.num_tasks}, num_train={self.num_train}, obs_dim={self.obs_dim}, "
                f"act_dim={self.act_dim}, horizon={self.horizon})")


def _short(task: Any, limit: int = 120) -> str:
    text = repr(task)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_action(action: Any, act_dim: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Validate an action (shape, finite) and clip it to the bounds (a float64 copy)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (act_dim,):
        raise ValueError(f"action must have shape ({act_dim},), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action contains NaN or infinity: {a}")
    return np.clip(a, low, high)


def check_actions(actions: Any, num_envs: int, act_dim: int, low: np.ndarray,
                  high: np.ndarray) -> np.ndarray:
    """Batched `check_action` for [num_envs, act_dim] arrays."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape != (num_envs, act_dim):
        raise ValueError(f"actions must have shape ({num_envs}, {act_dim}), got {a.shape}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1)).tolist()
        raise ValueError(f"actions of env(s) {bad} contain NaN or infinity")
    return np.clip(a, low, high)


def require_number(task: Mapping[str, Any], key: str, lo: float | None = None,
                   hi: float | None = None) -> float:
    value = task[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"task field {key!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"task field {key!r}={value} is outside [{lo}, {hi}]")
    return value


class EpisodeClock:
    """Counts steps of an episode: truncation at the horizon, no step past it."""

    def __init__(self, horizon: int) -> None:
        self.horizon = int(horizon)
        self.t = 0
        self.started = False

    def reset(self) -> None:
        self.t = 0
        self.started = True

    def tick(self) -> bool:
        if not self.started:
            raise RuntimeError("call reset() before step()")
        if self.t >= self.horizon:
            raise RuntimeError(
                f"the episode ended at the horizon ({self.horizon} steps); call reset()")
        self.t += 1
        return self.t >= self.horizon


def require_family(task: Any, family_name: str) -> None:
    """ValueError unless `task` is a task dict of family `family_name`."""
    if not isinstance(task, Mapping) or task.get("family") != family_name:
        fam = task.get("family") if isinstance(task, Mapping) else type(task).__name__
        raise ValueError(f"task belongs to family {fam!r}, not {family_name!r}")


class TaskProperty:
    """Mixin for task envs: a `task` property (a copy of the current task dict)
    whose setter goes through the env's `set_task`, the one way to switch."""

    _task: dict[str, Any]

    @property
    def task(self) -> Task:
        return dict(self._task)

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        self.set_task(task)  # type: ignore[attr-defined]
