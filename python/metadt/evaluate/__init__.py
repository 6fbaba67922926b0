"""Zero-shot and few-shot evaluation of trained policies (protocol sections 6-7).

- `history`: live per-env histories -> batches in the `sample_windows` layout;
- `rollout`: all tasks stepped together through a vector env, batched through the model;
- `few_shot`: prompts from the agent's own trajectories (or, for Prompt-DT, expert data);
- `evaluator`: the settings of each method, `evaluate_run` for a finished run;
- `metrics`: per-task rows, normalized scores, mean ± std over tasks and seeds.
"""
from __future__ import annotations

__all__ = ["evaluate_run"]


def evaluate_run(*args, **kwargs):
    """See `metadt.evaluate.evaluator.evaluate_run`."""
    from metadt.evaluate.evaluator import evaluate_run as _run

    return _run(*args, **kwargs)
