"""HalfCheetah families: cheetah-vel (target velocity) and cheetah-dir (direction).

Both use gymnasium's HalfCheetah-v5 model (timestep 0.01, frame skip 5, so
dt = 0.05; reset noise 0.1) through `CheetahTaskEnv`, which changes:

- observation (20) = qpos[1:] (8) + qvel (9) + torso position (3) (the
  original rlkit/PEARL ``get_body_com("torso")``: the torso body frame's
  world position, ``data.xpos``), instead of v5's 17;
- reward: cheetah-vel ``-|v_x - v| - 0.05 ||a||^2``, cheetah-dir
  ``d * v_x - 0.05 ||a||^2``, with ``v_x = (x' - x) / dt`` from qpos[0] and
  ``a`` the clipped action (v5's control weight is 0.1);
- horizon 200, never terminated, ``truncated=True`` at step 200.

Deviation kept: the torso position in the observation is recomputed for the
post-step state (``mj_kinematics``); under mujoco-py it was read one physics
substep stale (the kinematics of the last ``mj_step`` call's start).
"""
from __future__ import annotations

from typing import Any, Mapping

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metadt.envs.base import Task, TaskFamily, require_number
from metadt.envs.mujoco_common import MujocoTaskMixin

CTRL_COST = 0.05
HORIZON = 200
MAX_VELOCITY = 3.0


class CheetahTaskEnv(MujocoTaskMixin, HalfCheetahEnv):
    """HalfCheetah with the Meta-DT observation and a task-dependent reward.

    `family_name` is "cheetah-vel" (task field ``velocity``) or "cheetah-dir"
    (task field ``direction`` in {+1, -1}).
    """

    def __init__(self, task: Mapping[str, Any], family_name: str, horizon: int = HORIZON,
                 ctrl_cost_weight: float = CTRL_COST, **kwargs: Any) -> None:
        if family_name not in ("cheetah-vel", "cheetah-dir"):
            raise ValueError(f"unknown cheetah family {family_name!r}")
        self.family_name = family_name
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self.observation_space = spaces.Box(-np.inf, np.inf, (20,), np.float64)
        self._torso = self.model.body("torso").id
        self._init_task(task, horizon, family_name=family_name,
                        ctrl_cost_weight=ctrl_cost_weight, **kwargs)

    def _apply_task(self, task: Mapping[str, Any]) -> None:
        if self.family_name == "cheetah-vel":
            self._target = require_number(task, "velocity")
        else:
            self._target = _direction(task)

    def _get_obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos[1:], d.qvel, d.xpos[self._torso]])

    def step(self, action: Any):
        a = self._action(action)
        truncated = self._clock.tick()
        x_before = float(self.data.qpos[0])
        self.do_simulation(a, self.frame_skip)
        mujoco.mj_kinematics(self.model, self.data)  # torso position of the new state
        x_after = float(self.data.qpos[0])
        v_x = (x_after - x_before) / self.dt
        ctrl_cost = self._ctrl_cost_weight * float(np.sum(np.square(a)))
        if self.family_name == "cheetah-vel":
            run = -abs(v_x - self._target)
        else:
            run = self._target * v_x
        info = {"x_position": x_after, "x_velocity": v_x, "reward_run": run,
                "reward_ctrl": -ctrl_cost}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), run - ctrl_cost, False, truncated, info


def _direction(task: Mapping[str, Any]) -> float:
    d = require_number(task, "direction")
    if d not in (1.0, -1.0):
        raise ValueError(f"cheetah-dir direction must be +1 or -1, got {d}")
    return d


class _CheetahFamily(TaskFamily):
    obs_dim = 20
    act_dim = 6
    horizon = HORIZON
    return_scale = 500.0
    option_defaults = {"ctrl_cost_weight": CTRL_COST}

    def _make_env(self, task: Task, **kwargs: Any) -> CheetahTaskEnv:
        return CheetahTaskEnv(task, self.name, horizon=self.horizon,
                              ctrl_cost_weight=float(self.options["ctrl_cost_weight"]), **kwargs)


class CheetahVelFamily(_CheetahFamily):
    """cheetah-vel (protocol section 1): HalfCheetah at a target velocity.

    obs 20 (qpos[1:] + qvel + torso position), act 6 in [-1, 1], horizon 200,
    dt 0.05. Task ``{"family": "cheetah-vel", "velocity": v}``, v ~ U(0, 3)
    drawn as ``rng.uniform(0, 3, size=n)``. Reward ``-|v_x - v| - 0.05||a||^2``.
    Task features: ``[v]``. Deviations: see the module docstring (torso
    position read after the step, not one substep stale).
    """

    name = "cheetah-vel"
    description = "HalfCheetah running at a hidden target velocity in [0, 3]"

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        return [{"family": self.name, "velocity": float(v)}
                for v in rng.uniform(0.0, MAX_VELOCITY, size=n)]

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        require_number(task, "velocity")

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        return np.array([float(task["velocity"])])


class CheetahDirFamily(_CheetahFamily):
    """cheetah-dir (protocol section 1): HalfCheetah running forward or backward.

    Two tasks, ``{"family": "cheetah-dir", "direction": +1}`` and ``-1``;
    training and testing use both (as Prompt-DT does): ``num_train`` defaults
    to 2, and when every task is a training task the test set is all tasks.
    Reward ``d * v_x - 0.05||a||^2``. Task features: ``[d]``. The seed does
    not change the tasks.
    """

    name = "cheetah-dir"
    description = "HalfCheetah running forward or backward (2 tasks)"
    default_num_tasks = 2
    default_num_train = 2

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        if n != 2:
            raise ValueError(f"cheetah-dir has exactly 2 tasks (+1, -1), not {n}")
        return [{"family": self.name, "direction": 1.0}, {"family": self.name, "direction": -1.0}]

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        _direction(task)

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        return np.array([float(task["direction"])])
