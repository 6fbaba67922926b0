"""Numbers from evaluation results: per-task rows, normalized scores, aggregates.

The unit of aggregation is one (seed, task) pair: its return is the mean over
that task's evaluation episodes. "Mean ± std over test tasks and seeds"
(protocol section 6) is the mean and the population standard deviation
(ddof 0) of those values over every test task of every seed.

Normalized score: ``(return - random) / (dataset max - random)`` per task,
so a uniform-random policy scores 0 and the best episode of the task's
dataset scores 1 (the random policy's return is recorded in the dataset
card).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

METHOD_LABELS = {
    "meta-dt": "Meta-DT",
    "meta-dt-no-prompt": "Meta-DT zero-shot model",
    "dt": "DT",
    "prompt-dt": "Prompt-DT",
    "meta-dt-no-z": "Meta-DT w/o z",
    "meta-dt-random-prompt": "Meta-DT random prompt",
}
SETTING_LABELS = {
    "zero-shot": "zero-shot",
    "few-shot": "few-shot (own trajectories)",
    "expert-prompt": "expert prompt (demonstration)",
    "zero-shot-z-shuffled": "zero-shot, z of another task (diagnostic)",
    "few-shot-z-shuffled": "few-shot, z of another task (diagnostic)",
    "few-shot-prompt-swapped": "few-shot, prompt of another task (diagnostic)",
}
#: The paper's rows, named by what was trained and how it was evaluated: the
#: few-shot model is prompted after warm-up, the zero-shot model never.
ROW_LABELS = {
    ("meta-dt", "few-shot"): "Meta-DT few-shot",
    ("meta-dt-no-prompt", "zero-shot"): "Meta-DT zero-shot (never prompted)",
    ("meta-dt", "zero-shot"): "Meta-DT few-shot model without prompt (diagnostic)",
}
METHOD_ORDER = list(METHOD_LABELS)
SETTING_ORDER = list(SETTING_LABELS)


def label(method: str, setting: str) -> str:
    """The row's name: `ROW_LABELS` for the paper's rows, else "method, setting"."""
    return ROW_LABELS.get((method, setting),
                          f"{METHOD_LABELS.get(method, method)}, {SETTING_LABELS.get(setting, setting)}")


def trained_with(training: dict[str, Any] | None) -> str:
    """What a run was trained with, from its recorded training flags (empty if unknown)."""
    if not training:
        return ""
    parts = ["z" if training.get("use_z") else "no z"]
    if training.get("use_prompt"):
        parts.append(f"prompt ({training.get('prompt_strategy', '?')}) after "
                     f"{training.get('warm_train', '?')} steps, dropout "
                     f"{training.get('prompt_dropout', '?')}")
    else:
        parts.append("never prompted")
    if training.get("window_anchor"):
        parts.append(f"{training['window_anchor']}-anchored windows")
    return ", ".join(parts)


def normalized(ret: float, random: float | None, dataset_max: float) -> float:
    """(ret - random) / (max - random); NaN if the random return is unknown or equals max."""
    if random is None or not math.isfinite(float(random)):
        return float("nan")
    span = float(dataset_max) - float(random)
    if abs(span) < 1e-12:
        return float("nan")
    return (float(ret) - float(random)) / span


def task_rows(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, setting, seed, task) from eval results (``eval.json`` dicts)."""
    from metadt.evaluate.references import fixed_score, reference

    rows = []
    for res in results:
        tasks = res["tasks"]
        ref = reference(str(res.get("family", "")))
        for setting, sres in res["settings"].items():
            for task, rets in sres["returns"].items():
                info = tasks[str(task)]
                mean = float(np.mean(rets))
                row = {
                    "method": res["method"], "setting": setting, "seed": int(res["seed"]),
                    "training": dict(res.get("training") or {}),
                    "evaluated": SETTING_LABELS.get(setting, setting),
                    "task": int(task), "split": info["split"], "returns": [float(r) for r in rets],
                    "return": mean, "target": info["target"], "dataset_max": info["dataset_max"],
                    "dataset_mean": info["dataset_mean"], "random": info.get("random"),
                    "normalized": normalized(mean, info.get("random"), info["dataset_max"]),
                    # D4RL-style 0-100 with the family's fixed reference (NaN: none measured)
                    "score": fixed_score(mean, ref),
                }
                succ = sres.get("success", {}).get(str(task))
                if succ is not None:
                    row["success"] = float(np.mean(succ))
                rows.append(row)
    return rows


def _stats(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def summarize(rows: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """Aggregate per (method, setting) over the tasks of `split` and every seed."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["split"] == split:
            groups.setdefault((r["method"], r["setting"]), []).append(r)

    def order(key: tuple[str, str]) -> tuple[int, int, str, str]:
        m, s = key
        return (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99,
                SETTING_ORDER.index(s) if s in SETTING_ORDER else 99, m, s)

    out = []
    for key in sorted(groups, key=order):
        g = groups[key]
        mean, std = _stats([r["return"] for r in g])
        nmean, nstd = _stats([r["normalized"] for r in g])
        smean, sstd = _stats([r.get("score", float("nan")) for r in g])
        seeds = sorted({r["seed"] for r in g})
        per_seed = {s: float(np.mean([r["return"] for r in g if r["seed"] == s])) for s in seeds}
        per_seed_norm = {s: _stats([r["normalized"] for r in g if r["seed"] == s])[0] for s in seeds}
        entry = {
            "method": key[0], "setting": key[1], "label": label(*key), "split": split,
            "training": g[0]["training"], "trained": trained_with(g[0]["training"]),
            "evaluated": g[0]["evaluated"],
            "return_mean": mean, "return_std": std,
            "normalized_mean": nmean, "normalized_std": nstd,
            "score_mean": smean, "score_std": sstd,
            "dataset_max": float(np.mean([r["dataset_max"] for r in g])),
            "dataset_mean": float(np.mean([r["dataset_mean"] for r in g])),
            "random": _stats([r["random"] for r in g])[0],
            "target": float(np.mean([r["target"] for r in g])),
            "tasks": sorted({r["task"] for r in g}), "seeds": seeds,
            "n": len(g), "episodes": int(sum(len(r["returns"]) for r in g)),
            "per_seed_return": per_seed, "per_seed_normalized": per_seed_norm,
        }
        succ = [r["success"] for r in g if "success" in r]
        if succ:
            entry["success_mean"] = float(np.mean(succ))
        out.append(entry)
    return out


def find(summary: list[dict[str, Any]], method: str, setting: str) -> dict[str, Any] | None:
    for e in summary:
        if e["method"] == method and e["setting"] == setting:
            return e
    return None
