"""Complementary-prompt scoring: the highest-error k-step segment per episode or per task.

For per-step errors ``errors`` ``[N, T]`` (true lengths ``lengths`` ``[N]``),
a segment of row ``n`` starts at ``s`` in ``[start_min, lengths[n] - k]`` —
in ``[0, lengths[n] - k]`` when ``lengths[n] < start_min + k``, and at 0 (the
whole row) when ``lengths[n] < k``: the store's one short-episode rule
(``metadt.data.segment_range``; restated here because kernels import nothing
of metadt, and tested against the store) — and scores
``errors[n, s] + ... + errors[n, s+k-1]`` (steps past the row's length count
0), summed in float64 in that order, exactly as the Rust store scores an error column
(``TrajectoryStore.best_segments`` / ``segment_scores``): on the same errors
both choose the same segments and give bit-identical scores.

CUDA tensors run one Triton kernel launch (:mod:`._best_segments_triton`);
CPU tensors, float64 inputs and rows with more than :data:`MAX_TRITON_WIDTH`
starts run :func:`best_segments_torch`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .dispatch import use_triton

__all__ = [
    "BestSegments",
    "NO_SCORE",
    "NO_SEGMENT",
    "best_segments",
    "best_segments_torch",
]

NO_SEGMENT = -1
NO_SCORE = float("-inf")
MAX_TRITON_WIDTH = 1 << 16  # segment starts per row that fit one Triton program


class BestSegments(NamedTuple):
    keys: torch.Tensor  # [G] int64: group keys ascending (per episode: 0..N-1)
    episode: torch.Tensor  # [G] int64: row of the chosen segment, -1 = no segment
    start: torch.Tensor  # [G] int64: its start, -1 = no segment
    score: torch.Tensor  # [G] float64: its summed error, -inf = no segment


def _check_best(errors: torch.Tensor, lengths: torch.Tensor, k: int, start_min: int,
                groups: torch.Tensor | None) -> None:
    if errors.dim() != 2:
        raise ValueError(f"errors must be [N, T]; got {tuple(errors.shape)}")
    if not errors.is_floating_point():
        raise ValueError(f"errors must be a float tensor; got {errors.dtype}")
    n = errors.shape[0]
    for name, x in (("lengths", lengths), ("groups", groups)):
        if x is None:
            continue
        if x.shape != (n,):
            raise ValueError(f"{name} must be [N] = [{n}]; got {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor; got {x.dtype}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if int(start_min) < 0:
        raise ValueError(f"start_min must be >= 0; got {start_min}")


def _valid_steps(errors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    t = errors.shape[1]
    return torch.arange(t, device=errors.device)[None, :] < lengths[:, None]


def _check_finite(errors: torch.Tensor, lengths: torch.Tensor) -> None:
    # Padding past a row's length is never read, so it may hold anything.
    bad = ~torch.isfinite(errors) & _valid_steps(errors, lengths)
    if bool(bad.any()):  # one host sync per call, not per row
        n, t = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"errors[{n}, {t}] = {float(errors[n, t])} is not finite "
                         "(segment scores need finite per-step errors)")


def _grouping(n: int, groups: torch.Tensor | None, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keys [G], order [N]: rows sorted by key (stable), offsets [G+1] into order)."""
    if groups is None:
        rows = torch.arange(n, dtype=torch.int64, device=device)
        return rows, rows, torch.arange(n + 1, dtype=torch.int64, device=device)
    g = groups.to(device=device, dtype=torch.int64)
    _, order = torch.sort(g, stable=True)
    keys, counts = torch.unique_consecutive(g[order], return_counts=True)
    offsets = torch.zeros(len(keys) + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    return keys, order, offsets


def segment_width(t: int, k: int) -> int:
    """Number of start positions a [N, t] error block needs (a row shorter than k has one)."""
    return max(t - k + 1, 1)


def best_segments_torch(errors: torch.Tensor, lengths: torch.Tensor, k: int, start_min: int,
                        groups: torch.Tensor | None = None) -> BestSegments:
    """PyTorch implementation of :func:`best_segments` (any device)."""
    _check_best(errors, lengths, k, start_min, groups)
    n, t = errors.shape
    k, start_min = int(k), min(int(start_min), t + 1)  # a larger start_min admits the same starts
    dev = errors.device
    lengths = lengths.to(device=dev, dtype=torch.int64).clamp(0, t)
    _check_finite(errors, lengths)
    keys, order, offsets = _grouping(n, groups, dev)
    width = segment_width(t, k)
    err = torch.where(_valid_steps(errors, lengths), errors.to(torch.float64), 0.0)
    if t < width + k - 1:  # rows shorter than k: zero steps past their end
        err = torch.nn.functional.pad(err, (0, width + k - 1 - t))
    sums = torch.zeros(n, width, dtype=torch.float64, device=dev)
    for j in range(k):  # e[s] + e[s+1] + ... in this order, in float64
        sums += err[:, j:j + width]
    starts = torch.arange(width, device=dev)
    # the short-episode rule: starts [start_min, T-k], [0, T-k] if T < start_min + k, 0 if T < k
    lo = torch.where(lengths >= start_min + k, start_min, 0)
    span = lengths.clamp(min=k)
    valid = (starts[None, :] >= lo[:, None]) & (starts[None, :] + k <= span[:, None])
    sums = sums.masked_fill(~valid, NO_SCORE)
    best = sums.max(dim=1).values
    first = torch.where(sums == best[:, None], starts[None, :], width).min(dim=1).values
    has = lengths >= 1
    best = torch.where(has, best, NO_SCORE)
    g = len(keys)
    # Per group: the highest score; ties -> the earliest row (rows in their given order).
    member_group = torch.repeat_interleave(torch.arange(g, device=dev), offsets.diff())
    b_sorted, h_sorted = best[order], has[order]
    top = torch.full((g,), NO_SCORE, dtype=torch.float64, device=dev)
    top = top.scatter_reduce(0, member_group, b_sorted, reduce="amax", include_self=True)
    pos = torch.arange(n, device=dev)
    hit = h_sorted & (b_sorted == top[member_group])
    first_pos = torch.full((g,), n, dtype=torch.int64, device=dev)
    first_pos = first_pos.scatter_reduce(0, member_group, torch.where(hit, pos, n),
                                         reduce="amin", include_self=True)
    found = first_pos < n
    safe = first_pos.clamp(max=max(n - 1, 0))
    row = order[safe] if n > 0 else first_pos
    episode = torch.where(found, row, NO_SEGMENT)
    start = torch.where(found, first[row] if n > 0 else first_pos, NO_SEGMENT)
    score = torch.where(found, top, NO_SCORE)
    return BestSegments(keys, episode, start, score)


def best_segments(errors: torch.Tensor, lengths: torch.Tensor, k: int, start_min: int,
                  groups: torch.Tensor | None = None) -> BestSegments:
    """The highest-error length-``k`` segment per episode (row) or per group of rows.

    ``errors`` ``[N, T]`` holds per-step errors (steps at or past
    ``lengths[n]`` are ignored; the others must be finite). A row's segments
    start at ``s`` in ``[start_min, lengths[n] - k]`` (the short-episode rule:
    ``[0, lengths[n] - k]`` when ``lengths[n] < start_min + k``, the whole row
    at 0 when ``lengths[n] < k``; only an empty row has none); a segment's score is
    ``errors[n, s] + ... + errors[n, s+k-1]`` summed in float64 in that order,
    exactly as the Rust store sums an error column (``best_segments``), so the
    two choose the same segments on the same errors. Ties go to the earliest
    row (in the given order), then the earliest start. ``groups`` ``[N]``
    (e.g. task ids): one segment per distinct key, keys ascending; ``None``:
    one per row. A group with no segment gets ``episode = start = -1`` and
    ``score = -inf``.

    Returns ``BestSegments(keys, episode, start, score)``. CUDA tensors run one
    Triton launch (one program per group, looping over its rows); elsewhere
    :func:`best_segments_torch`.
    """
    _check_best(errors, lengths, k, start_min, groups)
    tensors = (errors, lengths) if groups is None else (errors, lengths, groups)
    unsupported = None
    if errors.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        unsupported = f"dtype {errors.dtype} (the kernel takes float32, float16, bfloat16)"
    elif errors.shape[1] - int(k) + 1 > MAX_TRITON_WIDTH:
        unsupported = f"T - k + 1 = {errors.shape[1] - int(k) + 1} > {MAX_TRITON_WIDTH} starts"
    if use_triton(*tensors, unsupported=unsupported):
        from ._best_segments_triton import best_segments_triton

        n, t = errors.shape
        lengths = lengths.to(device=errors.device, dtype=torch.int64).clamp(0, t)
        _check_finite(errors, lengths)
        keys, order, offsets = _grouping(n, groups, errors.device)
        return best_segments_triton(errors, lengths, int(k), min(int(start_min), t + 1), keys,
                                    order, offsets)
    return best_segments_torch(errors, lengths, k, start_min, groups)
