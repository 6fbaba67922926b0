"""`metadt envs`: list the task families, or show one family's tasks."""
from __future__ import annotations

import argparse
import json

ORDER = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "envs",
        help="list the task families (dimensions, horizon, task counts)",
        description="List the Meta-DT task families with their observation and action "
                    "dimensions, horizon, default task counts and a one-line description. "
                    "With --family, sample that family's tasks from --seed and show them.",
    )
    p.add_argument("--family", metavar="NAME", help="show the tasks of one family")
    p.add_argument("--seed", type=int, default=0, help="task-sampling seed (with --family)")
    p.add_argument("--num-tasks", type=int, default=None, help="number of tasks (with --family)")
    p.add_argument("--num-train", type=int, default=None, help="training tasks (with --family)")
    p.add_argument("--json", action="store_true",
                   help="print JSON (with --family: the full card, as saved with a dataset)")
    p.set_defaults(func=run)


def _rows() -> list[dict]:
    from metadt.envs.base import FAMILIES, family_class

    rows = []
    for name, desc in FAMILIES.items():
        cls = family_class(name)
        n, k = cls.default_num_tasks, cls.default_num_train
        rows.append({"name": name, "obs_dim": cls.obs_dim, "act_dim": cls.act_dim,
                     "horizon": cls.horizon, "num_tasks": n, "num_train": k,
                     "num_test": n - k if k < n else n, "shared_split": k >= n,
                     "return_scale": cls.return_scale, "description": desc})
    return rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run(args: argparse.Namespace) -> int:
    if args.family is None:
        rows = _rows()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(_table(
            ["family", "obs", "act", "horizon", "tasks (train+test)", "description"],
            [[r["name"], str(r["obs_dim"]), str(r["act_dim"]), str(r["horizon"]),
              (f"{r['num_tasks']} (train = test)" if r["shared_split"]
               else f"{r['num_tasks']} ({r['num_train']}+{r['num_test']})"),
              r["description"]] for r in rows]))
        print("\nDetails: metadt envs --family NAME [--seed S]; docs/envs.md")
        return 0

    from metadt.envs import make_family

    fam = make_family(args.family, seed=args.seed, num_tasks=args.num_tasks,
                      num_train=args.num_train)
    if args.json:
        print(json.dumps(fam.to_json(), indent=2))
        return 0
    print(f"{fam.name}: {fam.description}")
    print(f"obs {fam.obs_dim}, act {fam.act_dim} in [{fam.action_low[0]:g}, "
          f"{fam.action_high[0]:g}], horizon {fam.horizon}, return scale {fam.return_scale:g}, "
          f"seed {fam.seed}")
    if fam.options:
        print("options: " + ", ".join(f"{k}={v}" for k, v in fam.options.items()))
    shared = fam.train_ids == fam.test_ids
    print(f"{fam.num_tasks} tasks: {len(fam.train_ids)} train, {len(fam.test_ids)} test"
          + (" (the same tasks)" if shared else ""))
    rows = []
    for i, task in enumerate(fam.tasks):
        split = "train+test" if shared else ("train" if i < fam.num_train else "test")
        feats = fam.task_features(task)
        shown = " ".join(f"{x:+.3f}" for x in feats[:6]) + (" ..." if feats.size > 6 else "")
        rows.append([str(i), split, shown])
    print(_table(["id", "split", "task features"], rows))
    return 0
