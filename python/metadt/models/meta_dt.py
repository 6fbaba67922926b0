"""The conditioned decision transformer: Meta-DT and every baseline (protocol section 4).

Input: a batch in exactly the layout of ``TrajectoryStore.sample_windows``
(as tensors): ``obs [B,K,obs]``, ``actions [B,K,act]``, ``rtg [B,K]`` (already
divided by the return scale), ``timesteps [B,K]``, ``mask [B,K]`` (True =
real step, padding on the left), and, when used, ``ctx_obs [B,K+h,obs]``,
``ctx_actions``, ``ctx_rewards``, ``ctx_mask`` and ``prompt_obs [B,k,obs]``,
``prompt_actions``, ``prompt_rtg``, ``prompt_timesteps``, ``prompt_mask``.

Tokens per step: (R^_t, s_t, a_t) with a learned timestep embedding added to
each; with ``use_z`` the state token is ``Linear(concat(Linear(s_norm), z_t))``.
A prompt (k steps, its own embeddings) is prepended when the config uses
prompts and the batch carries ``prompt_*`` keys (no prompt keys = no prompt:
warm-up and zero-shot). The action for step t is read at the state token of
step t of the main sequence.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from metadt.config.meta_dt import MetaDTConfig
from metadt.layout import step_contexts
from metadt.models.transformer import GPT
from metadt.runtime import to_torch

DEFAULT_MAX_TIMESTEP = 1000


def autocast(device: torch.device, amp: str):
    """The forward's precision context for ``MetaDTConfig.amp`` on ``device``: bfloat16
    autocast for "bf16", and for "auto" on CUDA; no autocast otherwise."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp not in ("off", "auto"):
        raise ValueError(f"unknown amp mode {amp!r}")
    return contextlib.nullcontext()


def context_windows(batch: dict[str, torch.Tensor], window_len: int) -> tuple[torch.Tensor, ...]:
    """Per-position h-step contexts from a window's ``ctx_*`` keys, as views (no copy).

    ``ctx_obs [B, K+h, obs]`` -> ``[B, K, h, obs]`` (position j gets ``ctx[:, j:j+h]``),
    likewise actions, rewards ``[B, K, h]`` and mask ``[B, K, h]`` (None if absent): the
    store's layout, unfolded by `metadt.layout.step_contexts` (its one definition).
    """

    missing = [k for k in ("ctx_obs", "ctx_actions", "ctx_rewards") if k not in batch]
    if missing:
        raise ValueError(f"z needs the window's context: batch lacks {', '.join(missing)} "
                         "(sample windows with context_len=h)")
    total = batch["ctx_obs"].shape[1]
    h = total - window_len
    if h < 1:
        raise ValueError(f"ctx_* cover {total} steps for a window of {window_len}: no context")
    mask = batch.get("ctx_mask")
    return (step_contexts(batch["ctx_obs"], h), step_contexts(batch["ctx_actions"], h),
            step_contexts(batch["ctx_rewards"], h), None if mask is None else step_contexts(mask, h))


