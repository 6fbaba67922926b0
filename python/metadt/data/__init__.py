"""Data: the trajectory store (Rust core) and its typed Python face.

``TrajectoryStore`` and ``PromptSpec`` are documented in ``docs/store.md``.
"""
from __future__ import annotations

from metadt.data.store import (
    ACTION_PAD,
    FORMAT_VERSION,
    Prefetch,
    PromptSpec,
    TrajectoryStore,
    derive_seed,
    parallel_available,
    step_contexts,
)

__all__ = [
    "ACTION_PAD",
    "FORMAT_VERSION",
    "Prefetch",
    "PromptSpec",
    "TrajectoryStore",
    "derive_seed",
    "parallel_available",
    "step_contexts",
]
