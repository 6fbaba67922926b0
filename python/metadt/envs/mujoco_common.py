"""What every MuJoCo task env shares: task switching, the horizon, action checks.

`MujocoTaskMixin` goes before a gymnasium MuJoCo env class in the bases. It
gives the env a ``task`` attribute (assigning it calls `set_task`), a
``horizon`` with ``truncated=True`` at the last step (never ``terminated``),
a RuntimeError when stepping past the horizon, and `_action` which rejects a
wrong shape with ValueError and clips to the action bounds.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from metadt.envs.base import EpisodeClock, TaskProperty, check_action, require_family


class MujocoTaskMixin(TaskProperty):
    family_name: str = ""

    def _init_task(self, task: Mapping[str, Any], horizon: int, **ctor: Any) -> None:
        """Call at the end of __init__; `ctor` are the constructor's keyword
        arguments (besides task and horizon), for pickling by reconstruction."""
        self._ctor = dict(ctor)
        self.horizon = int(horizon)
        self._clock = EpisodeClock(self.horizon)
        self._act_low = np.asarray(self.action_space.low, dtype=np.float64)
        self._act_high = np.asarray(self.action_space.high, dtype=np.float64)
        self._act_dim = int(self.action_space.shape[0])
        self.set_task(task)

    def __getstate__(self) -> dict[str, Any]:
        # pickle/deepcopy rebuild the env for its current task (not its physics state)
        return {"task": self.task, "horizon": self.horizon, "ctor": self._ctor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["task"], horizon=state["horizon"], **state["ctor"])

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Switch to `task` now (no rebuild); call reset() to start an episode of it."""
        require_family(task, self.family_name)
        self._apply_task(task)
        self._task = dict(task)

    def _apply_task(self, task: Mapping[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._clock.reset()
        return super().reset(seed=seed, options=options)  # type: ignore[misc]

    def _action(self, action: Any) -> np.ndarray:
        return check_action(action, self._act_dim, self._act_low, self._act_high)
