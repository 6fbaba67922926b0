"""Context-aware world model (protocol section 3): z from context, decoders conditioned on z."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metadt.config.world_model import WorldModelConfig
from metadt.models.context_encoder import ContextEncoder
from metadt.models.decoders import RewardDecoder, TransitionDecoder
from metadt.runtime import to_torch


def infer_context_mask(ctx_obs: torch.Tensor, ctx_actions: torch.Tensor,
                       ctx_rewards: torch.Tensor) -> torch.Tensor:
    """True where a context slot holds a transition (padding is all zeros)."""
    return (ctx_obs != 0).any(-1) | (ctx_actions != 0).any(-1) | (ctx_rewards != 0)


class WorldModel(nn.Module):
    """Encoder + reward and/or transition decoder + normalization statistics.

    Every method takes tensors with any leading dims: ``obs [..., obs]``,
    ``ctx_obs [..., h, obs]``, ``ctx_rewards [..., h]``. Raw (unnormalized)
    states and rewards go in; the model normalizes with its own buffers
    (``obs_mean``, ``obs_std``, ``reward_mean``, ``reward_std``), set from the
    training data by :meth:`set_normalization` and saved in its state dict.
    ``ctx_mask`` (True = real transition) is optional: without it, all-zero
    slots are taken as padding.

    ``family`` and ``dataset`` say what it was trained on (plain attributes, saved in
    its model file's payload): the family defaults to ``cfg.family``; ``dataset`` is
    None until a trainer or a model file says.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: WorldModelConfig,
                 family: str | None = None, dataset: str | None = None):
        super().__init__()
        cfg.validate()
        self.obs_dim, self.act_dim, self.cfg = int(obs_dim), int(act_dim), cfg
        self.family: str = cfg.family if family is None else str(family)
        self.dataset: str | None = dataset
        self.z_dim = cfg.z_dim
        self.context_len = cfg.context_len
        self.encoder = ContextEncoder(obs_dim, act_dim, cfg.input_embed_dim, cfg.gru_hidden,
                                      cfg.z_dim)
        self.reward_decoder = (RewardDecoder(obs_dim, act_dim, cfg.z_dim, cfg.input_embed_dim,
                                             cfg.decoder_hidden, cfg.decoder_layers)
                               if cfg.use_reward_decoder else None)
        self.transition_decoder = (TransitionDecoder(obs_dim, act_dim, cfg.z_dim,
                                                     cfg.input_embed_dim, cfg.decoder_hidden,
                                                     cfg.decoder_layers, cfg.predict_delta)
                                   if cfg.use_transition_decoder else None)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    # ------------------------------------------------------------ normalization
    @torch.no_grad()
    def set_normalization(self, obs_mean, obs_std, reward_mean=0.0, reward_std=1.0) -> None:
        dev = self.obs_mean.device
        if self.cfg.normalize_obs:
            self.obs_mean.copy_(to_torch(obs_mean, dev, np.float32))
            self.obs_std.copy_(to_torch(obs_std, dev, np.float32).clamp_min(1e-6))
        self.reward_mean.fill_(float(reward_mean))
        self.reward_std.fill_(max(float(reward_std), 1e-6))

    def norm_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def norm_reward(self, r: torch.Tensor) -> torch.Tensor:
        return (r - self.reward_mean) / self.reward_std

    # ----------------------------------------------------------------- forward
    def encode(self, ctx_obs: torch.Tensor, ctx_actions: torch.Tensor, ctx_rewards: torch.Tensor,
               ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        """z ``[..., z_dim]`` from the h transitions before a step."""
        if ctx_obs.shape[-2] != self.context_len:
            raise ValueError(f"world model context length is {self.context_len}, "
                             f"got contexts of {ctx_obs.shape[-2]} steps")
        if ctx_mask is None:
            ctx_mask = infer_context_mask(ctx_obs, ctx_actions, ctx_rewards)
        return self.encoder(self.norm_obs(ctx_obs), ctx_actions, self.norm_reward(ctx_rewards),
                            ctx_mask)

    def forward(self, obs, actions, next_obs, ctx_obs, ctx_actions, ctx_rewards,
                ctx_mask=None) -> dict[str, torch.Tensor | None]:
        """``z``; ``reward`` r^ (raw units) and ``next_obs`` s'^ (raw units), or None
        when that decoder is off; ``reward_n`` / ``next_obs_n`` in normalized units."""
        z = self.encode(ctx_obs, ctx_actions, ctx_rewards, ctx_mask)
        out: dict[str, torch.Tensor | None] = {"z": z, **self.decode(obs, actions, next_obs, z)}
        rn, sn = out["reward_n"], out["next_obs_n"]
        out["reward"] = rn * self.reward_std + self.reward_mean if rn is not None else None
        out["next_obs"] = sn * self.obs_std + self.obs_mean if sn is not None else None
        return out

    def decode(self, obs, actions, next_obs, z) -> dict[str, torch.Tensor | None]:
        """Normalized predictions ``reward_n`` / ``next_obs_n`` of transitions from z
        (z broadcast over the transitions' extra leading dims)."""
        while z.dim() < obs.dim():
            z = z.unsqueeze(-2)
        z = z.expand(*obs.shape[:-1], z.shape[-1])
        s, s2 = self.norm_obs(obs), self.norm_obs(next_obs)
        return {"reward_n": (self.reward_decoder(s, actions, s2, z)
                             if self.reward_decoder is not None else None),
                "next_obs_n": (self.transition_decoder(s, actions, z)
                               if self.transition_decoder is not None else None)}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted MSE of the enabled decoders on a `sample_transitions` batch.

        With ``target_obs [B,k,obs]``, ``target_actions``, ``target_rewards [B,k]``,
        ``target_next_obs`` in the batch (:mod:`metadt.train.task_targets`), the
        decoders also predict those k transitions from the row's z; each MSE then
        averages over all 1 + k predictions of a row."""
        z = self.encode(batch["ctx_obs"], batch["ctx_actions"], batch["ctx_rewards"],
                        batch.get("ctx_mask"))
        obs, act, rew, nxt = (batch["obs"][:, None], batch["actions"][:, None],
                              batch["rewards"].reshape(-1, 1), batch["next_obs"][:, None])
        if "target_obs" in batch:
            obs = torch.cat([obs, batch["target_obs"]], 1)
            act = torch.cat([act, batch["target_actions"]], 1)
            rew = torch.cat([rew, batch["target_rewards"].reshape(len(rew), -1)], 1)
            nxt = torch.cat([nxt, batch["target_next_obs"]], 1)
        out = self.decode(obs, act, nxt, z)
        total = torch.zeros((), device=obs.device)
        parts: dict[str, float] = {}
        if out["reward_n"] is not None:
            lr = ((out["reward_n"] - self.norm_reward(rew)) ** 2).mean()
            total = total + self.cfg.reward_loss_weight * lr
            parts["reward_loss"] = float(lr.detach())
        if out["next_obs_n"] is not None:
            lt = ((out["next_obs_n"] - self.norm_obs(nxt)) ** 2).mean()
            total = total + self.cfg.transition_loss_weight * lt
            parts["transition_loss"] = float(lt.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    @torch.no_grad()
    def step_errors(self, obs, actions, rewards, next_obs, ctx_obs, ctx_actions, ctx_rewards,
                    ctx_mask=None) -> torch.Tensor:
        """Per-step prediction error ``[...]``: |r^ - r| (raw reward units) plus
        ||s'^ - s'||_1 on normalized states, for the enabled decoders."""
        out = self(obs, actions, next_obs, ctx_obs, ctx_actions, ctx_rewards, ctx_mask)
        err = torch.zeros(obs.shape[:-1], device=obs.device)
        if out["reward"] is not None:
            err = err + (out["reward"] - rewards).abs()
        if out["next_obs_n"] is not None:
            err = err + (out["next_obs_n"] - self.norm_obs(next_obs)).abs().sum(-1)
        return err
