"""Rolling out per-task SAC policies: :func:`policy_act_fn` wraps the stacked actors of
`metadt.collect.sac` (agent ``i`` acts in task ``i``) as an ``ActFn`` for
:class:`metadt.envs.rollout.Roller` (re-exported here with :class:`Episodes` and
:func:`random_act_fn`, which need no torch and live with the envs).
"""
from __future__ import annotations

import numpy as np
import torch

from metadt.collect.sac import PolicyParams
from metadt.envs.rollout import ActFn, Episodes, Roller, random_act_fn
from metadt.runtime import to_numpy, to_torch


def policy_act_fn(policy: PolicyParams, generator: torch.Generator | None = None,
                  deterministic: bool = False) -> ActFn:
    """Wrap a stacked actor as an `ActFn` (stochastic unless `deterministic`)."""

    def act(obs: np.ndarray) -> np.ndarray:
        x = to_torch(obs, policy.device, np.float32)
        return to_numpy(policy.act(x, deterministic=deterministic, generator=generator))

    return act


__all__ = ["ActFn", "Episodes", "Roller", "policy_act_fn", "random_act_fn"]
