"""ant-dir: the Ant running in a hidden planar direction.

Built on gymnasium's Ant-v5 model (timestep 0.01, frame skip 5, dt = 0.05,
reset noise 0.1) through `AntDirEnv`:

- observation (27) = qpos[2:] (13) + qvel (14): Ant-v5 with
  ``include_cfrc_ext_in_observation=False`` (no contact forces in the obs);
- reward ``v . (cos t, sin t) - 0.5 ||a||^2 - contact_cost + 1.0`` where
  ``v = (xy' - xy) / dt`` is the torso's planar velocity (from the free
  joint's qpos[0:2], i.e. the torso body position) and ``a`` the clipped
  action;
- the survive bonus is a constant 1.0 on every step (as in the original; v5
  pays it only while "healthy"), and episodes never terminate
  (``terminate_when_unhealthy=False``); ``truncated=True`` at step 200.

Contact cost (the protocol's open choice): metadt **computes** it, as
gymnasium does and as the original formula states:
``contact_cost_weight * sum(clip(cfrc_ext, -1, 1)^2)`` with weight 5e-4
(= 0.5 * 1e-3 in the original code). In the original runs it was effectively
zero because mujoco-py >= 2 left ``cfrc_ext`` at zero; set the family option
``contact_cost_weight=0`` to reproduce that. The cost is at most 0.042 per
step, reported in ``info["reward_contact"]``.

Other deviations: the velocity uses the torso position of the new state
(mujoco-py read body positions one physics substep stale).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from metadt.envs.base import Task, TaskFamily, require_number
from metadt.envs.mujoco_common import MujocoTaskMixin

NAME = "ant-dir"
HORIZON = 200
CTRL_COST = 0.5
CONTACT_COST = 5e-4
SURVIVE_REWARD = 1.0
TWO_PI = 2.0 * np.pi


def _angle(task: Mapping[str, Any]) -> float:
    return require_number(task, "angle", 0.0, TWO_PI)


class AntDirEnv(MujocoTaskMixin, AntEnv):
    """Ant with the Meta-DT direction reward (see module docstring)."""

    family_name = NAME

    def __init__(self, task: Mapping[str, Any], horizon: int = HORIZON,
                 ctrl_cost_weight: float = CTRL_COST, contact_cost_weight: float = CONTACT_COST,
                 survive_reward: float = SURVIVE_REWARD, **kwargs: Any) -> None:
        AntEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight,
                        contact_cost_weight=contact_cost_weight,
                        healthy_reward=survive_reward, terminate_when_unhealthy=False,
                        include_cfrc_ext_in_observation=False, **kwargs)
        assert self.observation_space.shape == (27,)
        self._survive_reward = float(survive_reward)
        self._init_task(task, horizon, ctrl_cost_weight=ctrl_cost_weight,
                        contact_cost_weight=contact_cost_weight,
                        survive_reward=survive_reward, **kwargs)

    def _apply_task(self, task: Mapping[str, Any]) -> None:
        theta = _angle(task)
        self._direction = np.array([np.cos(theta), np.sin(theta)])

    def step(self, action: Any):
        a = self._action(action)
        truncated = self._clock.tick()
        xy_before = self.data.qpos[0:2].copy()
        self.do_simulation(a, self.frame_skip)  # also runs mj_rnePostConstraint (cfrc_ext)
        xy_after = self.data.qpos[0:2].copy()
        velocity = (xy_after - xy_before) / self.dt
        forward = float(velocity @ self._direction)
        ctrl_cost = self._ctrl_cost_weight * float(np.sum(np.square(a)))
        contact_cost = float(self.contact_cost)
        reward = forward - ctrl_cost - contact_cost + self._survive_reward
        info = {"x_position": xy_after[0], "y_position": xy_after[1],
                "x_velocity": velocity[0], "y_velocity": velocity[1],
                "reward_forward": forward, "reward_ctrl": -ctrl_cost,
                "reward_contact": -contact_cost, "reward_survive": self._survive_reward}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, truncated, info


class AntDirFamily(TaskFamily):
    """ant-dir (protocol section 1): obs 27, act 8 in [-1, 1], horizon 200.

    Task ``{"family": "ant-dir", "angle": t}``, t ~ U[0, 2pi) drawn as
    ``rng.uniform(0, 2pi, size=n)``. Reward
    ``v . (cos t, sin t) - 0.5||a||^2 - contact_cost + 1.0``. Task features:
    ``[cos t, sin t]``.

    Contact cost: computed (gymnasium's formula, weight 5e-4, forces clipped
    to [-1, 1]); the original's was effectively 0 (mujoco-py bug). Option
    ``contact_cost_weight`` (saved in the card) sets it; 0 reproduces the
    original. Survive bonus 1.0 on every step; no termination.
    """

    name = NAME
    description = "Ant running in a hidden planar direction in [0, 2pi)"
    obs_dim = 27
    act_dim = 8
    horizon = HORIZON
    return_scale = 500.0
    option_defaults = {"contact_cost_weight": CONTACT_COST, "ctrl_cost_weight": CTRL_COST}

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        return [{"family": NAME, "angle": float(t)} for t in rng.uniform(0.0, TWO_PI, size=n)]

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        _angle(task)

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        t = float(task["angle"])
        return np.array([np.cos(t), np.sin(t)])

    def _make_env(self, task: Task, **kwargs: Any) -> AntDirEnv:
        return AntDirEnv(task, horizon=self.horizon,
                         ctrl_cost_weight=float(self.options["ctrl_cost_weight"]),
                         contact_cost_weight=float(self.options["contact_cost_weight"]), **kwargs)
