"""Complementary-prompt scoring: per-step world-model error, windowed sums, argmax.

For a padded batch of ``N`` trajectories (``pred``, ``target``: ``[N, T, d]``,
true lengths ``lengths``: ``[N]``):

* per-step error ``e[n, t] = sum_c w[c] * |pred[n, t, c] - target[n, t, c]|``
  for ``t < lengths[n]`` (``w`` = ``weights``, all ones by default), 0 after;
* segment score ``S[n, s] = e[n, s] + e[n, s+1] + ... + e[n, s+k-1]`` for
  every start ``s`` with ``start_min <= s <= lengths[n] - k``;
* the best segment: ``index[n] = argmax_s S[n, s]`` (ties -> the earliest
  start) and ``score[n] = S[n, index[n]]``.

A trajectory with ``lengths[n] < start_min + k`` has no segment: its index is
``-1`` and its score ``-inf`` (:data:`NO_SEGMENT`, :data:`NO_SCORE`). The
optional score matrix is ``[N, max(T - k + 1, 0)]`` with ``-inf`` at every
invalid start. Scores are float32 (float64 when the inputs are float64 on the
PyTorch path); indices are int64. Lengths are clamped to ``[0, T]``.

CUDA tensors run one Triton kernel launch (:mod:`._prompt_scores_triton`);
CPU tensors, float64 inputs and trajectories with more than
:data:`MAX_TRITON_WIDTH` starts run :func:`prompt_scores_torch`. Both sum the
error over ``c`` first and then over the window in order ``s, s+1, ...,
s+k-1``, so the two agree to float rounding (1e-5) in score and exactly in
index except for near-ties closer than that rounding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .dispatch import use_triton

__all__ = [
    "NO_SCORE",
    "NO_SEGMENT",
    "PromptScores",
    "PromptScoresWithMatrix",
    "prompt_scores",
    "prompt_scores_torch",
]

NO_SEGMENT = -1
NO_SCORE = float("-inf")
MAX_TRITON_WIDTH = 1 << 16  # segment starts per trajectory that fit one Triton program


class PromptScores(NamedTuple):
    index: torch.Tensor  # [N] int64, -1 = no segment
    score: torch.Tensor  # [N] float, -inf = no segment


class PromptScoresWithMatrix(NamedTuple):
    index: torch.Tensor  # [N] int64, -1 = no segment
    score: torch.Tensor  # [N] float, -inf = no segment
    matrix: torch.Tensor  # [N, max(T - k + 1, 0)] float, -inf = invalid start


def _check(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, k: int,
           start_min: int, weights: torch.Tensor | None) -> None:
    if pred.dim() != 3 or target.shape != pred.shape:
        raise ValueError(
            f"pred and target must be [N, T, d] of one shape; got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}"
        )
    if lengths.shape != (pred.shape[0],):
        raise ValueError(f"lengths must be [N] = [{pred.shape[0]}]; got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor; got {lengths.dtype}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if int(start_min) < 0:
        raise ValueError(f"start_min must be >= 0; got {start_min}")
    if weights is not None and weights.shape != (pred.shape[-1],):
        raise ValueError(f"weights must be [d] = [{pred.shape[-1]}]; got {tuple(weights.shape)}")


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def prompt_scores_torch(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                        k: int, start_min: int, weights: torch.Tensor | None = None,
                        return_matrix: bool = False):
    """PyTorch implementation of :func:`prompt_scores` (any device)."""
    _check(pred, target, lengths, k, start_min, weights)
    k, start_min = int(k), int(start_min)
    n, t, _ = pred.shape
    dt = _score_dtype(pred.dtype)
    dev = pred.device
    lengths = lengths.to(device=dev, dtype=torch.int64).clamp(0, t)
    diff = (pred.to(dt) - target.to(dt)).abs()
    if weights is not None:
        diff = diff * weights.to(device=dev, dtype=dt)
    steps = torch.arange(t, device=dev)
    err = torch.where(steps[None, :] < lengths[:, None], diff.sum(dim=-1), 0.0)  # [N, T]
    width = max(t - k + 1, 0)
    matrix = torch.zeros(n, width, dtype=dt, device=dev)
    if width > 0:
        for j in range(k):
            matrix += err[:, j:j + width]
    starts = torch.arange(width, device=dev)
    valid = (starts[None, :] >= start_min) & (starts[None, :] + k <= lengths[:, None])
    matrix = matrix.masked_fill(~valid, NO_SCORE)
    has = lengths >= start_min + k
    if width > 0:
        best = matrix.max(dim=1).values
        first = torch.where(matrix == best[:, None], starts[None, :], width).min(dim=1).values
    else:
        best = torch.full((n,), NO_SCORE, dtype=dt, device=dev)
        first = torch.zeros(n, dtype=torch.int64, device=dev)
    index = torch.where(has, first, NO_SEGMENT)
    score = torch.where(has, best, NO_SCORE)
    if return_matrix:
        return PromptScoresWithMatrix(index, score, matrix)
    return PromptScores(index, score)


def prompt_scores(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                  k: int, start_min: int, weights: torch.Tensor | None = None,
                  return_matrix: bool = False):
    """Score every length-``k`` segment and pick the best one per trajectory.

    Returns ``PromptScores(index, score)``, or
    ``PromptScoresWithMatrix(index, score, matrix)`` with ``return_matrix``;
    see the module docs for the definitions and the "no segment" sentinels.
    """
    _check(pred, target, lengths, k, start_min, weights)
    tensors = (pred, target, lengths) if weights is None else (pred, target, lengths, weights)
    unsupported = None
    if pred.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        unsupported = f"dtype {pred.dtype} (the kernel takes float32, float16, bfloat16)"
    elif pred.shape[1] - int(k) + 1 > MAX_TRITON_WIDTH:
        unsupported = f"T - k + 1 = {pred.shape[1] - int(k) + 1} > {MAX_TRITON_WIDTH} starts"
    if use_triton(*tensors, unsupported=unsupported):
        from ._prompt_scores_triton import prompt_scores_triton

        return prompt_scores_triton(pred, target, lengths, int(k), int(start_min), weights,
                                    return_matrix)
    return prompt_scores_torch(pred, target, lengths, k, start_min, weights, return_matrix)
