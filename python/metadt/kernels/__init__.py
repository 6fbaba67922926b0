"""Fused Triton kernels with PyTorch fallbacks (top-level `kernels/` links here).

Public API:

* :func:`attention` -- fused flash attention (forward + backward) on CUDA,
  ``scaled_dot_product_attention`` elsewhere;
* :func:`best_segments` -- the complementary-prompt segment (highest summed
  per-step error over k steps) per episode or per task, in one kernel launch
  on CUDA, PyTorch elsewhere; float64 sums that choose exactly as the Rust
  store's ``best_segments``;
* :func:`backend` -- which implementation a call would run.

The choice is made in one place, :mod:`metadt.kernels.dispatch`, and can be
forced with ``METADT_KERNELS=triton|torch|auto``. Triton is imported lazily,
only when a Triton kernel actually runs. This package imports nothing else
of metadt.
"""
from __future__ import annotations

from .attention import attention, attention_torch
from .best_segments import (
    NO_SCORE,
    NO_SEGMENT,
    BestSegments,
    best_segments,
    best_segments_torch,
)
from .dispatch import ENV_VAR, backend, triton_available, use_triton

__all__ = [
    "BestSegments",
    "ENV_VAR",
    "NO_SCORE",
    "NO_SEGMENT",
    "attention",
    "attention_torch",
    "backend",
    "best_segments",
    "best_segments_torch",
    "triton_available",
    "use_triton",
]
