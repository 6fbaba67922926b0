"""The typed Python face of the Rust trajectory store.

`TrajectoryStore` is the native class `metadt._core.TrajectoryStore` itself
(no wrapper, so every call goes straight to Rust); this module adds
`PromptSpec` (what `sample_windows(prompt=...)` and `prefetch` accept),
`derive_seed`, and small helpers. See ``docs/store.md`` for the full API.

The store is the one owner of the batch format: training windows
(`sample_windows`), the sequential pass over every step (`iter_steps`),
prompts of given segments (`prompt_segments`) and the policy input of live
episodes (`live_windows`) are all built in Rust. Their key/shape schemas are
the ``TypedDict``s of ``metadt/_core.pyi`` (``WindowBatch``, ``TransitionBatch``,
``StepBatch``, ``PromptBatch``, ...), and the prompt strategy names are
``PROMPT_STRATEGIES`` (``Literal`` ``PromptStrategy``), read from the Rust enum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from metadt._core import (
    ACTION_PAD,
    ANCHORS,
    FORMAT_VERSION,
    PROMPT_STRATEGIES,
    Prefetch,
    StepIter,
    TrajectoryStore,
    derive_seed,
    parallel_available,
    segment_range,
)
from metadt.layout import step_contexts

if TYPE_CHECKING:
    from metadt._core import PromptStrategy

__all__ = [
    "ACTION_PAD",
    "ANCHORS",
    "FORMAT_VERSION",
    "PROMPT_STRATEGIES",
    "Prefetch",
    "PromptSpec",
    "StepIter",
    "TrajectoryStore",
    "derive_seed",
    "parallel_available",
    "segment_range",
    "step_contexts",
]


@dataclass(frozen=True)
class PromptSpec:
    """How `sample_windows` picks the k-step prompt segment of each sample.

    - ``length``: the prompt length k (>= 1).
    - ``score``: name of an attached per-step column (values >= 0; a column of
      width d > 1 is summed over d) scoring the steps, or None (all scores 0).
    - ``strategy``: ``argmax`` (highest summed score, ties: earliest start),
      ``proportional`` (start drawn with probability proportional to the
      summed score; uniform if all are 0), ``random`` (uniform start) or
      ``last`` (start T - k).
    - ``start_min``: smallest start (the context length h); None = the
      ``context`` of the `sample_windows` call. Candidate starts are
      [start_min, T - k], or [0, T - k] when T < start_min + k; an episode
      shorter than k is used whole, left-padded (the short-episode rule,
      `segment_range`).
    - ``pool``: optional episode indices the prompt episode is drawn from
      (always restricted to the window's task).
    """

    length: int
    score: Optional[str] = None
    strategy: PromptStrategy = "argmax"
    start_min: Optional[int] = None
    pool: Optional[Sequence[int]] = None

    def __post_init__(self) -> None:
        if int(self.length) < 1:
            raise ValueError(f"PromptSpec.length must be >= 1, got {self.length}")
        if self.strategy not in PROMPT_STRATEGIES:
            raise ValueError(f"PromptSpec.strategy must be one of {', '.join(PROMPT_STRATEGIES)}, got {self.strategy!r}")
        if self.start_min is not None and int(self.start_min) < 0:
            raise ValueError(f"PromptSpec.start_min must be >= 0, got {self.start_min}")
