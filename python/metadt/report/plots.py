"""PNG plots of a report (matplotlib, Agg backend)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metadt.evaluate.metrics import METHOD_LABELS, SETTING_LABELS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def returns_bar(summary: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Mean ± std return per method and setting, with the dataset's max and mean returns."""
    if not summary:
        return None
    plt = _plt()
    labels = [f"{METHOD_LABELS.get(e['method'], e['method'])}\n"
              f"{SETTING_LABELS.get(e['setting'], e['setting'])}" for e in summary]
    means = [e["return_mean"] for e in summary]
    stds = [e["return_std"] for e in summary]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(summary) + 2), 4.2))
    x = list(range(len(summary)))
    ax.bar(x, means, yerr=stds, capsize=4, color="#4C72B0", alpha=0.85, label="agent")
    dmax = sum(e["dataset_max"] for e in summary) / len(summary)
    dmean = sum(e["dataset_mean"] for e in summary) / len(summary)
    ax.axhline(dmax, color="#C44E52", ls="--", label=f"dataset max ({dmax:.2f})")
    ax.axhline(dmean, color="#55A868", ls=":", label=f"dataset mean ({dmean:.2f})")
    rnd = [e["random"] for e in summary if e.get("random") is not None and math.isfinite(e["random"])]
    if rnd:
        r = sum(rnd) / len(rnd)
        ax.axhline(r, color="gray", ls="-.", label=f"random ({r:.2f})")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("return (mean ± std over tasks and seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(curves: dict[str, list[tuple[str, list[dict[str, Any]]]]], path: Path,
                    title: str = "") -> Path | None:
    """Training loss against step: one panel per curve family, one line per run.

    ``curves[name] = [(run label, metrics records), ...]``; records are
    ``metrics.jsonl`` lines with ``step`` and ``loss``.
    """
    order = ["world model"] + list(METHOD_LABELS)
    names = sorted(curves, key=lambda k: (order.index(k) if k in order else len(order), k))
    panels = {k: curves[k] for k in names if any(_pts(r) for _, r in curves[k])}
    if not panels:
        return None
    plt = _plt()
    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (name, runs) in zip(axes.flat, panels.items()):
        ret_ax = None
        for lab, records in runs:
            pts = _pts(records)
            if pts:
                line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=lab, lw=1.2)
                rets = _pts(records, "eval_return")
                if rets:  # the return during training (train_eval_every), right axis
                    if ret_ax is None:
                        ret_ax = ax.twinx()
                        ret_ax.set_ylabel("return during training (dashed)")
                    ret_ax.plot([p[0] for p in rets], [p[1] for p in rets], ls="--", lw=1.0,
                                color=line.get_color(), marker=".")
        ax.set_title(METHOD_LABELS.get(name, name), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _pts(records: list[dict[str, Any]], key: str = "loss") -> list[tuple[float, float]]:
    """(step, value) of a metric; the loss (log axis) must be > 0."""
    out = []
    for r in records:
        v = r.get(key)
        if (isinstance(v, (int, float)) and "step" in r and math.isfinite(v)
                and (v > 0 or key != "loss")):
            out.append((float(r["step"]), float(v)))
    return out


def intervals(entries: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """IQM and mean of each row with their 95% bootstrap intervals (rliable's estimates)."""
    if not entries:
        return None
    from metadt.evaluate.metrics import label

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(entries) + 1.6), sharey=True)
    y = list(range(len(entries)))[::-1]
    for ax, key, name in ((axes[0], "iqm", "IQM"), (axes[1], "mean", "mean")):
        for yi, e in zip(y, entries):
            lo, hi = e[f"{key}_ci"]
            ax.plot([lo, hi], [yi, yi], lw=6, alpha=0.45, color="C0", solid_capstyle="butt")
            ax.plot([e[key]], [yi], "|", color="k", ms=12, mew=2)
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"normalized score ({name})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([label(e["method"], e["setting"]) for e in entries], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
