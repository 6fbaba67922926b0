"""Fused Triton kernels with PyTorch fallbacks (top-level `kernels/` links here).

Public API:

* :func:`attention` -- fused flash attention (forward + backward) on CUDA,
  ``scaled_dot_product_attention`` elsewhere;
* :func:`prompt_scores` -- complementary-prompt segment scoring in one kernel
  launch on CUDA, PyTorch elsewhere;
* :func:`best_segments` -- the best segment per episode or per task from
  per-step errors (what the pipeline uses on the device), float64 sums that
  choose exactly as the Rust store's ``best_segments``;
* :func:`backend` -- which implementation a call would run.

The choice is made in one place, :mod:`metadt.kernels.dispatch`, and can be
forced with ``METADT_KERNELS=triton|torch|auto``. Triton is imported lazily,
only when a Triton kernel actually runs. This package imports nothing else
of metadt.
"""
from __future__ import annotations

from .attention import attention, attention_torch
from .dispatch import ENV_VAR, backend, triton_available, use_triton
from .prompt_scores import (
    NO_SCORE,
    BestSegments,
    NO_SEGMENT,
    PromptScores,
    PromptScoresWithMatrix,
    best_segments,
    best_segments_torch,
    prompt_scores,
    prompt_scores_torch,
)

__all__ = [
    "BestSegments",
    "ENV_VAR",
    "NO_SCORE",
    "NO_SEGMENT",
    "PromptScores",
    "PromptScoresWithMatrix",
    "attention",
    "attention_torch",
    "backend",
    "best_segments",
    "best_segments_torch",
    "prompt_scores",
    "prompt_scores_torch",
    "triton_available",
    "use_triton",
]
