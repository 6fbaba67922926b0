"""The complementary ("self-guided") prompt (protocol section 5).

Per-step world-model errors are computed for every step of a store in one
batched pass and attached as a column; the store's prompt sampler enumerates
every k-step segment with start in ``[start_min, T - k]`` (start_min = h), scores
it by the sum of that column, and picks a segment per strategy: ``argmax``
(the paper, default), ``proportional`` (the authors' code), ``random`` or
``last`` (ablations).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from metadt.config.meta_dt import PROMPT_STRATEGIES
from metadt.train.columns import compute_step_errors

if TYPE_CHECKING:
    from metadt._core import PromptStrategy


def attach_step_errors(store, world_model, column: str = "wm_error",
                       batch_size: int = 4096) -> None:
    """Attach the world model's per-step error of every step of ``store`` as ``column``
    (``[num_steps, 1]`` float32): |r^ - r| and/or ||s'^ - s'||_1 on normalized states."""
    err = compute_step_errors(store, world_model, batch_size)
    store.attach_column(column, err.reshape(-1, 1))


def prompt_spec(length: int, score: str | None, strategy: "PromptStrategy", start_min: int) -> dict:
    """Keyword dict for ``sample_windows(prompt=...)`` (the store's PromptSpec fields;
    ``score`` None = all scores 0, enough for ``random`` and ``last``)."""
    if strategy not in PROMPT_STRATEGIES:
        raise ValueError(f"prompt strategy {strategy!r} is not one of {', '.join(PROMPT_STRATEGIES)}")
    return {"length": int(length), "score": score, "strategy": strategy,
            "start_min": int(start_min)}
