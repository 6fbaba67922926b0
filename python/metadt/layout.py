"""Views of the store's batch layout (NumPy arrays or torch tensors), below both
`metadt.data` (the store's Python face) and `metadt.models` (which unfold a
batch's contexts): the one definition of how a window's ``ctx_*`` keys map to
per-position h-step contexts. Imports nothing of metadt (tests/test_layers.py).
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


__all__ = ["step_contexts"]
