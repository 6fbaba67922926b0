"""Build a report from finished evaluations: results.json, results.md and PNG plots.

Inputs are run directories, pipeline output directories or ``eval.json``
files; every ``eval.json`` found under an input belongs to that input's
group. One group gives one report; several groups are also compared side by
side (one column per group). Nothing is recomputed: every number comes from
the raw episode returns stored in the ``eval.json`` files (see
`metadt.evaluate.metrics` for the aggregation), and the learning curves from
the runs' ``metrics.jsonl``.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any, Iterable

from metadt.provenance import provenance
from metadt.evaluate.evaluator import EVAL_FILE, EVAL_FORMAT
import numpy as np

from metadt.evaluate.metrics import METHOD_LABELS, find, label, summarize, task_rows
from metadt.fileio import atomic_write_json, atomic_write_text, read_json
from metadt.report import plots
from metadt.report.tables import compare_table, fmt, per_task_table, pm, summary_table

REPORT_FORMAT = "metadt-report"
REPORT_VERSION = 1

#: Mean-return comparisons on the protocol's test tasks: (name, lhs, rhs).
QUALITY_BAR = (
    ("Meta-DT few-shot >= Meta-DT zero-shot (never prompted)", ("meta-dt", "few-shot"),
     ("meta-dt-no-prompt", "zero-shot")),
    ("Meta-DT zero-shot (never prompted) >= DT", ("meta-dt-no-prompt", "zero-shot"),
     ("dt", "zero-shot")),
    ("Meta-DT few-shot >= Prompt-DT (own trajectories)", ("meta-dt", "few-shot"),
     ("prompt-dt", "few-shot")),
)
NORMALIZED_BAR = 0.9

#: Splits the statistics pool: every evaluated task unseen in training (the
#: protocol's test tasks and the extra goals of ``eval_tasks``).
STAT_SPLITS = ("test", "unseen")
META_FEW, META_ZERO = ("meta-dt", "few-shot"), ("meta-dt-no-prompt", "zero-shot")
#: Probability of improvement, (X, Y) = P(X > Y).
IMPROVEMENT = (
    (META_FEW, ("prompt-dt", "few-shot")),
    (META_FEW, ("prompt-dt", "expert-prompt")),
    (META_FEW, ("dt", "zero-shot")),
    (META_FEW, ("meta-dt-no-z", "few-shot")),
    (META_FEW, ("meta-dt-random-prompt", "few-shot")),
    (META_FEW, META_ZERO),
    (META_ZERO, ("dt", "zero-shot")),
)
#: Reliance diagnostics: (base row, the same with one input replaced).
RELIANCE = (
    (META_FEW, ("meta-dt", "few-shot-z-shuffled")),
    (META_FEW, ("meta-dt", "few-shot-prompt-swapped")),
    (META_ZERO, ("meta-dt-no-prompt", "zero-shot-z-shuffled")),
    (("prompt-dt", "few-shot"), ("prompt-dt", "few-shot-prompt-swapped")),
)
#: The issue's bars on these statistics.
POI_BAR, Z_DROP_BAR, PROBE_BAR = 0.6, 0.2, 0.5


def find_eval_files(path: str | os.PathLike) -> list[Path]:
    """``eval.json`` files of an input (the file itself, RUN/eval.json, or all below a dir)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run, pipeline directory or eval file")
    direct = path / EVAL_FILE
    if direct.is_file():
        return [direct]
    found = [p for p in sorted(path.rglob(EVAL_FILE))
             if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return found


def load_results(files: Iterable[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        res = read_json(f)
        if not isinstance(res, dict) or res.get("format") != EVAL_FORMAT:
            raise ValueError(f"{f}: not a metadt evaluation (format {res.get('format')!r})")
        res = dict(res)
        res["_file"] = str(f)
        out.append(res)
    return out


def quality_bar(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's checks on test tasks (only those whose two sides were evaluated)."""
    checks = []
    for name, lhs, rhs in QUALITY_BAR:
        a, b = find(summary, *lhs), find(summary, *rhs)
        if a is None or b is None:
            continue
        checks.append({"check": name, "lhs": a["return_mean"], "rhs": b["return_mean"],
                       "lhs_normalized": a["normalized_mean"], "rhs_normalized": b["normalized_mean"],
                       "holds": bool(a["return_mean"] >= b["return_mean"])})
    fs = find(summary, "meta-dt", "few-shot")
    if fs is not None and math.isfinite(fs["normalized_mean"]):
        checks.append({"check": f"Meta-DT few-shot normalized >= {NORMALIZED_BAR}",
                       "lhs": fs["normalized_mean"], "rhs": NORMALIZED_BAR,
                       "holds": bool(fs["normalized_mean"] >= NORMALIZED_BAR)})
    return checks


def probe_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The z-probe settings' R^2 per method, source (own / random) and task group, per
    seed and averaged over seeds."""
    out: dict[str, Any] = {}
    for res in sorted(results, key=lambda r: (r["method"], r["seed"])):
        pr = res["settings"].get("z-probe", {}).get("probe")
        if not pr:
            continue
        m = out.setdefault(res["method"], {})
        for source, groups in pr.items():
            for g, v in groups.items():
                e = m.setdefault(source, {}).setdefault(g, {"per_seed": {}})
                e["per_seed"][str(res["seed"])] = v.get("r2")
    for m in out.values():
        for groups in m.values():
            for e in groups.values():
                vals = [v for v in e["per_seed"].values() if v is not None]
                e["r2_mean"] = float(np.mean(vals)) if vals else None
    return out


def statistics(rows: list[dict[str, Any]], summary_keys: list[tuple[str, str]],
               results: list[dict[str, Any]], reps: int = 2000) -> dict[str, Any]:
    """rliable IQM / mean intervals, probabilities of improvement and reliance drops over
    seeds x every task unseen in training, the z probe, and the issue's bars on them."""
    from metadt.report import stats

    splits = [s for s in STAT_SPLITS if any(r["split"] == s for r in rows)]
    present = set(summary_keys)
    out: dict[str, Any] = {"splits": splits, "reps": reps,
                           "intervals": stats.interval_estimates(rows, summary_keys, splits, reps),
                           "improvement": [], "reliance": [], "probe": probe_summary(results)}
    for x, y in IMPROVEMENT:
        if x in present and y in present:
            p = stats.improvement(rows, x, y, splits, reps)
            if p is not None:
                out["improvement"].append(p)
    for base, diag in RELIANCE:
        if base in present and diag in present:
            d = stats.drop(rows, base, diag, splits, reps)
            if d is not None:
                out["reliance"].append(d)
    bars = []
    for p in out["improvement"]:
        for x, y, name in ((META_FEW, ("prompt-dt", "few-shot"),
                            "Meta-DT few-shot >= Prompt-DT (own trajectories)"),
                           (META_ZERO, ("dt", "zero-shot"), "Meta-DT zero-shot (never prompted) > DT")):
            if tuple(p["x"]) == x and tuple(p["y"]) == y:
                bars.append({"check": f"{name}: P(improvement) >= {POI_BAR}",
                             "value": p["probability"], "ci": p["ci"],
                             "holds": bool(p["probability"] >= POI_BAR)})
    for d in out["reliance"]:
        if tuple(d["diagnostic"]) == ("meta-dt", "few-shot-z-shuffled"):
            bars.append({"check": f"shuffling z costs Meta-DT few-shot >= {Z_DROP_BAR} normalized",
                         "value": d["drop"], "ci": d["ci"], "holds": bool(d["drop"] >= Z_DROP_BAR)})
    for m, src in out["probe"].items():
        rnd = src.get("random", {})
        g = next((k for k in ("test+unseen", "unseen", "test") if k in rnd), None)
        if g is not None and rnd[g]["r2_mean"] is not None:
            bars.append({"check": f"z probe R^2 on random-action contexts of unseen tasks ({g}, "
                                  f"{METHOD_LABELS.get(m, m)}'s world model) >= {PROBE_BAR}",
                         "value": rnd[g]["r2_mean"], "ci": None,
                         "holds": bool(rnd[g]["r2_mean"] >= PROBE_BAR)})
    out["bars"] = bars
    return out


def _run_dir(res: dict[str, Any]) -> Path:
    return Path(res["_file"]).parent


def _curves(results: list[dict[str, Any]]) -> dict[str, list[tuple[str, list[dict]]]]:
    from metadt.train.metrics import read_metrics

    curves: dict[str, list[tuple[str, list[dict]]]] = {}
    wm_seen: set[Path] = set()
    for res in sorted(results, key=lambda r: (r["method"], r["seed"])):
        run = _run_dir(res)
        recs = read_metrics(run / "metrics.jsonl")
        if recs:
            curves.setdefault(res["method"], []).append((f"seed {res['seed']}", recs))
        wm = run.parent / "world-model"
        if wm not in wm_seen and (wm / "metrics.jsonl").is_file():
            wm_seen.add(wm)
            curves.setdefault("world model", []).append(
                (f"seed {res['seed']}", read_metrics(wm / "metrics.jsonl")))
    return curves


def pipeline_timing(path: str | os.PathLike) -> dict[str, Any] | None:
    """Seconds per stage kind from a pipeline directory's ``stages.jsonl`` (None if absent)."""
    from metadt.train.metrics import read_metrics

    f = Path(path) / "stages.jsonl"
    if not f.is_file():
        return None
    recs = read_metrics(f)
    per: dict[str, float] = {}
    for r in recs:
        per[r["stage"]] = per.get(r["stage"], 0.0) + float(r.get("seconds", 0.0))
    detail = {}
    for r in recs:
        key = "/".join(str(r[k]) for k in ("stage", "seed", "method") if k in r)
        detail[key] = detail.get(key, 0.0) + float(r.get("seconds", 0.0))
    jobs = max([int(r.get("jobs", 1)) for r in recs] or [1])
    return {"per_stage_seconds": per, "total_seconds": sum(per.values()), "detail": detail,
            "max_jobs": jobs}


def _group_report(name: str, results: list[dict[str, Any]], out_dir: Path, slug: str,
                  reps: int = 2000) -> dict[str, Any]:
    rows = task_rows(results)
    test, train = summarize(rows, "test"), summarize(rows, "train")
    unseen = summarize(rows, "unseen")
    keys = list(dict.fromkeys([(e["method"], e["setting"]) for e in test + unseen]))
    st = statistics(rows, keys, results, reps)
    files: dict[str, str] = {}
    p = plots.returns_bar(test, out_dir / f"{slug}returns.png", title=f"{name}: test tasks")
    if p:
        files["returns_plot"] = p.name
    p = plots.intervals(st["intervals"], out_dir / f"{slug}intervals.png",
                        title=f"{name}: normalized score over seeds x tasks "
                              f"({'+'.join(st['splits'])}), 95% CIs")
    if p:
        files["intervals_plot"] = p.name
    p = plots.learning_curves(_curves(results), out_dir / f"{slug}learning_curves.png",
                              title=f"{name}: training curves")
    if p:
        files["learning_curves_plot"] = p.name
    fams = sorted({r.get("family", "") for r in results})
    return {
        "name": name, "families": fams,
        # the fixed score references used (None: none measured for that family)
        "score_references": {f: _reference(f) for f in fams if f},
        "sources": sorted(r["_file"] for r in results),
        "summary": {"test": test, "train": train, "unseen": unseen},
        "statistics": st,
        "quality_bar": quality_bar(test),
        "rows": rows,
        "timing_seconds": {f"{r['method']}/seed-{r['seed']}/{s}": v.get("seconds")
                           for r in results for s, v in r["settings"].items()},
        "plots": files,
    }


def _reference(family: str) -> dict[str, Any] | None:
    from metadt.evaluate.references import reference

    return reference(family)


def score_reference_note(families: list[str]) -> str:
    """What the fixed-reference score column means for these families, or that a family
    has no measured reference (its scores are then shown as –)."""
    from metadt.evaluate.references import reference

    parts = []
    for fam in [f for f in families if f]:
        ref = reference(fam)
        if ref is None:
            parts.append(f"no fixed score reference has been measured for {fam}: its score "
                         f"column is empty (–)")
        else:
            parts.append(f"{fam}: random {ref['random']:.2f}, expert {ref['expert']:.2f}")
    what = ("score (fixed ref.): 100 × (return − random) / (expert − random) with the family's "
            "fixed reference (D4RL convention, comparable across collections; "
            "metadt/evaluate/references.json)")
    return what + (": " + "; ".join(parts) if parts else "") + "."


def _group_markdown(g: dict[str, Any], heading: str = "##") -> str:
    out = [f"{heading} {g['name']}", ""]
    if g["families"]:
        out += [f"Family: {', '.join(f for f in g['families'] if f)}; "
                f"{len(g['sources'])} evaluated run(s).", ""]
    out += ["Test tasks (unseen in training). Return: mean ± std over test tasks and seeds "
            "(each task's value is the mean over its evaluation episodes); normalized: "
            "random policy = 0, this dataset's max = 1 (per dataset); "
            + score_reference_note(g["families"]), "", summary_table(g["summary"]["test"]), ""]
    if g["summary"].get("unseen"):
        out += ["Extra unseen goals (`eval_tasks`; reference returns estimated from the "
                "training tasks, see docs/evaluate.md):", "",
                summary_table(g["summary"]["unseen"]), ""]
    out += _statistics_markdown(g.get("statistics") or {})
    if g["quality_bar"]:
        out += ["Mean-return comparisons (protocol test tasks):", ""]
        for c in g["quality_bar"]:
            mark = "yes" if c["holds"] else "**no**"
            out.append(f"- {c['check']}: {fmt(c['lhs'], 3)} vs {fmt(c['rhs'], 3)}: {mark}")
        out.append("")
    if g["summary"]["train"]:
        out += ["Training tasks (a few, for reference):", "", summary_table(g["summary"]["train"]), ""]
    pt = per_task_table(g["rows"], "test")
    if pt:
        out += ["Per test task (mean over seeds):", "", pt, ""]
    tm = g.get("pipeline_timing")
    if tm:
        parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in tm["per_stage_seconds"].items())
        if tm.get("max_jobs", 1) > 1:  # `metadt run --jobs N`: stages overlapped
            out += [f"Pipeline stage time (stages run so far, summed over stages and resumes; "
                    f"up to {tm['max_jobs']} ran at once, so the wall time was shorter): "
                    f"{tm['total_seconds'] / 60:.1f} min ({parts}).", ""]
        else:
            out += [f"Pipeline wall time (stages run so far, summed over resumes): "
                    f"{tm['total_seconds'] / 60:.1f} min ({parts}).", ""]
    for key, title in (("intervals_plot", "IQM and mean with 95% CIs"), ("returns_plot", "returns"),
                       ("learning_curves_plot", "learning curves")):
        if key in g["plots"]:
            out += [f"![{title}]({g['plots'][key]})", ""]
    return "\n".join(out)


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _statistics_markdown(st: dict[str, Any]) -> list[str]:
    if not st or not st.get("intervals"):
        return []
    where = " + ".join(st["splits"])
    out = [f"Statistics over seeds × tasks unseen in training ({where}; normalized score; "
           f"rliable, stratified bootstrap, {st['reps']} resamples, 95% CIs):", "",
           "| row | IQM [95% CI] | mean [95% CI] | tasks × seeds |", "|---|---|---|---|"]
    for e in st["intervals"]:
        out.append(f"| {label(e['method'], e['setting'])} | {fmt(e['iqm'])}{_ci(e['iqm_ci'])} "
                   f"| {fmt(e['mean'])}{_ci(e['mean_ci'])} | {e['tasks']} × {len(e['seeds'])} |")
    out.append("")
    if st.get("improvement"):
        out += ["Probability of improvement P(X > Y):", "", "| X | Y | P(X > Y) [95% CI] | tasks |",
                "|---|---|---|---|"]
        for p in st["improvement"]:
            out.append(f"| {label(*p['x'])} | {label(*p['y'])} | {fmt(p['probability'])}"
                       f"{_ci(p['ci'])} | {p['tasks']} |")
        out.append("")
    if st.get("reliance"):
        out += ["Reliance (drop in normalized score when the input is another task's):", "",
                "| row | diagnostic | normalized | with the input replaced | drop [95% CI] |",
                "|---|---|---|---|---|"]
        for d in st["reliance"]:
            out.append(f"| {label(*d['base'])} | {label(*d['diagnostic'])} | {fmt(d['base_mean'])} "
                       f"| {fmt(d['diagnostic_mean'])} | {fmt(d['drop'])}{_ci(d['ci'])} |")
        out.append("")
    if st.get("probe"):
        out += ["z probe (fitted on the training tasks' dataset contexts; R² on contexts met at "
                "test time, mean over seeds):", "", "| world model of | contexts | tasks | R² | per seed |",
                "|---|---|---|---|---|"]
        for m, src in st["probe"].items():
            for s_name, groups in src.items():
                for gname, e in groups.items():
                    per = ", ".join(fmt(v) for v in e["per_seed"].values())
                    what = "own zero-shot rollouts" if s_name == "own" else "uniform random actions"
                    out.append(f"| {METHOD_LABELS.get(m, m)} | {what} | {gname} | {fmt(e['r2_mean'])} "
                               f"| {per} |")
        out.append("")
    if st.get("bars"):
        out += ["Quality bar:", ""]
        for b in st["bars"]:
            mark = "**met**" if b["holds"] else "**not met**"
            out.append(f"- {b['check']}: {fmt(b['value'])}{_ci(b['ci'])}: {mark}")
        out.append("")
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "group"


def build_report(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                 names: list[str] | None = None, title: str = "metadt results",
                 reps: int = 2000) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and plots for `inputs` into `out_dir`."""
    if not inputs:
        raise ValueError("report: give at least one run, pipeline directory or eval.json")
    out_dir = Path(out_dir)
    names = list(names) if names else _names(inputs)
    # every input is found before anything is written (a typo leaves no empty OUT)
    found = []
    for inp in inputs:
        files = find_eval_files(inp)
        if not files:
            raise FileNotFoundError(f"{inp}: no {EVAL_FILE} found (run `metadt evaluate` first)")
        found.append(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = []
    single = len(inputs) == 1
    for name, inp, files in zip(names, inputs, found):
        results = load_results(files)
        g = _group_report(name, results, out_dir, "" if single else f"{_slug(name)}-", reps)
        if Path(inp).is_dir():
            g["pipeline_timing"] = pipeline_timing(inp)
        groups.append(g)
    report = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "title": title,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "inputs": [str(i) for i in inputs], "groups": groups,
              "provenance": provenance()}
    md = [f"# {title}", ""]
    if not single:
        md += ["## Side by side (test tasks: return mean ± std, normalized in brackets)", "",
               compare_table({g["name"]: g["summary"]["test"] for g in groups}), ""]
    for g in groups:
        md.append(_group_markdown(g, "##"))
    atomic_write_json(out_dir / "results.json", _finite(report))
    atomic_write_text(out_dir / "results.md", "\n".join(md).rstrip() + "\n")
    return report


def _finite(obj: Any) -> Any:
    """NaN / inf -> None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _names(inputs: list[str | os.PathLike]) -> list[str]:
    names = []
    for i in inputs:
        p = Path(i).resolve()
        n = p.parent.name if p.is_file() else p.name
        base, k = n, 2
        while n in names:
            n, k = f"{base}-{k}", k + 1
        names.append(n)
    return names


__all__ = ["build_report", "find_eval_files", "load_results", "quality_bar", "pm"]