class MetaDT(nn.Module):
    """One policy for Meta-DT, DT, Prompt-DT and the ablations (flags in the config)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: MetaDTConfig, z_dim: int | None = None):
        super().__init__()
        cfg.validate()
        self.cfg, self.obs_dim, self.act_dim = cfg, int(obs_dim), int(act_dim)
        self.z_dim = int(z_dim if z_dim is not None else cfg.z_dim)
        e = cfg.embed_dim
        self.max_timestep = int(cfg.max_timestep or DEFAULT_MAX_TIMESTEP)
        self.action_scale = float(cfg.action_scale or 1.0)
        self.embed_timestep = nn.Embedding(self.max_timestep, e)
        self.embed_return = nn.Linear(1, e)
        self.embed_action = nn.Linear(act_dim, e)
        if cfg.use_z:
            self.embed_state_pre = nn.Linear(obs_dim, cfg.state_embed_dim)
            self.embed_state = nn.Linear(cfg.state_embed_dim + self.z_dim, e)
        else:
            self.embed_state_pre = None
            self.embed_state = nn.Linear(obs_dim, e)
        if cfg.use_prompt:
            self.prompt_embed_timestep = nn.Embedding(self.max_timestep, e)
            self.prompt_embed_return = nn.Linear(1, e)
            self.prompt_embed_state = nn.Linear(obs_dim, e)
            self.prompt_embed_action = nn.Linear(act_dim, e)
        self.embed_ln = nn.LayerNorm(e)
        self.embed_drop = nn.Dropout(cfg.dropout)
        self.gpt = GPT(e, cfg.n_layers, cfg.n_heads, cfg.mlp_dim, cfg.dropout)
        self.action_head = nn.Linear(e, act_dim)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    @torch.no_grad()
    def set_normalization(self, obs_mean, obs_std) -> None:
        dev = self.obs_mean.device
        self.obs_mean.copy_(to_torch(obs_mean, dev, np.float32))
        self.obs_std.copy_(to_torch(obs_std, dev, np.float32).clamp_min(1e-6))

    # ---------------------------------------------------------------- tokens
    def _time(self, emb: nn.Embedding, t: torch.Tensor) -> torch.Tensor:
        return emb(t.long().clamp(0, self.max_timestep - 1))

    def _stack(self, r, s, a, mask) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, e = s.shape
        x = torch.stack([r, s, a], dim=2).reshape(b, 3 * n, e)
        m = mask.bool().repeat_interleave(3, dim=1)
        return x, m

    def _main_tokens(self, batch, z):
        obs = (batch["obs"] - self.obs_mean) / self.obs_std
        if self.cfg.use_z:
            if z is None:
                raise ValueError("this policy is conditioned on z (use_z=True) but z is None")
            if z.shape[:2] != obs.shape[:2] or z.shape[-1] != self.z_dim:
                raise ValueError(f"z must be [B, K, {self.z_dim}] = "
                                 f"[{obs.shape[0]}, {obs.shape[1]}, {self.z_dim}], got {tuple(z.shape)}")
            s = self.embed_state(torch.cat([self.embed_state_pre(obs), z.to(obs.dtype)], -1))
        else:
            s = self.embed_state(obs)
        t = self._time(self.embed_timestep, batch["timesteps"])
        r = self.embed_return(batch["rtg"].unsqueeze(-1).to(obs.dtype)) + t
        a = self.embed_action(batch["actions"] / self.action_scale) + t
        return self._stack(r, s + t, a, batch["mask"])

    def _prompt_tokens(self, batch):
        obs = (batch["prompt_obs"] - self.obs_mean) / self.obs_std
        t = self._time(self.prompt_embed_timestep, batch["prompt_timesteps"])
        r = self.prompt_embed_return(batch["prompt_rtg"].unsqueeze(-1).to(obs.dtype)) + t
        s = self.prompt_embed_state(obs) + t
        a = self.prompt_embed_action(batch["prompt_actions"] / self.action_scale) + t
        return self._stack(r, s, a, batch["prompt_mask"])

    def uses_prompt(self, batch: dict[str, torch.Tensor]) -> bool:
        return self.cfg.use_prompt and "prompt_obs" in batch

    # --------------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor], z: torch.Tensor | None = None) -> torch.Tensor:
        """Action predictions ``[B, K, act]`` (float32) for every window position
        (under bfloat16 autocast when ``cfg.amp`` asks for it on this device)."""
        with autocast(self.obs_mean.device, self.cfg.amp):
            x, m = self._main_tokens(batch, z)
            offset = 0
            if self.uses_prompt(batch):
                px, pm = self._prompt_tokens(batch)
                x, m = torch.cat([px, x], 1), torch.cat([pm, m], 1)
                offset = px.shape[1]
            hidden = self.gpt(self.embed_drop(self.embed_ln(x)), m)
            window_len = batch["obs"].shape[1]
            h_state = hidden[:, offset + 1: offset + 3 * window_len: 3]
            out = torch.tanh(self.action_head(h_state)) * self.action_scale
        return out.float()

    def loss(self, batch: dict[str, torch.Tensor], z: torch.Tensor | None = None) -> torch.Tensor:
        """MSE of the actions (in units of ``action_scale``) over real steps."""
        pred = self(batch, z)
        err = ((pred - batch["actions"]) / self.action_scale) ** 2
        m = batch["mask"].to(err.dtype).unsqueeze(-1)
        return (err * m).sum() / (m.sum() * self.act_dim).clamp_min(1.0)

    def compute_z(self, batch: dict[str, torch.Tensor], world_model) -> torch.Tensor:
        """z_t for every window position from the batch's context windows ``[B, K, z]``."""
        if world_model is None:
            raise ValueError("this policy uses z: pass the world model")
        o, a, r, m = context_windows(batch, batch["obs"].shape[1])  # window_len
        with torch.no_grad():
            return world_model.encode(o, a, r, m)

    @torch.no_grad()
    def predict_action(self, batch: dict[str, torch.Tensor], world_model=None) -> torch.Tensor:
        """The action ``[B, act]`` for the last window position (z from ``ctx_*`` when used)."""
        z = None
        if self.cfg.use_z:
            z = batch.get("z")
            if z is None:
                z = self.compute_z(batch, world_model)
        return self(batch, z)[:, -1]
