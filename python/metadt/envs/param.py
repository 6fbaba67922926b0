"""hopper-param and walker-param: physics-parameter randomization.

As in the original ``rand_param_envs`` (PEARL / Meta-DT), each task multiplies
the model's default physics parameters element-wise:

- every body mass ``x 1.5^u``, every body inertia element ``x 1.5^u``,
- every dof damping ``x 1.3^u``, every geom friction element ``x 1.5^u``,

with ``u ~ U(-3, 3)`` drawn independently per element. Draw order per task
(fixed): body_mass (nbody), body_inertia (nbody x 3), dof_damping (nv),
geom_friction (ngeom x 3), each with ``rng.uniform(-3, 3, size=shape)`` from
``np.random.default_rng(seed)``. A task stores the multipliers (not the
exponents), e.g. ``{"family": "hopper-param", "body_mass": [...],
"body_inertia": [[...]], "dof_damping": [...], "geom_friction": [[...]]}``.
`set_task` writes ``default * multiplier`` into the MuJoCo model from a copy
of the defaults taken at construction, so switching task restores every
value exactly. Like the original, only the raw model fields change
(``mj_setConst`` is not called).

Models: gymnasium's Hopper-v5 (``hopper.xml``) and Walker2d-v5
(``walker2d_v5.xml``), frame skip 4, with the MuJoCo timestep set to 0.004
(v5 uses 0.002) so dt = 0.016 as in the original. Observations keep the v5
layout: qpos[1:] + clip(qvel, -10, 10) (hopper 11, walker 17). Reward
``(x' - x)/dt + 1.0 - 1e-3 ||a||^2`` (the alive bonus is paid on every
step; v5 pays it only while healthy); never terminates, ``truncated=True``
at step 200. Reset noise 5e-3 (uniform on qpos and qvel), as in both.

Deviations kept: Walker2d-v5's model gives both feet friction 1.9 (the old
gym model had 0.9 on the right foot, 1.9 on the left); the defaults being
multiplied are those of the v5 models.

Task features: the log-multipliers of the elements that have an effect
(default value non-zero: the world body's mass/inertia and the root joints'
zero damping are left out), concatenated in draw order.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import gymnasium
import mujoco
import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from metadt.envs.base import Task, TaskFamily
from metadt.envs.mujoco_common import MujocoTaskMixin

#: Randomized model fields, in draw order, with the base of their multiplier.
PARAMS: tuple[tuple[str, float], ...] = (
    ("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3), ("geom_friction", 1.5))
LOG_SCALE_LIMIT = 3.0
TIMESTEP = 0.004
FRAME_SKIP = 4
HORIZON = 200
CTRL_COST = 1e-3
ALIVE_BONUS = 1.0


def _asset(xml: str) -> str:
    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", xml)


@functools.lru_cache(maxsize=None)
def default_params(xml: str) -> dict[str, np.ndarray]:
    """The model's default values of the randomized fields (read-only copies)."""
    model = mujoco.MjModel.from_xml_path(_asset(xml))
    out = {}
    for name, _ in PARAMS:
        arr = np.array(getattr(model, name), dtype=np.float64)
        arr.setflags(write=False)
        out[name] = arr
    return out


class _ParamEnvMixin(MujocoTaskMixin):
    """Parameter switching and the Meta-DT reward on top of a v5 env."""

    def _init_param(self, task: Mapping[str, Any], horizon: int, timestep: float,
                    alive_bonus: float, **ctor: Any) -> None:
        self.model.opt.timestep = float(timestep)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}
        self._alive_bonus = float(alive_bonus)
        self._defaults = {name: np.array(getattr(self.model, name)) for name, _ in PARAMS}
        self._init_task(task, horizon, timestep=timestep, alive_bonus=alive_bonus, **ctor)

    def _apply_task(self, task: Mapping[str, Any]) -> None:
        for name, _ in PARAMS:
            base = self._defaults[name]
            mult = np.asarray(task[name], dtype=np.float64)
            if mult.shape != base.shape:
                raise ValueError(f"{self.family_name}: {name} multipliers have shape "
                                 f"{mult.shape}, the model needs {base.shape}")
            getattr(self.model, name)[:] = base * mult

    def step(self, action: Any):
        a = self._action(action)
        truncated = self._clock.tick()
        x_before = float(self.data.qpos[0])
        self.do_simulation(a, self.frame_skip)
        x_after = float(self.data.qpos[0])
        v_x = (x_after - x_before) / self.dt
        ctrl_cost = self._ctrl_cost_weight * float(np.sum(np.square(a)))
        reward = v_x + self._alive_bonus - ctrl_cost
        info = {"x_position": x_after, "z_distance_from_origin": self.data.qpos[1] - self.init_qpos[1],
                "x_velocity": v_x, "reward_forward": v_x, "reward_ctrl": -ctrl_cost,
                "reward_survive": self._alive_bonus}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, truncated, info


