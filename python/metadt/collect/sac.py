"""Soft Actor-Critic for many tasks at once: one ensemble, stacked weights.

Agent ``i`` of an ensemble of ``N`` is an ordinary SAC agent (tanh-Gaussian
policy, twin Q critics with Polyak-averaged targets, fixed entropy weight
``alpha``), but the weights of all agents are stacked along a leading axis and
every layer is one ``torch.baddbmm`` over the ``N`` agents. An update is a
single batched forward/backward: the loss is the *sum* of the per-agent mean
losses, so each agent's gradient is exactly its own, and Adam (elementwise) is
exactly per-agent Adam. ``N = 1`` is the per-task reference; the tests check
that an ensemble of 3 follows three single agents update for update.

Shapes: observations ``[N, B, obs_dim]``, actions ``[N, B, act_dim]``,
rewards and done flags ``[N, B]``. The critic of each agent is two Q networks,
stored as ``2N`` members (agent ``i`` owns members ``2i`` and ``2i + 1``).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from metadt.runtime import resolve_device, to_torch
from metadt.seeding import torch_seed

#: Keys of a batch passed to `SACEnsemble.update`.
BATCH_KEYS = ("obs", "actions", "rewards", "next_obs", "terminals")


# --------------------------------------------------------------------------
# stacked MLPs as plain tensors


def _init_mlp(n: int, sizes: Sequence[int], gen: torch.Generator) -> list[Tensor]:
    """Xavier-uniform weights and zero biases for ``n`` stacked MLPs (CPU, float32)."""
    params: list[Tensor] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = (torch.rand(n, fan_in, fan_out, generator=gen) * 2.0 - 1.0) * bound
        params += [w, torch.zeros(n, 1, fan_out)]
    return params


def mlp_forward(params: Sequence[Tensor], x: Tensor) -> Tensor:
    """``x [M, B, in] -> [M, B, out]`` through ReLU layers; the last layer is linear."""
    last = len(params) // 2 - 1
    for k in range(0, len(params), 2):
        x = torch.baddbmm(params[k + 1], x, params[k])
        if k // 2 < last:
            x = torch.relu(x)
    return x


# --------------------------------------------------------------------------
# the policy (also what a checkpoint holds)


@dataclass
class PolicyParams:
    """The stacked actor of ``N`` agents: enough to act, nothing to learn with."""

    params: list[Tensor]
    action_low: Tensor  # [act_dim]
    action_high: Tensor
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @property
    def num_agents(self) -> int:
        return int(self.params[0].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def act_dim(self) -> int:
        return int(self.action_low.shape[0])

    def to(self, device: torch.device | str) -> "PolicyParams":
        return PolicyParams([p.to(device) for p in self.params], self.action_low.to(device),
                            self.action_high.to(device), self.log_std_min, self.log_std_max)

    def select(self, index: Sequence[int]) -> "PolicyParams":
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.device)
        return PolicyParams([p.index_select(0, idx) for p in self.params], self.action_low,
                            self.action_high, self.log_std_min, self.log_std_max)

    @staticmethod
    def gather(policies: Sequence["PolicyParams"], which: Sequence[int]) -> "PolicyParams":
        """Agent ``i`` taken from ``policies[which[i]]`` (e.g. one checkpoint per task)."""
        first = policies[0]
        params = []
        for k in range(len(first.params)):
            params.append(torch.stack([policies[c].params[k][i] for i, c in enumerate(which)]))
        return PolicyParams(params, first.action_low, first.action_high,
                            first.log_std_min, first.log_std_max)

    def state_dict(self) -> dict[str, Any]:
        return {"params": [p.detach().cpu() for p in self.params],
                "action_low": self.action_low.cpu(), "action_high": self.action_high.cpu(),
                "log_std_min": self.log_std_min, "log_std_max": self.log_std_max}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "PolicyParams":
        return cls(list(state["params"]), state["action_low"], state["action_high"],
                   float(state["log_std_min"]), float(state["log_std_max"]))

    # ---- acting
    def _scale_bias(self) -> tuple[Tensor, Tensor]:
        scale = (self.action_high - self.action_low) / 2.0
        bias = (self.action_high + self.action_low) / 2.0
        return scale, bias

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        out = mlp_forward(self.params, obs)
        mean, log_std = out.chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        return mean, log_std

    def sample(self, obs: Tensor, noise: Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reparameterized sample: (action, log_prob [M,B], deterministic action)."""
        mean, log_std = self.distribution(obs)
        std = log_std.exp()
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                dtype=mean.dtype)
        u = mean + std * noise
        y = torch.tanh(u)
        scale, bias = self._scale_bias()
        action = y * scale + bias
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi))
        log_prob = log_prob - torch.log(scale * (1 - y.pow(2)) + 1e-6)
        return action, log_prob.sum(-1), torch.tanh(mean) * scale + bias

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> Tensor:
        """Actions for ``obs [N, B, obs_dim]`` (or ``[N, obs_dim]``), clipped to the bounds."""
        squeeze = obs.dim() == 2
        if squeeze:
            obs = obs.unsqueeze(1)
        action, _, mode = self.sample(obs, generator=generator)
        out = mode if deterministic else action
        out = torch.maximum(torch.minimum(out, self.action_high), self.action_low)
        return out.squeeze(1) if squeeze else out


