"""Training metrics: JSON lines (always), TensorBoard (when installed), PNG curves."""
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
    """Appends ``{"step": ..., **values}`` lines to ``path``; mirrors scalars to
    TensorBoard under ``tb_dir`` when ``torch.utils.tensorboard`` works."""

    def __init__(self, path: str | Path, tb_dir: str | Path | None = None,
                 resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()
        else:
            # drop lines written after the checkpoint we resume from
            keep = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self.writer = None
        if tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed
                self.writer = None
            else:
                self.writer = SummaryWriter(str(tb_dir))

    def log(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": int(step), **values}
        append_jsonl(self.path, record)
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
