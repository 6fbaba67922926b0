"""Markdown tables of evaluation results."""
from __future__ import annotations

import math
from typing import Any

from metadt.evaluate.metrics import label, summarize, task_rows


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def pm(mean: float, std: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(summary: list[dict[str, Any]]) -> str:
    """Per method and setting: return mean ± std, normalized score, dataset max / mean."""
    lines = ["| row | method (trained with) | evaluated | return (mean ± std) | normalized "
             "| score (fixed ref., 0–100) | dataset max | dataset mean | tasks × seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        succ = f" (success {e['success_mean']:.2f})" if "success_mean" in e else ""
        trained = f" ({e['trained']})" if e.get("trained") else ""
        lines.append(
            f"| {label(e['method'], e['setting'])} | `{e['method']}`{trained} "
            f"| {e.get('evaluated', e['setting'])} | {pm(e['return_mean'], e['return_std'])}{succ} "
            f"| {pm(e['normalized_mean'], e['normalized_std'])} "
            f"| {pm(e.get('score_mean', float('nan')), e.get('score_std', float('nan')), 1)} "
            f"| {fmt(e['dataset_max'])} "
            f"| {fmt(e['dataset_mean'])} | {len(e['tasks'])} × {len(e['seeds'])} |")
    return "\n".join(lines)


def per_task_table(rows: list[dict[str, Any]], split: str = "test") -> str:
    """Per task: the dataset's max and mean return beside each method's (mean over seeds)."""
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        return ""
    keys: list[tuple[str, str]] = []
    for e in summarize(rows, split):
        keys.append((e["method"], e["setting"]))
    tasks = sorted({r["task"] for r in rows})
    head = "| task | target | dataset max | dataset mean | random | " + " | ".join(
        label(*k) for k in keys) + " |"
    lines = [head, "|" + "---|" * (5 + len(keys))]
    for t in tasks:
        tr = [r for r in rows if r["task"] == t]
        ref = tr[0]
        cells = []
        for k in keys:
            vals = [r["return"] for r in tr if (r["method"], r["setting"]) == k]
            cells.append(fmt(sum(vals) / len(vals)) if vals else "–")
        lines.append(f"| {t} | {fmt(ref['target'])} | {fmt(ref['dataset_max'])} "
                     f"| {fmt(ref['dataset_mean'])} | {fmt(ref['random'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_table(results: list[dict[str, Any]]) -> str:
    """Test-task summary of eval results (what `metadt evaluate` prints)."""
    rows = task_rows(results)
    out = ["test tasks:", summary_table(summarize(rows, "test"))]
    train = summarize(rows, "train")
    if train:
        out += ["", "training tasks:", summary_table(train)]
    return "\n".join(out)


def compare_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Side by side: one column per group, rows per method and setting (test tasks)."""
    keys: list[tuple[str, str]] = []
    for summ in groups.values():
        for e in summ:
            if (e["method"], e["setting"]) not in keys:
                keys.append((e["method"], e["setting"]))
    names = list(groups)
    lines = ["| method, setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        cells = []
        for n in names:
            e = next((x for x in groups[n] if (x["method"], x["setting"]) == k), None)
            cells.append("–" if e is None else
                         f"{pm(e['return_mean'], e['return_std'])} ({fmt(e['normalized_mean'])})")
        lines.append(f"| {label(*k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
