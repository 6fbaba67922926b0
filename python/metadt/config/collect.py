"""Configs of `metadt collect`: the SAC agents and the collection budget.

``CollectConfig.for_family(family, preset)`` gives the preset of a family:

- ``paper``: the protocol's budgets (point-robot 2,000 env steps per task,
  MuJoCo 500,000, Meta-World 50,000), all tasks; for a GPU and patience.
- ``cpu``: finishes on a 2-core CPU: point-robot with all 50 tasks in a few
  minutes (per-task SAC); the MuJoCo families and Meta-World with all their
  tasks (50 = 45 + 5, cheetah-dir 2, Meta-World 20 = 15 + 5) and one
  task-conditioned SAC agent (``sac_mode``; cheetah-vel estimated at ~34 minutes,
  docs/collect.md).
- ``smoke``: seconds, for tests: tiny networks, a few tasks, a couple of
  episodes.

Command-line overrides (``--set field=value``) reach the SAC fields as
``sac.lr=1e-3`` (or just ``lr=1e-3`` when the name is unambiguous).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from metadt.config.base import Config, check_preset, check_seed, did_you_mean

MUJOCO = ("cheetah-vel", "cheetah-dir", "ant-dir", "hopper-param", "walker-param")
METAWORLD = ("reach", "sweep", "door-lock")
#: Values of `CollectConfig.sac_mode`.
SAC_MODES = ("per-task", "task-conditioned")


@dataclass
class SACConfig(Config):
    """Soft Actor-Critic hyperparameters (protocol section 2)."""

    hidden_dim: int = 128
    """Units per hidden layer of the actor and of each critic."""
    num_layers: int = 2
    """Hidden layers per MLP."""
    lr: float = 3e-4
    """Adam learning rate of the actor and the critics."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    alpha: float = 0.2
    """Fixed entropy weight."""
    batch_size: int = 256
    """Transitions per agent per update (each agent samples its own task)."""
    log_std_min: float = -20.0
    """Lower clamp of the policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the policy's log standard deviation."""