class HopperParamEnv(_ParamEnvMixin, HopperEnv):
    family_name = "hopper-param"

    def __init__(self, task: Mapping[str, Any], horizon: int = HORIZON,
                 timestep: float = TIMESTEP, ctrl_cost_weight: float = CTRL_COST,
                 alive_bonus: float = ALIVE_BONUS, **kwargs: Any) -> None:
        HopperEnv.__init__(self, xml_file="hopper.xml", frame_skip=FRAME_SKIP,
                           ctrl_cost_weight=ctrl_cost_weight, terminate_when_unhealthy=False,
                           **kwargs)
        self._init_param(task, horizon, timestep, alive_bonus,
                         ctrl_cost_weight=ctrl_cost_weight, **kwargs)


class WalkerParamEnv(_ParamEnvMixin, Walker2dEnv):
    family_name = "walker-param"

    def __init__(self, task: Mapping[str, Any], horizon: int = HORIZON,
                 timestep: float = TIMESTEP, ctrl_cost_weight: float = CTRL_COST,
                 alive_bonus: float = ALIVE_BONUS, **kwargs: Any) -> None:
        Walker2dEnv.__init__(self, xml_file="walker2d_v5.xml", frame_skip=FRAME_SKIP,
                             ctrl_cost_weight=ctrl_cost_weight, terminate_when_unhealthy=False,
                             **kwargs)
        self._init_param(task, horizon, timestep, alive_bonus,
                         ctrl_cost_weight=ctrl_cost_weight, **kwargs)


class _ParamFamily(TaskFamily):
    xml: str
    env_cls: type
    act_dim: int
    horizon = HORIZON
    return_scale = 500.0
    option_defaults = {"timestep": TIMESTEP, "log_scale_limit": LOG_SCALE_LIMIT}

    @classmethod
    def defaults(cls) -> dict[str, np.ndarray]:
        return default_params(cls.xml)

    def _sample_tasks(self, rng: np.random.Generator, n: int, num_train: int) -> list[Task]:
        lim = float(self.options["log_scale_limit"])
        defaults = self.defaults()
        tasks = []
        for _ in range(n):
            task: Task = {"family": self.name}
            for name, base in PARAMS:
                u = rng.uniform(-lim, lim, size=defaults[name].shape)
                task[name] = np.power(base, u).tolist()
            tasks.append(task)
        return tasks

    def _validate_task(self, task: Mapping[str, Any]) -> None:
        defaults = self.defaults()
        for name, _ in PARAMS:
            try:
                mult = np.asarray(task[name], dtype=np.float64)
            except (ValueError, TypeError):
                raise ValueError(f"{self.name}: {name} must be numbers") from None
            if mult.shape != defaults[name].shape:
                raise ValueError(f"{self.name}: {name} has shape {mult.shape}, "
                                 f"expected {defaults[name].shape}")
            if not np.all(np.isfinite(mult)) or np.any(mult <= 0):
                raise ValueError(f"{self.name}: {name} multipliers must be positive and finite")

    def task_features(self, task: Mapping[str, Any]) -> np.ndarray:
        self.check_task(task)
        defaults = self.defaults()
        parts = [np.log(np.asarray(task[name], dtype=np.float64))[defaults[name] != 0]
                 for name, _ in PARAMS]
        return np.concatenate(parts)

    def _make_env(self, task: Task, **kwargs: Any):
        return self.env_cls(task, horizon=self.horizon, timestep=float(self.options["timestep"]),
                            **kwargs)


class HopperParamFamily(_ParamFamily):
    """hopper-param (protocol section 1): Hopper-v5 layout, obs 11, act 3, horizon 200.

    Masses, inertias, damping and friction randomized per task (see the
    module docstring); timestep 0.004, frame skip 4 (dt 0.016); reward
    ``dx/dt + 1.0 - 1e-3||a||^2``; no termination. Deviation: gymnasium v5
    model defaults (same Hopper geometry and frictions as the original).
    """

    name = "hopper-param"
    description = "Hopper with randomized masses, inertias, damping and friction"
    obs_dim = 11
    act_dim = 3
    xml = "hopper.xml"
    env_cls = HopperParamEnv


class WalkerParamFamily(_ParamFamily):
    """walker-param (protocol section 1): Walker2d-v5 layout, obs 17, act 6, horizon 200.

    As hopper-param. Deviation: Walker2d-v5's model has friction 1.9 on both
    feet (the original gym model had 0.9 on the right foot).
    """

    name = "walker-param"
    description = "Walker2d with randomized masses, inertias, damping and friction"
    obs_dim = 17
    act_dim = 6
    xml = "walker2d_v5.xml"
    env_cls = WalkerParamEnv
