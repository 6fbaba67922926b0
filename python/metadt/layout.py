"""Views of the store's batch layout (NumPy arrays or torch tensors), below both
`metadt.data` (the store's Python face) and `metadt.models` (which unfold a
batch's contexts): the one definition of how a window's ``ctx_*`` keys map to
per-position h-step contexts, and of the same contexts where the policy's or
the world model's input is built on a device instead of by the store
(`metadt.train.device_scoring`: whole episodes, or steps of a flat column
store). Imports nothing of metadt (tests/test_layers.py).

The rule, everywhere: step t's context is the h transitions strictly before it
in its episode, oldest first, left-padded with zeros (mask False) where the
episode starts less than h steps before t.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def step_contexts(ctx: Any, h: int) -> Any:
    """The h-step context of every window position, as a view (no copy).

    ``ctx`` is a ``ctx_*`` array of a `sample_windows(..., context_len=h)` batch,
    shape [B, K+h, ...] (NumPy array or torch tensor). Returns [B, K, h, ...]:
    entry [:, j] is ``ctx[:, j:j+h]``, the h transitions strictly before window
    position j, oldest first (for torch this is ``ctx.unfold(1, h, 1)``).
    """
    h = int(h)
    if h < 1 or ctx.shape[1] <= h:
        raise ValueError(f"step_contexts: need 1 <= h < ctx.shape[1], got h={h} for shape {tuple(ctx.shape)}")
    K = ctx.shape[1] - h
    if hasattr(ctx, "unfold"):  # torch.Tensor
        return ctx.unfold(1, h, 1)[:, :K].movedim(-1, 2)
    from numpy.lib.stride_tricks import sliding_window_view

    return np.moveaxis(sliding_window_view(np.asarray(ctx), h, axis=1)[:, :K], -1, 2)


def episode_contexts(x: Any, h: int) -> Any:
    """The h-step context of every step of whole episodes: ``x`` [N, T, ...] (NumPy
    array or torch tensor) -> [N, T, h, ...], zeros before each episode's start.

    The same as the ``ctx_*`` columns of `gather_steps(steps, h)` for steps
    ``0..T-1`` of each episode: :func:`step_contexts` of the episode left-padded by
    h zero steps (a copy of ``x`` with h more rows; the result is a view of it).
    """
    h = int(h)
    if h < 1:
        raise ValueError(f"episode_contexts: need h >= 1, got {h}")
    if hasattr(x, "unfold"):  # torch.Tensor
        import torch

        padded = torch.cat([x.new_zeros((x.shape[0], h, *x.shape[2:])), x], dim=1)
    else:
        x = np.asarray(x)
        padded = np.concatenate([np.zeros((x.shape[0], h, *x.shape[2:]), x.dtype), x], axis=1)
    return step_contexts(padded, h)


def episode_context_mask(t: int, h: int, like: Any = None) -> Any:
    """[T, h] bool: which context slots of :func:`episode_contexts` hold a real step
    (slot j of step t is step t - h + j; real when >= 0). A torch tensor on
    ``like``'s device when ``like`` is a tensor, else a NumPy array."""
    t, h = int(t), int(h)
    if hasattr(like, "unfold"):
        import torch

        steps = torch.arange(t, device=like.device)
        offs = torch.arange(h, device=like.device) - h
    else:
        steps, offs = np.arange(t), np.arange(h) - h
    return (steps[:, None] + offs[None, :]) >= 0


def context_index(idx: Any, ep_start: Any, h: int) -> tuple[Any, Any]:
    """Rows of the h-step contexts of steps of a flat column store (every episode's
    steps contiguous, as the store's columns are): ``idx`` [n] global step rows,
    ``ep_start`` [n] the first row of each one's episode. Returns ``(rows, valid)``,
    both [n, h]: slot j is row ``idx - h + j`` when it lies in the episode
    (``valid``), else row 0 with ``valid`` False (gather, then zero where invalid:
    the ``ctx_*`` layout of `gather_steps(idx, h)`). NumPy or torch, like ``idx``."""
    h = int(h)
    if h < 1:
        raise ValueError(f"context_index: need h >= 1, got {h}")
    if hasattr(idx, "unfold"):
        import torch

        rows = idx[:, None] + (torch.arange(h, device=idx.device) - h)[None, :]
        valid = rows >= ep_start[:, None]
        return torch.where(valid, rows, 0), valid
    idx, ep_start = np.asarray(idx, dtype=np.int64), np.asarray(ep_start, dtype=np.int64)
    rows = idx[:, None] + (np.arange(h) - h)[None, :]
    valid = rows >= ep_start[:, None]
    return np.where(valid, rows, 0), valid


__all__ = ["context_index", "episode_context_mask", "episode_contexts", "step_contexts"]
