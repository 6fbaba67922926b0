"""`metadt import-official`: convert the Meta-DT authors' datasets to a metadt dataset."""
from __future__ import annotations

import argparse
import sys
from typing import Any

ORDER = 26

DESCRIPTION = """\
Convert datasets in the format of the Meta-DT authors' code (NJU-RL/Meta-DT,
get_datasets.py) into a metadt dataset directory (TrajectoryStores + card).

Expected input (DIR is an environment directory, or one quality directory):

  DIR/task_goals.npy                 point-robot: [num_tasks, 2] goals
  DIR/task_goals.pkl                 other families: one entry per task
  DIR/<quality>/dataset_task_<i>.pkl per task i: a dict of flat arrays
      observations [M, obs], actions [M, act], rewards [M], next_observations
      [M, obs], terminals [M], masks [M]

Episodes are split at the horizon and after terminal steps. Goal entries:
point-robot [x, y]; cheetah-vel {'velocity': v}; cheetah-dir {'direction': d};
ant-dir {'goal': angle}; hopper/walker-param dicts of absolute body_mass,
body_inertia, dof_damping, geom_friction. For Meta-World (or any family) pass
the metadt tasks as JSON with --tasks.

The input files are Python pickles, and a pickle is a program: unpickling a
file can run code. metadt reads them with a restricted unpickler (plain
containers, numbers and NumPy arrays only, memory bounded by the file's size),
but only import files from a source you trust, and say so with --trust-pickle
(required). Everything metadt writes (datasets, runs) is pickle-free.
"""

EPILOG = """\
examples:
  metadt import-official datasets/PointRobot-v0 --family point-robot --out data/pr-official \\
      --trust-pickle
  metadt import-official datasets/HalfCheetahVel-v0 --family cheetah-vel --out data/cv \\
      --quality medium --quality expert --trust-pickle
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("import-official", help="convert the Meta-DT authors' dataset "
                              "pickles into a metadt dataset", description=DESCRIPTION,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="the authors' environment (or quality) directory")
    p.add_argument("--family", required=True, help="metadt task family of the data")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--quality", action="append", default=None,
                   help="quality subdirectory to import (repeatable; default: every "
                        "subdirectory holding dataset_task_*.pkl; for a quality directory "
                        "given as DIR, its name unless set here)")
    p.add_argument("--goals", default=None,
                   help="task-goal file (default: DIR/task_goals.npy or .pkl, or in its parent)")
    p.add_argument("--tasks", default=None, metavar="FILE.json",
                   help="metadt task dicts (a JSON list, or a card/family JSON with 'tasks') "
                        "instead of the goal file")
    p.add_argument("--num-train", type=int, default=None,
                   help="training tasks (the first ones; default: the family's split)")
    p.add_argument("--horizon", type=int, default=None,
                   help="episode length used to split the flat arrays (default: the family's)")
    p.add_argument("--random-episodes", type=int, default=10,
                   help="episodes per task of a uniform-random policy for the card's random "
                        "returns (0 = skip; default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-policy episodes")
    p.add_argument("--trust-pickle", action="store_true",
                   help="required: you trust the source of these pickle files (unpickling "
                        "can run code; metadt's reader is restricted, but a pickle is a "
                        "program)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.cli.info import format_card
    from metadt.data.official import import_official
    from metadt.fileio import read_json

    tasks = None
    if args.tasks:
        data = read_json(args.tasks)
        tasks = data.get("tasks") if isinstance(data, dict) else data
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise ValueError(f"{args.tasks}: expected a JSON list of task objects or an object "
                             f"with 'tasks'")
    ds = import_official(args.dir, args.family, args.out, qualities=args.quality,
                         goals=args.goals, tasks=tasks, num_train=args.num_train,
                         horizon=args.horizon, random_episodes=args.random_episodes,
                         seed=args.seed, trust_pickle=args.trust_pickle)
    print(format_card(ds, tasks_table=False))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0