# --------------------------------------------------------------------------
# the ensemble


class SACEnsemble:
    """``N`` SAC agents trained together; see the module docstring.

    ``cfg`` is any object with the `SACConfig` fields ``hidden_dim``,
    ``num_layers``, ``lr``, ``gamma``, ``tau``, ``alpha``, ``log_std_min``,
    ``log_std_max``.
    """

    def __init__(self, num_agents: int, obs_dim: int, act_dim: int,
                 action_low: Sequence[float] | np.ndarray, action_high: Sequence[float] | np.ndarray,
                 cfg: Any, device: str | torch.device | None = "auto", seed: int = 0) -> None:
        if num_agents < 1:
            raise ValueError("num_agents must be at least 1")
        self.n = int(num_agents)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.cfg = cfg
        self.device = resolve_device(device)
        gen = torch.Generator().manual_seed(torch_seed(int(seed)))
        hidden = [int(cfg.hidden_dim)] * int(cfg.num_layers)
        actor = _init_mlp(self.n, [self.obs_dim, *hidden, 2 * self.act_dim], gen)
        critic = _init_mlp(2 * self.n, [self.obs_dim + self.act_dim, *hidden, 1], gen)
        low, high = to_torch(action_low, dtype=np.float32), to_torch(action_high, dtype=np.float32)
        if low.shape != (self.act_dim,) or high.shape != (self.act_dim,):
            raise ValueError(f"action bounds must have shape ({self.act_dim},)")
        self.policy = PolicyParams([p.to(self.device).requires_grad_() for p in actor],
                                   low.to(self.device), high.to(self.device),
                                   float(cfg.log_std_min), float(cfg.log_std_max))
        self.critic = [p.to(self.device).requires_grad_() for p in critic]
        self.critic_target = [p.detach().clone() for p in self.critic]
        self._make_optimizers()
        self.updates = 0

    def _make_optimizers(self) -> None:
        lr = float(self.cfg.lr)
        self.actor_opt = torch.optim.Adam(self.policy.params, lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic, lr=lr)

    # ---- critic
    def q_values(self, critic: Sequence[Tensor], obs: Tensor, actions: Tensor) -> Tensor:
        """``[N, B, obs] x [N, B, act] -> [N, 2, B]`` (both Q heads of every agent).

        The critics see actions rescaled from the action box to ``[-1, 1]``
        (a fixed reparametrization of their first layer): with small boxes
        such as point-robot's ``[-0.1, 0.1]`` this keeps the critic well
        conditioned in the action.
        """
        scale, bias = self.policy._scale_bias()
        x = torch.cat([obs, (actions - bias) / scale], dim=-1)
        n, b, d = x.shape
        x = x.unsqueeze(1).expand(n, 2, b, d).reshape(2 * n, b, d)
        return mlp_forward(critic, x).reshape(n, 2, b)

    # ---- learning
    def update(self, batch: Mapping[str, Tensor], noise_next: Tensor | None = None,
               noise_pi: Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One SAC update of every agent on its own batch; returns per-agent losses ``[N]``.

        ``batch`` holds ``obs [N,B,obs]``, ``actions [N,B,act]``, ``rewards [N,B]``,
        ``next_obs``, ``terminals [N,B]`` (1 stops bootstrapping; time-limit
        truncations are not terminals). ``noise_*`` fix the policy's Gaussian
        noise (tests); otherwise it is drawn from ``generator``.
        """
        cfg = self.cfg
        obs, actions = batch["obs"], batch["actions"]
        rewards, next_obs, terminals = batch["rewards"], batch["next_obs"], batch["terminals"]
        alpha, gamma = float(cfg.alpha), float(cfg.gamma)

        with torch.no_grad():
            next_a, next_logp, _ = self.policy.sample(next_obs, noise_next, generator)
            q_next = self.q_values(self.critic_target, next_obs, next_a).min(dim=1).values
            target = rewards + (1.0 - terminals) * gamma * (q_next - alpha * next_logp)

        q = self.q_values(self.critic, obs, actions)  # [N, 2, B]
        q_losses = (q - target.unsqueeze(1)).pow(2).mean(-1)  # [N, 2]
        self.critic_opt.zero_grad(set_to_none=True)
        q_losses.sum().backward()
        self.critic_opt.step()

        pi, logp, _ = self.policy.sample(obs, noise_pi, generator)
        frozen = [p.detach() for p in self.critic]
        q_pi = self.q_values(frozen, obs, pi).min(dim=1).values
        pi_losses = (alpha * logp - q_pi).mean(-1)  # [N]
        self.actor_opt.zero_grad(set_to_none=True)
        pi_losses.sum().backward()
        self.actor_opt.step()

        with torch.no_grad():
            tau = float(cfg.tau)
            torch._foreach_lerp_(self.critic_target, [p.detach() for p in self.critic], tau)
        self.updates += 1
        return {"q1_loss": q_losses[:, 0].detach(), "q2_loss": q_losses[:, 1].detach(),
                "policy_loss": pi_losses.detach(), "entropy": -logp.detach().mean(-1)}

    # ---- acting
    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> Tensor:
        return self.policy.act(obs, deterministic, generator)

    def policy_snapshot(self) -> PolicyParams:
        """A detached copy of the actors (what a checkpoint holds)."""
        return PolicyParams([p.detach().clone() for p in self.policy.params],
                            self.policy.action_low.clone(), self.policy.action_high.clone(),
                            self.policy.log_std_min, self.policy.log_std_max)

    # ---- splitting and joining (tests, references)
    def select(self, index: Sequence[int]) -> "SACEnsemble":
        """A new ensemble with copies of agents ``index`` (fresh optimizer state)."""
        index = list(index)
        new = object.__new__(SACEnsemble)
        new.n, new.obs_dim, new.act_dim, new.cfg = len(index), self.obs_dim, self.act_dim, self.cfg
        new.device = self.device
        a_idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        c_idx = torch.as_tensor([2 * i + j for i in index for j in (0, 1)], dtype=torch.long,
                                device=self.device)
        new.policy = PolicyParams(
            [p.detach().index_select(0, a_idx).clone().requires_grad_() for p in self.policy.params],
            self.policy.action_low, self.policy.action_high,
            self.policy.log_std_min, self.policy.log_std_max)
        new.critic = [p.detach().index_select(0, c_idx).clone().requires_grad_()
                      for p in self.critic]
        new.critic_target = [p.index_select(0, c_idx).clone() for p in self.critic_target]
        new._make_optimizers()
        new.updates = 0
        return new

    # ---- checkpointing (resume)
    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
            "policy": self.policy.state_dict(),
            "critic": [p.detach().cpu() for p in self.critic],
            "critic_target": [p.cpu() for p in self.critic_target],
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state["n"], state["obs_dim"], state["act_dim"]) != (self.n, self.obs_dim, self.act_dim):
            raise ValueError("checkpoint shape does not match this ensemble")
        with torch.no_grad():
            for p, q in zip(self.policy.params, state["policy"]["params"]):
                p.copy_(q)
            for p, q in zip(self.critic, state["critic"]):
                p.copy_(q)
            for p, q in zip(self.critic_target, state["critic_target"]):
                p.copy_(q)
        # deep copies: Optimizer.load_state_dict keeps the given tensors (shared state)
        self.actor_opt.load_state_dict(copy.deepcopy(state["actor_opt"]))
        self.critic_opt.load_state_dict(copy.deepcopy(state["critic_opt"]))
        self.updates = int(state["updates"])


# --------------------------------------------------------------------------
# one agent for many tasks: conditioned on the task parameter


def feature_normalizer(features: np.ndarray, fit_rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale that standardize ``features [N, F]``, fitted on rows ``fit_rows``
    (the training tasks); a column constant there is only centred (scale 1)."""
    fit = np.asarray(features, dtype=np.float64)[list(fit_rows)]
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def fold_task_features(policy: PolicyParams, features: Tensor, obs_dim: int) -> PolicyParams:
    """The ``N``-agent actor equal to one actor on ``obs ⊕ features[i]`` for task ``i``.

    ``policy`` is a one-agent actor whose input is ``obs_dim + F`` wide
    (observation first); ``features`` is ``[N, F]``. Agent ``i`` of the result
    reads the observation only: its first layer is the observation rows of the
    shared first layer, and its bias absorbs ``features[i] @ W_feat + b``. The
    result is an ordinary stacked actor (what a per-task checkpoint holds), so
    evaluation, medium choice and rollouts treat both modes alike.
    """
    if policy.num_agents != 1:
        raise ValueError("fold_task_features needs a one-agent policy")
    w, b = policy.params[0].detach(), policy.params[1].detach()
    if w.shape[1] != obs_dim + features.shape[1]:
        raise ValueError(f"first layer has {w.shape[1]} inputs, expected obs {obs_dim} + "
                         f"features {features.shape[1]}")
    n = int(features.shape[0])
    f = features.to(device=w.device, dtype=w.dtype)
    first_w = w[:, :obs_dim].expand(n, -1, -1).clone()
    first_b = (b + (f @ w[0, obs_dim:]).unsqueeze(1)).clone()  # [N, 1, H]
    rest = [p.detach().expand(n, *p.shape[1:]).clone() for p in policy.params[2:]]
    return PolicyParams([first_w, first_b, *rest], policy.action_low.clone(),
                        policy.action_high.clone(), policy.log_std_min, policy.log_std_max)


class TaskConditionedSAC:
    """One SAC agent for ``N`` tasks; its input is ``obs ⊕ task features``.

    The agent is a one-member `SACEnsemble` with an ``obs_dim + F`` wide input.
    The task features (the family's `task_features`, standardized with
    ``mean``/``scale``) are appended to the observation here, at the agent's
    input only: callers pass and store the env's observations. It exposes the
    interface the collector uses of an ensemble of ``N`` per-task agents:
    `act` on ``[N, obs_dim]`` (row ``i`` in task ``i``), `update` on a pooled
    batch with a ``tasks`` index, `policy_snapshot` (the folded ``N``-agent
    actor, see `fold_task_features`), `state_dict`/`load_state_dict`, `updates`.
    """

    def __init__(self, features: np.ndarray, mean: np.ndarray, scale: np.ndarray, obs_dim: int,
                 act_dim: int, action_low: Sequence[float] | np.ndarray,
                 action_high: Sequence[float] | np.ndarray, cfg: Any,
                 device: str | torch.device | None = "auto", seed: int = 0) -> None:
        raw = np.asarray(features, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[0] < 1:
            raise ValueError(f"features must be [num_tasks, F], got shape {raw.shape}")
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        norm = (raw - self.mean) / self.scale
        self.agent = SACEnsemble(1, obs_dim + raw.shape[1], act_dim, action_low, action_high,
                                 cfg, device=device, seed=seed)
        self.device = self.agent.device
        self.n = int(raw.shape[0])
        self.obs_dim, self.act_dim, self.feature_dim = int(obs_dim), int(act_dim), int(raw.shape[1])
        self.features = to_torch(norm, self.device, np.float32)

    @property
    def updates(self) -> int:
        return self.agent.updates

    def with_features(self, obs: Tensor, tasks: Tensor) -> Tensor:
        """``obs [..., obs_dim] ⊕ features[tasks]`` (``tasks`` broadcast like ``obs[..., 0]``)."""
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must have {self.obs_dim} columns, got {obs.shape[-1]}")
        return torch.cat([obs, self.features[tasks]], dim=-1)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> Tensor:
        """Actions ``[N, act_dim]`` for ``obs [N, obs_dim]`` (row ``i`` in task ``i``)."""
        tasks = torch.arange(self.n, device=obs.device)
        x = self.with_features(obs, tasks).unsqueeze(0)  # [1, N, obs + F]
        return self.agent.act(x, deterministic, generator).squeeze(0)

    def update(self, batch: Mapping[str, Tensor], noise_next: Tensor | None = None,
               noise_pi: Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One update on a pooled batch: the `BATCH_KEYS` as ``[1, B, ...]`` plus
        ``tasks [B]`` (the task of each transition)."""
        tasks = batch["tasks"].to(self.device, torch.long)
        full = dict(batch)
        full["obs"] = self.with_features(batch["obs"], tasks.unsqueeze(0))
        full["next_obs"] = self.with_features(batch["next_obs"], tasks.unsqueeze(0))
        return self.agent.update(full, noise_next, noise_pi, generator)

    def policy_snapshot(self) -> PolicyParams:
        """The ``N``-agent actor of the tasks (`fold_task_features`): a checkpoint."""
        return fold_task_features(self.agent.policy_snapshot(), self.features, self.obs_dim)

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict(), "features": self.features.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not torch.equal(torch.as_tensor(state["features"]), self.features.cpu()):
            raise ValueError("checkpoint was trained with other task features")
        self.agent.load_state_dict(state["agent"])
