"""Shared pieces of the trainers: input checks, batch conversion, progress, runtime fields."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from metadt.data.dataset import Dataset
from metadt.runtime import batch_to_torch as to_tensors, set_threads  # noqa: F401 (re-exported)

#: Phases of a training step, in order; a step calls its ``timer`` hook with each
#: name when that phase ends (``metadt profile`` times them, docs/profile.md).
STEP_PHASES = ("sample", "h2d", "z", "forward", "backward", "optimizer")


def no_timer(phase: str) -> None:
    """The default phase hook of a training step: does nothing."""


def open_dataset(path, family: str, quality: str, missing_hint: str = "") -> Dataset:
    """Open a dataset and check it belongs to ``family`` and has ``quality`` (one name or
    several joined by ``+``); ``missing_hint`` is appended to a missing-quality error."""
    ds = Dataset.open(path)
    if ds.card.family != family:
        raise ValueError(f"{path}: dataset is of family {ds.card.family!r} but the config is for "
                         f"{family!r} (pick the preset of the dataset's family)")
    try:
        ds.check_quality(quality)
    except ValueError as e:
        raise ValueError(f"{path}: {e}{missing_hint}") from None
    return ds


def check_return_scale(store: Any, scale: float, where: str) -> float:
    """``scale`` if returns-to-go divided by it stay finite in float32 on ``store``: a finite
    ``scale > 0`` with max|reward| x longest episode / scale < float32's max; else a clear
    ``ValueError`` (an RTG of inf would train and evaluate on garbage)."""
    scale = float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: return_scale must be a finite number > 0, got {scale!r}")
    rewards = np.asarray(store.column("rewards"))
    lengths = np.asarray(store.episode_lengths())
    if rewards.size == 0 or lengths.size == 0:
        return scale
    bound = float(np.abs(rewards).max(initial=0.0)) * float(lengths.max())
    limit = float(np.finfo(np.float32).max) / 16  # headroom for prompts and targets
    if not bound / scale < limit:
        raise ValueError(f"{where}: return_scale {scale:g} is too small: returns-to-go up to "
                         f"{bound:.3g} divided by it overflow float32; use a return_scale "
                         f">= {bound / limit:.3g} (or leave it unset for the family's)")
    return scale




def obs_stats(table, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs = table.obs[idx].astype(np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + 1e-6).astype(np.float32)


RUNTIME_FIELDS = frozenset({"device", "num_threads", "log_every", "checkpoint_every", "loggers",
                            "train_eval_every", "train_eval_tasks"})
"""Config fields that say how a run executes, not what it computes: a run may
resume with other values (e.g. on another device or thread count); the runtime
fields of a training run directory (:func:`metadt.train.loop.training_run_dir`)."""


class Progress:
    """tqdm bar (when enabled) showing loss and steps/s."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        self.t0, self.s0 = time.perf_counter(), initial
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def steps_per_s(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.s0) / dt if dt > 0 else 0.0

    def update(self, n: int, **post: Any) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if post:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                      for k, v in post.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
