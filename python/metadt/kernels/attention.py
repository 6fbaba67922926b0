"""Multi-head scaled dot-product attention with key padding and causal masks.

:func:`attention` is the public entry point. On CUDA tensors (with Triton
importable) it runs the fused flash-attention kernel of
:mod:`metadt.kernels._attention_triton`; otherwise it runs
:func:`attention_torch`, built on
:func:`torch.nn.functional.scaled_dot_product_attention`. Both share these
semantics:

* ``q, k, v``: ``[B, H, T, D]`` (same ``T`` for queries and keys);
* ``key_padding_mask``: ``[B, T]`` bool, ``True`` = a real token (metadt pads
  on the left, so padding is ``False`` at the front); it masks *keys* only;
* ``causal``: query ``i`` sees keys ``j <= i``;
* a query row whose every key is masked (e.g. a left-padded row under the
  causal mask) outputs exactly zero, and its gradients are zero (never NaN);
* ``dropout_p`` is applied to the attention probabilities when ``training``
  is true (inverted dropout, as ``scaled_dot_product_attention`` does);
* ``scale`` defaults to ``1 / sqrt(D)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .dispatch import use_triton

__all__ = ["attention", "attention_torch", "attention_reference", "allowed_mask",
           "MAX_HEAD_DIM", "TRITON_DTYPES"]

MAX_HEAD_DIM = 256  # widest head the Triton kernel takes
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_padding_mask: torch.Tensor | None, dropout_p: float) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            "attention expects q, k, v of one shape [B, H, T, D]; got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if key_padding_mask is not None:
        b, _, t, _ = q.shape
        if key_padding_mask.shape != (b, t):
            raise ValueError(
                f"key_padding_mask must be [B, T] = [{b}, {t}]; got {tuple(key_padding_mask.shape)}"
            )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p}")


def allowed_mask(key_padding_mask: torch.Tensor | None, t: int, causal: bool,
                 device: torch.device) -> torch.Tensor | None:
    """Bool ``[B or 1, 1, T, T]`` mask, ``True`` where query i may attend key j."""
    mask = None
    if causal:
        mask = torch.ones(t, t, dtype=torch.bool, device=device).tril_()[None, None]
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
        mask = kpm if mask is None else (mask & kpm)
    return mask


def attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None, causal: bool = True,
                    dropout_p: float = 0.0, training: bool = True,
                    scale: float | None = None) -> torch.Tensor:
    """PyTorch implementation (``scaled_dot_product_attention``) of :func:`attention`."""
    _check(q, k, v, key_padding_mask, dropout_p)
    t = q.shape[-2]
    p = dropout_p if training else 0.0
    if key_padding_mask is None:
        # Every row sees at least its own key (causal) or all keys: no empty rows.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal, scale=scale)
    mask = allowed_mask(key_padding_mask, t, causal, q.device)  # [B, 1, T, T]
    row_ok = mask.any(dim=-1, keepdim=True)  # [B, 1, T, 1]
    # Let empty rows attend everywhere (finite softmax, finite gradients), then
    # zero their output: the multiplication by zero also zeroes their gradients.
    safe = mask | ~row_ok
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=p, scale=scale)
    return out * row_ok.to(out.dtype)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_padding_mask: torch.Tensor | None = None, causal: bool = True,
                        scale: float | None = None,
                        dropout_keep: torch.Tensor | None = None,
                        dropout_p: float = 0.0) -> torch.Tensor:
    """Explicit float32 softmax attention (for tests); same semantics, no fusion.

    ``dropout_keep`` (bool ``[B, H, T, T]``) applies a given dropout pattern,
    scaled by ``1 / (1 - dropout_p)``.
    """
    _check(q, k, v, key_padding_mask, dropout_p)
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qf, kf, vf = q.float(), k.float(), v.float()
    s = (qf @ kf.transpose(-1, -2)) * scale
    mask = allowed_mask(key_padding_mask, t, causal, q.device)
    if mask is None:
        mask = torch.ones(1, 1, t, t, dtype=torch.bool, device=q.device)
    s = s.masked_fill(~mask, float("-inf"))
    row_ok = mask.any(dim=-1, keepdim=True)
    s = torch.where(row_ok, s, torch.zeros_like(s))
    probs = torch.softmax(s, dim=-1) * row_ok
    if dropout_keep is not None:
        probs = probs * dropout_keep / (1.0 - dropout_p)
    return probs @ vf


def _triton_unsupported(q: torch.Tensor) -> str | None:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (the kernel takes float32, float16, bfloat16)"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head dim {q.shape[-1]} > {MAX_HEAD_DIM}"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None, causal: bool = True,
              dropout_p: float = 0.0, training: bool = True,
              scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention on ``[B, H, T, D]`` tensors; see the module docs.

    Runs the fused Triton kernel (forward and backward) when the dispatch
    point (:func:`metadt.kernels.dispatch.use_triton`, env ``METADT_KERNELS``)
    says so, otherwise :func:`attention_torch`. Returns ``[B, H, T, D]`` in
    the dtype of ``q``.
    """
    _check(q, k, v, key_padding_mask, dropout_p)
    tensors = (q, k, v) if key_padding_mask is None else (q, k, v, key_padding_mask)
    if use_triton(*tensors, unsupported=_triton_unsupported(q)):
        from ._attention_triton import attention_triton

        return attention_triton(q, k, v, key_padding_mask, causal,
                                dropout_p if training else 0.0, scale)
    return attention_torch(q, k, v, key_padding_mask, causal, dropout_p, training, scale)
