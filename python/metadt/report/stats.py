"""Aggregate statistics over seeds x tasks with rliable (Agarwal et al., 2021).

Scores are normalized returns (random 0, dataset max 1), one per (seed, task):
the mean over that task's evaluation episodes. Per (method, setting) a score
matrix ``[seeds, tasks]`` feeds rliable: the interquartile mean (IQM) and the
mean with stratified-bootstrap 95% confidence intervals (runs resampled within
each task), and the probability of improvement P(X > Y) of one row over
another (Mann-Whitney per task over the two rows' runs, averaged over tasks)
with its bootstrap interval. Only tasks every seed of both rows has are used.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterable, Sequence

import numpy as np


def load_rliable() -> tuple[Any, Any]:
    """``(rliable.library, rliable.metrics)``.

    rliable's bootstrap needs ``arch`` < 8, whose import fails under pandas >= 3
    (``pandas.util._decorators.deprecate_kwarg`` gained a leading warning-class
    argument). If that import fails, wrap the function so arch's two-argument calls
    still work (warning class FutureWarning, what they meant) and import again.
    """
    try:
        from rliable import library, metrics
        return library, metrics
    except TypeError as e:
        if "deprecate_kwarg" not in str(e) and "new_arg_name" not in str(e):
            raise
    import pandas.util._decorators as dec

    orig = dec.deprecate_kwarg
    if not getattr(orig, "_metadt_compat", False):
        def compat(*args: Any, **kw: Any) -> Any:
            if args and isinstance(args[0], str):
                return orig(FutureWarning, *args, **kw)
            return orig(*args, **kw)
        compat._metadt_compat = True  # type: ignore[attr-defined]
        dec.deprecate_kwarg = compat
    for name in [m for m in sys.modules if m == "arch" or m.startswith("arch.")
                 or m.startswith("rliable")]:
        del sys.modules[name]
    from rliable import library, metrics
    return library, metrics


def score_matrix(rows: Iterable[dict[str, Any]], method: str, setting: str,
                 splits: Sequence[str], tasks: Sequence[int] | None = None
                 ) -> tuple[np.ndarray, list[int], list[int]]:
    """Normalized scores ``[seeds, tasks]`` of one row over the tasks of `splits` that
    every seed has (restricted to `tasks` if given): (matrix, seeds, tasks)."""
    vals: dict[int, dict[int, float]] = {}
    for r in rows:
        if r["method"] == method and r["setting"] == setting and r["split"] in splits:
            v = r.get("normalized")
            if v is not None and math.isfinite(v):
                vals.setdefault(int(r["seed"]), {})[int(r["task"])] = float(v)
    if not vals:
        return np.zeros((0, 0)), [], []
    seeds = sorted(vals)
    common = set.intersection(*(set(v) for v in vals.values()))
    if tasks is not None:
        common &= {int(t) for t in tasks}
    ts = sorted(common)
    return np.array([[vals[s][t] for t in ts] for s in seeds]).reshape(len(seeds), len(ts)), seeds, ts


def _rng(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def _estimates(rly: Any, data: dict[str, Any], func: Any, reps: int, seed: int) -> tuple:
    """`rliable.library.get_interval_estimates` (arch's RandomState deprecation silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(data, func, reps=reps, random_state=_rng(seed))


def poi_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's probability of improvement computed by counting pairs: per task the
    Mann-Whitney U of x over y (pairs with x > y, plus half the ties) over n_x n_y,
    averaged over tasks. Equal to `rliable.metrics.probability_of_improvement` (tested)
    and ~1000x faster, so the bootstrap uses it."""
    gt = (x[:, None, :] > y[None, :, :]).mean((0, 1))
    eq = (x[:, None, :] == y[None, :, :]).mean((0, 1))
    return float((gt + 0.5 * eq).mean())


def interval_estimates(rows: list[dict[str, Any]], keys: Sequence[tuple[str, str]],
                       splits: Sequence[str], reps: int = 2000, seed: int = 0
                       ) -> list[dict[str, Any]]:
    """IQM and mean of each (method, setting) with 95% stratified-bootstrap intervals."""
    rly, metrics = load_rliable()
    out = []
    for m, s in keys:
        mat, seeds, tasks = score_matrix(rows, m, s, splits)
        if mat.size == 0:
            continue
        func = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
        pt, ci = _estimates(rly, {"x": mat}, func, reps, seed)
        out.append({"method": m, "setting": s, "iqm": float(pt["x"][0]),
                    "iqm_ci": [float(ci["x"][0, 0]), float(ci["x"][1, 0])],
                    "mean": float(pt["x"][1]),
                    "mean_ci": [float(ci["x"][0, 1]), float(ci["x"][1, 1])],
                    "seeds": seeds, "tasks": len(tasks), "splits": list(splits)})
    return out


def improvement(rows: list[dict[str, Any]], x: tuple[str, str], y: tuple[str, str],
                splits: Sequence[str], reps: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """P(X > Y) over the tasks both rows have (rliable), with its 95% bootstrap interval."""
    rly, metrics = load_rliable()
    _, _, tx = score_matrix(rows, *x, splits)
    _, _, ty = score_matrix(rows, *y, splits)
    common = sorted(set(tx) & set(ty))
    if not common:
        return None
    a, sa, _ = score_matrix(rows, *x, splits, common)
    b, sb, _ = score_matrix(rows, *y, splits, common)
    func = lambda p, q: np.array([poi_pairs(p, q)])  # noqa: E731
    _, ci = _estimates(rly, {"xy": (a, b)}, func, reps, seed)
    return {"x": list(x), "y": list(y),
            "probability": float(metrics.probability_of_improvement(a, b)),
            "ci": [float(ci["xy"][0, 0]), float(ci["xy"][1, 0])],
            "tasks": len(common), "seeds_x": sa, "seeds_y": sb, "splits": list(splits)}


def drop(rows: list[dict[str, Any]], base: tuple[str, str], diag: tuple[str, str],
         splits: Sequence[str], reps: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Mean normalized score of `base` minus that of `diag` (same method, an input
    replaced), over the (seed, task) pairs both have, with a 95% bootstrap interval."""
    rly, _ = load_rliable()
    a, sa, ta = score_matrix(rows, *base, splits)
    b, sb, tb = score_matrix(rows, *diag, splits)
    seeds = sorted(set(sa) & set(sb))
    tasks = sorted(set(ta) & set(tb))
    if not seeds or not tasks:
        return None
    a = a[np.ix_([sa.index(s) for s in seeds], [ta.index(t) for t in tasks])]
    b = b[np.ix_([sb.index(s) for s in seeds], [tb.index(t) for t in tasks])]
    func = lambda d: np.array([d.mean()])  # noqa: E731
    pt, ci = _estimates(rly, {"d": a - b}, func, reps, seed)
    return {"base": list(base), "diagnostic": list(diag), "base_mean": float(a.mean()),
            "diagnostic_mean": float(b.mean()), "drop": float(pt["d"][0]),
            "ci": [float(ci["d"][0, 0]), float(ci["d"][1, 0])], "seeds": seeds,
            "tasks": len(tasks), "splits": list(splits)}
