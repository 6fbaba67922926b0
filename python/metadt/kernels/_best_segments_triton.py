"""The best complementary-prompt segment per episode or per group, in one Triton launch.

Imported lazily by :func:`metadt.kernels.best_segments` only when the dispatch
point picks Triton; semantics in :mod:`metadt.kernels.best_segments`.

One program per group loops over the group's rows in their given order. For
each row it holds every segment start ``s`` in one block, adds the k shifted
error rows ``e[s + j]`` (``j = 0 .. k-1``, in that order, in float64, as the
Rust scorer sums them; rows at or past the row's length are never read), masks
starts outside the short-episode rule (``[start_min, length - k]``, ``[0,
length - k]`` when ``length < start_min + k``, 0 when ``length < k``) with
``-inf``, and reduces the maximum and its earliest start;
the group keeps the first row with the highest score (strict ``>``). Groups
without a segment get ``-1`` / ``-1`` / ``-inf``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .best_segments import MAX_TRITON_WIDTH, BestSegments, segment_width

__all__ = ["best_segments_triton"]


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


@triton.jit
def _best_segments_kernel(E, LEN, ORDER, OFF, EP, START, SCORE,
                          T, k, start_min, width,
                          BLOCK_S: tl.constexpr):
    # One program per group; its rows ORDER[OFF[g]:OFF[g+1]] in their given order.
    g = tl.program_id(0)
    lo = tl.load(OFF + g)
    hi = tl.load(OFF + g + 1)
    offs_s = tl.arange(0, BLOCK_S)
    best_score = tl.full([], float("-inf"), tl.float64)
    best_row = tl.full([], -1, tl.int64)
    best_start = tl.full([], -1, tl.int64)
    for m in range(lo, hi):
        row = tl.load(ORDER + m)
        length = tl.load(LEN + row).to(tl.int32)
        base = row * T
        score = tl.zeros([BLOCK_S], tl.float64)
        for j in range(0, k):  # e[s] + e[s+1] + ... in float64, as the Rust scorer sums
            rows = offs_s + j
            e = tl.load(E + base + rows, mask=rows < length, other=0.0)
            score += e.to(tl.float64)
        lo_s = tl.where(length >= start_min + k, start_min, 0)  # the short-episode rule
        span = tl.maximum(length, k)
        valid = (offs_s >= lo_s) & (offs_s + k <= span) & (offs_s < width)
        score = tl.where(valid, score, float("-inf"))
        top = tl.max(score, axis=0)
        first = tl.min(tl.where(valid & (score == top), offs_s, BLOCK_S), axis=0)
        better = (length >= 1) & (top > best_score)  # strict: earliest row wins
        best_score = tl.where(better, top, best_score)
        best_row = tl.where(better, row, best_row)
        best_start = tl.where(better, first.to(tl.int64), best_start)
    tl.store(EP + g, best_row)
    tl.store(START + g, best_start)
    tl.store(SCORE + g, best_score)


def best_segments_triton(errors: torch.Tensor, lengths: torch.Tensor, k: int, start_min: int,
                         keys: torch.Tensor, order: torch.Tensor,
                         offsets: torch.Tensor) -> BestSegments:
    """Triton implementation of :func:`metadt.kernels.best_segments` (inputs checked,
    lengths clamped, rows grouped by :func:`metadt.kernels.best_segments._grouping`)."""
    n, t = errors.shape
    dev = errors.device
    g = len(keys)
    width = segment_width(t, k)
    if width > MAX_TRITON_WIDTH:  # the dispatch point routes these to PyTorch
        raise ValueError(f"T - k + 1 = {width} > {MAX_TRITON_WIDTH} starts")
    episode = torch.full((g,), -1, dtype=torch.int64, device=dev)
    start = torch.full((g,), -1, dtype=torch.int64, device=dev)
    score = torch.full((g,), float("-inf"), dtype=torch.float64, device=dev)
    if g > 0 and n > 0 and width > 0:
        block_s = max(16, _next_pow2(width))
        _best_segments_kernel[(g,)](
            errors.contiguous(), lengths.contiguous(), order.contiguous(), offsets.contiguous(),
            episode, start, score, t, int(k), int(start_min), width,
            BLOCK_S=block_s, num_warps=4 if block_s <= 1024 else 8,
        )
    return BestSegments(keys, episode, start, score)
