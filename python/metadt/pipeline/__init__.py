"""`metadt run`: collect -> world model -> Meta-DT and baselines -> evaluate -> report.

See `metadt.pipeline.runner` for the stages, the output layout and how a
rerun resumes.
"""
from __future__ import annotations

__all__ = ["run_pipeline"]


def run_pipeline(*args, **kwargs):
    """See `metadt.pipeline.runner.run_pipeline`."""
    from metadt.pipeline.runner import run_pipeline as _run

    return _run(*args, **kwargs)
