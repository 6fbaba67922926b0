"""Context encoder: the h transitions before a step -> task representation z."""
from __future__ import annotations

import torch
from torch import nn


class ContextEncoder(nn.Module):
    """s, a, r each through Linear -> ``embed`` + ReLU, concatenated, a 1-layer GRU,
    then Linear -> z from the last GRU output (protocol section 3).

    Inputs are ``[..., h, obs]``, ``[..., h, act]``, ``[..., h]`` (oldest first,
    left-padded); any number of leading dims. ``mask`` ``[..., h]`` (True = real)
    zeroes the embeddings' inputs at padded positions, so a padded slot is seen
    as an all-zero transition whatever it holds.
    """

    def __init__(self, obs_dim: int, act_dim: int, embed: int, hidden: int, z_dim: int):
        super().__init__()
        self.obs_embed = nn.Sequential(nn.Linear(obs_dim, embed), nn.ReLU())
        self.act_embed = nn.Sequential(nn.Linear(act_dim, embed), nn.ReLU())
        self.rew_embed = nn.Sequential(nn.Linear(1, embed), nn.ReLU())
        self.gru = nn.GRU(3 * embed, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, z_dim)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        lead = obs.shape[:-2]
        context_len = obs.shape[-2]
        obs = obs.reshape(-1, context_len, obs.shape[-1])
        actions = actions.reshape(-1, context_len, actions.shape[-1])
        rewards = rewards.reshape(-1, context_len, 1)
        if mask is not None:
            m = mask.reshape(-1, context_len, 1).to(obs.dtype)
            obs, actions, rewards = obs * m, actions * m, rewards * m
        x = torch.cat([self.obs_embed(obs), self.act_embed(actions), self.rew_embed(rewards)], -1)
        out, _ = self.gru(x)
        z = self.head(out[:, -1])
        return z.reshape(*lead, z.shape[-1])
