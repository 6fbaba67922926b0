"""Complementary-prompt scoring in one Triton launch (error, windowed sums, argmax).

Imported lazily by :func:`metadt.kernels.prompt_scores` only when the
dispatch point picks Triton; semantics in :mod:`metadt.kernels.prompt_scores`.

One program per trajectory ``n`` holds every segment start ``s`` of that
trajectory in one block. For each window offset ``j = 0 .. k-1`` it loads the
rows ``s + j`` (``d`` in chunks of ``BLOCK_D``), reduces the weighted absolute
error over ``d`` and adds it to the running segment score; rows at or past the
trajectory's length are never read. The rows are re-read ``k`` times (k is 3
or 5 in the paper; the re-reads hit L1/L2) so the score is accumulated in the
same order as the PyTorch path (``e[s] + e[s+1] + ...``), without a prefix-sum
difference that would cost precision. Invalid starts become ``-inf``; the
maximum and its earliest index come from block reductions, and rows without a
segment get ``-1`` / ``-inf``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import interpreter_enabled
from .prompt_scores import MAX_TRITON_WIDTH, BestSegments, PromptScores, PromptScoresWithMatrix

__all__ = ["best_segments_triton", "prompt_scores_triton"]


@triton.jit
def _prompt_scores_kernel(P, G, W, LEN, MAT, IDX, SCORE,
                          T, d, k, start_min, width,
                          HAS_W: tl.constexpr, WRITE_MAT: tl.constexpr,
                          BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    n = tl.program_id(0)
    length = tl.load(LEN + n).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    base = n.to(tl.int64) * T * d
    offs_s = tl.arange(0, BLOCK_S)
    score = tl.zeros([BLOCK_S], tl.float32)
    for j in range(0, k):
        rows = offs_s + j
        row_ok = rows < length
        err = tl.zeros([BLOCK_S], tl.float32)
        for c0 in range(0, d, BLOCK_D):
            cols = c0 + tl.arange(0, BLOCK_D)
            col_ok = cols < d
            mask = row_ok[:, None] & col_ok[None, :]
            off = base + rows[:, None] * d + cols[None, :]
            p = tl.load(P + off, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(G + off, mask=mask, other=0.0).to(tl.float32)
            a = tl.abs(p - g)
            if HAS_W:
                w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
                a = a * w[None, :]
            err += tl.sum(a, axis=1)
        score += err
    valid = (offs_s >= start_min) & (offs_s + k <= length) & (offs_s < width)
    score = tl.where(valid, score, float("-inf"))
    if WRITE_MAT:
        tl.store(MAT + n.to(tl.int64) * width + offs_s, score, mask=offs_s < width)
    best = tl.max(score, axis=0)
    first = tl.min(tl.where(score == best, offs_s, BLOCK_S), axis=0)
    has = length >= start_min + k
    tl.store(IDX + n, tl.where(has, first, -1).to(tl.int64))
    tl.store(SCORE + n, tl.where(has, best, float("-inf")))


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def prompt_scores_triton(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
                         k: int, start_min: int, weights: torch.Tensor | None = None,
                         return_matrix: bool = False):
    """Triton implementation of :func:`metadt.kernels.prompt_scores` (inputs already checked)."""
    n, t, d = pred.shape
    dev = pred.device
    width = max(t - k + 1, 0)
    if width > MAX_TRITON_WIDTH:  # the dispatch point routes these to PyTorch
        raise ValueError(f"T - k + 1 = {width} > {MAX_TRITON_WIDTH} starts")
    index = torch.empty(n, dtype=torch.int64, device=dev)
    score = torch.empty(n, dtype=torch.float32, device=dev)
    matrix = torch.empty(n, width, dtype=torch.float32, device=dev) if return_matrix else score
    if n > 0:
        pred = pred.contiguous()
        target = target.contiguous()
        lengths = lengths.to(device=dev).contiguous()
        w = pred if weights is None else weights.to(device=dev).contiguous()
        block_s = max(16, _next_pow2(max(width, 1)))
        if interpreter_enabled():
            block_d = max(1, _next_pow2(d))
        else:  # keep the [BLOCK_S, BLOCK_D] tile around 4K elements per program
            block_d = max(1, min(_next_pow2(d), max(1, 4096 // block_s)))
        num_warps = 4 if block_s <= 1024 else 8
        _prompt_scores_kernel[(n,)](
            pred, target, w, lengths, matrix, index, score,
            t, d, int(k), int(start_min), width,
            HAS_W=weights is not None, WRITE_MAT=bool(return_matrix),
            BLOCK_S=block_s, BLOCK_D=block_d, num_warps=num_warps,
            # no FMA contraction: w * |p - g| rounds as in the PyTorch path
            enable_fp_fusion=False,
        )
    if return_matrix:
        return PromptScoresWithMatrix(index, score, matrix)
    return PromptScores(index, score)


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
        valid = (offs_s >= start_min) & (offs_s + k <= length) & (offs_s < width)
        score = tl.where(valid, score, float("-inf"))
        top = tl.max(score, axis=0)
        first = tl.min(tl.where(valid & (score == top), offs_s, BLOCK_S), axis=0)
        better = (length >= start_min + k) & (top > best_score)  # strict: earliest row wins
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
    lengths clamped, rows grouped by :func:`metadt.kernels.prompt_scores._grouping`)."""
    n, t = errors.shape
    dev = errors.device
    g = len(keys)
    width = max(t - k + 1, 0)
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
