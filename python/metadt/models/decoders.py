"""World-model decoders: reward r^(s, a, s', z) and transition s'^(s, a, z)."""
from __future__ import annotations

import torch
from torch import nn


def mlp(inp: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


class RewardDecoder(nn.Module):
    """r^ = MLP([enc(s), enc(a), enc(s'), z]) (states normalized by the caller)."""

    def __init__(self, obs_dim: int, act_dim: int, z_dim: int, embed: int, hidden: int,
                 layers: int):
        super().__init__()
        self.obs_embed = nn.Sequential(nn.Linear(obs_dim, embed), nn.ReLU())
        self.act_embed = nn.Sequential(nn.Linear(act_dim, embed), nn.ReLU())
        self.net = mlp(3 * embed + z_dim, hidden, layers, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.obs_embed(obs), self.act_embed(actions), self.obs_embed(next_obs), z], -1)
        return self.net(x).squeeze(-1)


class TransitionDecoder(nn.Module):
    """s'^ = MLP([enc(s), enc(a), z]) in normalized state space (optionally as a delta)."""

    def __init__(self, obs_dim: int, act_dim: int, z_dim: int, embed: int, hidden: int,
                 layers: int, predict_delta: bool):
        super().__init__()
        self.obs_embed = nn.Sequential(nn.Linear(obs_dim, embed), nn.ReLU())
        self.act_embed = nn.Sequential(nn.Linear(act_dim, embed), nn.ReLU())
        self.net = mlp(2 * embed + z_dim, hidden, layers, obs_dim)
        self.predict_delta = predict_delta

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([self.obs_embed(obs), self.act_embed(actions), z], -1))
        return obs + out if self.predict_delta else out
