"""Reports from finished runs: results.json, results.md and PNG plots.

`build_report(inputs, out_dir)` (in `metadt.report.build`) reads the
``eval.json`` files of runs or pipeline directories and the runs'
``metrics.jsonl``; `metadt report RUN...` is its command.
"""
from __future__ import annotations

__all__ = ["build_report"]


def build_report(*args, **kwargs):
    """See `metadt.report.build.build_report`."""
    from metadt.report.build import build_report as _build

    return _build(*args, **kwargs)
