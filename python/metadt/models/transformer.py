"""GPT-2-style causal transformer in plain PyTorch.

All attention goes through :func:`attend`, which calls the one kernel entry
point :func:`metadt.kernels.attention` (fused Triton on CUDA,
``scaled_dot_product_attention`` elsewhere). Key padding: ``True`` = a real
token; a query that sees only padding outputs zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from metadt.kernels import attention as _kernel_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_padding_mask: torch.Tensor | None, causal: bool, dropout_p: float,
           training: bool) -> torch.Tensor:
    """The one attention call of metadt's models (``[B, H, T, D]``)."""
    return _kernel_attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                             dropout_p=dropout_p, training=training)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attend(q, k, v, key_padding_mask, True, self.dropout, self.training)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_padding_mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A stack of causal blocks and a final LayerNorm over ``[B, T, dim]`` embeddings."""

    def __init__(self, dim: int, layers: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.ln_f(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
