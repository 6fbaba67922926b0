"""Training metrics: JSON lines and CSV (always), TensorBoard and W&B (asked for), PNG curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from metadt.fileio import append_jsonl, atomic_write_text


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash
                continue
    return out


class MetricsLogger:
    """Appends ``{"step": ..., **values}`` lines to ``path`` (JSON lines, always) and keeps
    ``path`` with the suffix ``.csv`` beside it (one column per metric, rewritten from the
    JSON lines at every `close`, so a resumed run's CSV is whole). Scalars also go to the
    optional sinks named in ``loggers`` (``metadt.config.base.LOGGERS``): TensorBoard event
    files under ``tb_dir``, and Weights & Biases. None is required."""

    def __init__(self, path: str | Path, tb_dir: str | Path | None = None,
                 resume_step: int | None = None, loggers: str = "",
                 run_name: str | None = None, config: dict[str, Any] | None = None):
        from metadt.config.base import check_loggers

        self.path = Path(path)
        self.csv_path = self.path.with_suffix(".csv")
        sinks = check_loggers(loggers)
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()
        else:
            # drop lines written after the checkpoint we resume from
            keep = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self.writer = None
        if "tensorboard" in sinks:
            if tb_dir is None:
                raise ValueError("loggers: tensorboard needs a directory for its event files")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tb_dir), purge_step=resume_step)
        self.wandb = None
        if "wandb" in sinks:
            import os

            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "metadt"),
                                    name=run_name, config=config or {},
                                    dir=str(self.path.parent), resume="allow")

    def log(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": int(step), **values}
        append_jsonl(self.path, record)
        scalars = {k: v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=int(step))

    def close(self) -> None:
        write_csv(self.path, self.csv_path)
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def write_csv(jsonl_path: str | Path, csv_path: str | Path) -> Path:
    """The metrics of a JSON lines file as CSV: a ``step`` column, then one column per
    metric in order of first appearance; a metric missing from a line is an empty cell."""
    import csv
    import io

    records = read_metrics(jsonl_path)
    cols: dict[str, None] = {"step": None}
    for r in records:
        cols.update(dict.fromkeys(r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), restval="", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return atomic_write_text(csv_path, buf.getvalue())


def plot_curves(metrics_path: str | Path, png_path: str | Path,
                keys: Iterable[str] = ("loss",), title: str = "") -> Path | None:
    """Plot the named metrics against step into a PNG (None without matplotlib)."""
    records = read_metrics(metrics_path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - matplotlib is optional
        return None
    keys = [k for k in keys if any(k in r for r in records)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.5 * max(len(keys), 1), 3.2),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
        if pts:
            ax.plot(*zip(*pts))
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
