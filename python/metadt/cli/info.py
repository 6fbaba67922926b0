"""`metadt info DATASET`: print a dataset's card readably."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

ORDER = 25

DESCRIPTION = """\
Print what a dataset directory (made by `metadt collect` or `metadt
import-official`) holds: the family and its tasks (train/test split), how it
was made, and per quality the episodes, steps and returns (min/mean/max) per
task, beside each task's uniform-random return and the checkpoint chosen.

It also checks that every store is intact enough to open (every file present
with the size its manifest records, headers and episode tables valid, counts
equal to the card's) and exits with status 1 naming the damage otherwise.
--verify also reads every byte (CRC-32 of every file, finite values), as the
commands that train or evaluate do by default.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("info", help="print a dataset's card (tasks, episodes, returns)",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset directory (holds card.json)")
    p.add_argument("--json", action="store_true", help="print the raw card JSON instead")
    p.add_argument("--no-tasks", action="store_true", help="omit the per-task table")
    p.add_argument("--verify", action="store_true",
                   help="also read every byte: CRC-32 of every file and finite values")
    p.set_defaults(func=run)


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "-"
    ids = sorted(int(i) for i in ids)
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def _fmt(x: Any, width: int = 8) -> str:
    if x is None:
        return "-".rjust(width)
    return f"{float(x):{width}.4g}"


def _task_label(task: dict[str, Any]) -> str:
    items = [(k, v) for k, v in task.items() if k not in ("family",)]
    out = []
    for k, v in items[:2]:
        if isinstance(v, float):
            out.append(f"{k}={v:.3g}")
        elif isinstance(v, list) and len(v) <= 3 and all(isinstance(e, (int, float)) for e in v):
            out.append(f"{k}=[{', '.join(f'{e:.3g}' for e in v)}]")
        elif isinstance(v, (int, str)):
            out.append(f"{k}={v}")
    return " ".join(out)


def format_card(ds: Any, tasks_table: bool = True) -> str:
    """A readable multi-line summary of an opened `Dataset`."""
    c = ds.card
    lines = [f"dataset   {ds.path}",
             f"family    {c.family} (task seed {c.family_seed}): obs {c.obs_dim}, act {c.act_dim}, "
             f"horizon {c.horizon}",
             f"tasks     {len(c.tasks)}: train {len(c.train_ids)} [{_ranges(c.train_ids)}], "
             f"test {len(c.test_ids)} [{_ranges(c.test_ids)}]"]
    col = c.collection or {}
    made = [c.source]
    if col.get("preset"):
        made.append(f"preset {col['preset']}")
    if col.get("seed") is not None:
        made.append(f"seed {col['seed']}")
    budget = col.get("budget") or {}
    if budget.get("steps_per_task"):
        made.append(f"SAC {budget['steps_per_task']} env steps/task")
    if col.get("sac_mode"):
        made.append(f"SAC mode {col['sac_mode']}")
    if col.get("timings_s"):
        made.append("took " + ", ".join(f"{k} {v:.0f}s" for k, v in col["timings_s"].items()))
    if col.get("source_dir"):
        made.append(f"from {col['source_dir']}")
    lines.append("made by   " + "; ".join(made) + (f" ({c.created})" if c.created else ""))
    rr = [v for v in c.random_returns.values()]
    lines.append("")
    header = f"{'quality':8} {'episodes':>9} {'steps':>10} {'return min':>11} {'mean':>9} {'max':>9}"
    lines.append(header)
    for q in ds.qualities:
        stats = c.returns(q)
        if not stats:
            continue
        eps = sum(int(s["episodes"]) for s in stats.values())
        steps = sum(int(s["steps"]) for s in stats.values())
        mean = sum(s["mean"] * s["episodes"] for s in stats.values()) / max(eps, 1)
        lo = min(s["min"] for s in stats.values())
        hi = max(s["max"] for s in stats.values())
        lines.append(f"{q:8} {eps:9d} {steps:10d} {lo:11.4g} {mean:9.4g} {hi:9.4g}")
    if rr:
        lines.append(f"{'random':8} {'':9} {'':10} {min(rr):11.4g} {sum(rr) / len(rr):9.4g} "
                     f"{max(rr):9.4g}   (mean return per task of a uniform-random policy)")
    lines += [""] + diversity_lines(ds)
    if not tasks_table:
        return "\n".join(lines)
    quals = [q for q in ds.qualities if c.returns(q)]
    lines.append("")
    lines.append("per task: mean return [min, max] per quality; (ckpt) = checkpoint step used")
    head = f"{'task':>4} {'split':5} {'random':>8}"
    for q in quals:
        head += f" | {q:>28}"
    lines.append(head + "  params")
    train = set(int(i) for i in c.train_ids)
    for i, task in enumerate(c.tasks):
        split = "train" if i in train else "test"
        if i in train and i in set(int(t) for t in c.test_ids):
            split = "both"
        row = f"{i:4d} {split:5} {_fmt(c.random_return(i))}"
        for q in quals:
            s = c.returns(q).get(i)
            ck = (c.qualities[q].get("checkpoints") or {}).get(str(i))
            tag = f"({ck['step']})" if isinstance(ck, dict) and "step" in ck else ""
            if s is None:
                row += f" | {'-':>28}"
            else:
                cell = f"{s['mean']:.4g} [{s['min']:.3g}, {s['max']:.3g}]{tag}"
                row += f" | {cell:>28}"
        lines.append(row + "  " + _task_label(task))
    return "\n".join(lines)


def diversity_lines(ds: Any) -> list[str]:
    """Per quality, the median over tasks of the per-task return std and first-action std
    (`metadt.data.dataset.diversity`), and whether random < medium < expert per task."""
    import numpy as np

    from metadt.data.dataset import diversity

    c = ds.card
    out = ["diversity (median over tasks of the per-task std): episode return, first action"]
    for q in ds.qualities:
        if q == "mixed" or not c.returns(q):
            continue
        d = diversity(ds.store(q))
        out.append(f"  {q:8} return std {np.median([v['return_std'] for v in d.values()]):.4g}, "
                   f"first-action std {np.median([v['first_action_std'] for v in d.values()]):.4g}")
    if {"medium", "expert"} <= set(ds.qualities):
        med, exp = c.returns("medium"), c.returns("expert")
        ok = [i for i in range(len(c.tasks)) if i in med and i in exp
              and c.random_return(i) is not None
              and c.random_return(i) < med[i]["mean"] < exp[i]["mean"]]
        out.append(f"  tasks with random < medium < expert (mean return): {len(ok)} / {len(c.tasks)}")
    return out


def run(args: argparse.Namespace) -> int:
    from metadt.data.dataset import Dataset

    ds = Dataset.open(args.dataset)
    t0 = time.perf_counter()
    ds.check_stores(verify=args.verify)  # raises (status 1) naming the damaged quality
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps(ds.card.to_dict(), indent=2))
    else:
        print(format_card(ds, tasks_table=not args.no_tasks))
        how = ("verified: CRC-32 of every file, finite values" if args.verify else
               "files present with their manifest sizes; --verify reads every byte")
        print(f"\nstores    {len(ds.qualities)} intact ({how}; {seconds:.2f} s)")
    return 0