@dataclass
class CollectConfig(Config):
    """How `metadt collect` trains the agents and builds the datasets."""

    family: str = "point-robot"
    """Task family name (see `metadt envs`)."""
    preset: str = "cpu"
    """Preset this config came from (recorded in the card)."""
    family_seed: int = 0
    """Seed the family's tasks are sampled with (the tasks are saved in the card)."""
    num_tasks: int | None = None
    """Number of tasks (train + test); None = the family's protocol default."""
    num_train: int | None = None
    """Training tasks among them (the first ones); None = the family's default split."""
    steps_per_task: int = 2000
    """SAC environment steps per task (the training budget)."""
    start_steps: int = 100
    """Steps per task with uniform-random actions before the policy acts."""
    update_after: int = 256
    """Steps per task before the first update (at least one batch in memory)."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step (fractions accumulate: 0.5 = every other step):
    of every agent (per-task), or of the one agent per step of all tasks (task-conditioned)."""
    replay_capacity: int | None = None
    """Replay memory per task in steps (oldest whole episodes evicted); None = unbounded."""
    checkpoint_every: int = 100
    """Env steps per task between saved policy checkpoints (the medium candidates)."""
    eval_episodes: int = 10
    """Episodes per task and checkpoint to score checkpoints (stochastic policy)."""
    random_episodes: int = 20
    """Episodes per task of a uniform-random policy (the random return)."""
    episodes_per_task: int = 100
    """Episodes per task in each dataset quality."""
    mixed_medium_fraction: float = 0.7
    """Share of medium episodes in the mixed dataset (the rest are expert)."""
    rollout_noise: float = 0.0
    """Gaussian noise added to the stochastic policy's actions in the medium and expert
    rollouts (std = this x half the action range, before clipping); 0 = the policy as
    is. The cpu point-robot preset trains with a small entropy weight (a near-
    deterministic policy) and restores the official data's diversity with it
    (docs/collect.md)."""
    rollout_parallel: int = 100
    """Episodes per task rolled out side by side (environments alive at once = tasks x this)."""
    resume_every: int = 2000
    """Env steps per task between resumable training states (rounded up to whole episodes)."""
    keep_replay: bool = False
    """Keep the final replay memories under DIR/.work after the dataset is complete."""
    device: str = "auto"
    """Torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..."""
    torch_threads: int = 0
    """torch.set_num_threads for the run (0 = leave torch's default)."""
    sac_mode: str = "per-task"
    """``per-task``: one SAC agent per task (the protocol). ``task-conditioned``: one agent
    for every task, its input the observation and the task's parameter (`task_features`),
    trained on all tasks at once: one agent's compute instead of one per task (a documented
    deviation; docs/collect.md). The stored data holds the env's observations only."""
    sac: SACConfig = field(default_factory=SACConfig)
    """The agents' hyperparameters."""

    # ------------------------------------------------------------ presets
    @classmethod
    def for_family(cls, family: str, preset: str = "cpu") -> "CollectConfig":
        check_preset(preset)
        from metadt.envs import FAMILIES

        if family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}{did_you_mean(str(family), FAMILIES)}; "
                             f"choose one of {', '.join(FAMILIES)}")
        cfg = cls(family=family, preset=preset)
        kind = ("point" if family == "point-robot" else "mujoco" if family in MUJOCO
                else "metaworld")
        if preset == "paper":
            budget = {"point": 2_000, "mujoco": 500_000, "metaworld": 50_000}[kind]
            ckpt = {"point": 40, "mujoco": 10_000, "metaworld": 1_000}[kind]
            return cfg.replace(steps_per_task=budget, checkpoint_every=ckpt,
                               start_steps=100 if kind == "point" else 10_000,
                               replay_capacity=None if kind == "point" else 1_000_000,
                               resume_every={"point": 500, "mujoco": 20_000,
                                             "metaworld": 5_000}[kind],
                               rollout_parallel=100 if kind == "point" else 10)
        if preset == "cpu":
            if kind == "point":
                # alpha and lr differ from the protocol: with alpha=0.2 the soft-optimal
                # policy is nearly uniform over point-robot's tiny action box near the
                # goal (measured expert ~ 3x the optimal return); see docs/collect.md.
                # The near-deterministic alpha=0.003 policy would give ~100 near-copies
                # per task: rollout_noise restores the official data's spread of
                # actions and returns (docs/collect.md).
                return cfg.replace(steps_per_task=2500, start_steps=100, update_after=200,
                                   updates_per_step=1.0, checkpoint_every=50, eval_episodes=10,
                                   resume_every=500, torch_threads=1, rollout_noise=1.0,
                                   sac=SACConfig(alpha=0.003, lr=1e-3))
            if kind == "mujoco":
                # every task (50 = 45 + 5; cheetah-dir 2), ONE task-conditioned agent:
                # 20k steps per task (1M transitions), 5 updates per step of all tasks
                # (100k updates at batch 256); alpha/lr as measured for the earlier per-task
                # cpu preset: faster to a usable expert (docs/collect.md, budget arithmetic)
                return cfg.replace(sac_mode="task-conditioned", steps_per_task=20_000,
                                   start_steps=2_000, update_after=1_000, updates_per_step=5.0,
                                   checkpoint_every=1_000, eval_episodes=3, random_episodes=5,
                                   episodes_per_task=100, rollout_parallel=10, resume_every=4_000,
                                   torch_threads=1, sac=SACConfig(alpha=0.05, lr=1e-3))
            # Meta-World: every task (20 = 15 + 5), one task-conditioned agent, 20k steps per
            # task (horizon 500), 2 updates per step of all tasks (38k updates); 2 episodes
            # per task side by side (a Meta-World env takes ~35 MB: 40 envs, not 100)
            return cfg.replace(sac_mode="task-conditioned", steps_per_task=20_000,
                               start_steps=2_000, update_after=1_000, updates_per_step=2.0,
                               checkpoint_every=2_000, eval_episodes=2, random_episodes=2,
                               episodes_per_task=20, rollout_parallel=2, resume_every=5_000,
                               torch_threads=1)
        # smoke: seconds
        sac = SACConfig(hidden_dim=32, batch_size=32)
        cfg = cfg.replace(torch_threads=1)
        if kind == "point":
            return cfg.replace(num_tasks=6, num_train=5, steps_per_task=200, start_steps=40,
                               update_after=40, updates_per_step=0.5, checkpoint_every=40,
                               eval_episodes=2, random_episodes=2, episodes_per_task=4,
                               rollout_parallel=4, resume_every=100, sac=sac)
        horizon = 500 if kind == "metaworld" else 200
        # the cpu preset's mode, so the smoke preset exercises its code path
        return cfg.replace(sac_mode="task-conditioned",
                           num_tasks=2 if family != "cheetah-dir" else None, num_train=1
                           if family != "cheetah-dir" else None,
                           steps_per_task=horizon, start_steps=horizon // 2, update_after=32,
                           updates_per_step=0.1, checkpoint_every=horizon, eval_episodes=1,
                           random_episodes=1, episodes_per_task=2, rollout_parallel=2,
                           resume_every=horizon, sac=sac)

    # ------------------------------------------------- nested config I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CollectConfig":
        data = dict(data)
        sac = data.pop("sac", None)
        cfg = super().from_dict(data)
        if sac is not None:
            cfg.sac = sac if isinstance(sac, SACConfig) else SACConfig.from_dict(sac)
        return cfg

    def with_overrides(self, overrides: list[str] | None) -> "CollectConfig":
        """``field=value`` overrides; SAC fields as ``sac.field=value`` or bare ``field``."""
        if not overrides:
            return self
        own = {f.name for f in dataclasses.fields(self)} - {"sac"}
        sac_fields = {f.name for f in dataclasses.fields(SACConfig)}
        mine, theirs = [], []
        for item in overrides:
            name = item.split("=", 1)[0].strip().replace("-", "_")
            if name.startswith("sac."):
                theirs.append(item.strip()[4:])
            elif name in own:
                mine.append(item)
            elif name in sac_fields:
                theirs.append(item)
            else:
                valid = ", ".join(sorted(own) + [f"sac.{n}" for n in sorted(sac_fields)])
                raise ValueError(f"CollectConfig has no field {name!r}; fields: {valid}")
        cfg = Config.with_overrides(self, mine)
        if theirs:
            cfg = cfg.replace(sac=self.sac.with_overrides(theirs))
        return cfg

    def validate(self) -> "CollectConfig":
        """Raise ValueError on inconsistent settings; returns self."""
        def positive(name: str, value: float) -> None:
            if value is None or value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

        for name in ("steps_per_task", "checkpoint_every", "eval_episodes", "random_episodes",
                     "episodes_per_task", "rollout_parallel", "resume_every"):
            positive(name, getattr(self, name))
        positive("sac.batch_size", self.sac.batch_size)
        positive("sac.hidden_dim", self.sac.hidden_dim)
        if self.updates_per_step < 0:
            raise ValueError("updates_per_step must be >= 0")
        if not 0.0 <= self.mixed_medium_fraction <= 1.0:
            raise ValueError("mixed_medium_fraction must be in [0, 1]")
        if not 0.0 <= self.rollout_noise < float("inf"):
            raise ValueError(f"rollout_noise must be a finite number >= 0, got {self.rollout_noise}")
        if self.start_steps < 0 or self.update_after < 0:
            raise ValueError("start_steps and update_after must be >= 0")
        if self.sac_mode not in SAC_MODES:
            raise ValueError(f"sac_mode must be one of {', '.join(SAC_MODES)}, "
                             f"got {self.sac_mode!r}")
        if self.replay_capacity is not None and self.replay_capacity < self.sac.batch_size:
            raise ValueError("replay_capacity must hold at least one batch")
        check_seed(self.family_seed, "family_seed")
        return self
