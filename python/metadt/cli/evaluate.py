"""`metadt evaluate`: zero-shot / few-shot evaluation of a finished training run."""
from __future__ import annotations

import argparse
import sys

from metadt.cli._common import add_common_flags, flag_overrides
from metadt.cli._dataset import add_no_verify, check_dataset

ORDER = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on the test tasks (zero-shot, few-shot, expert prompt)",
        description=(
            "Evaluate a finished `metadt train` run on every test task and a few training "
            "tasks, in the settings of its method: Meta-DT zero-shot (z online from its own "
            "last h transitions) and few-shot (it first collects its own episodes: "
            "rounds of a few episodes with exploration noise, the first zero-shot, the later "
            "ones prompted by its best episode so far; the world model scores its best trajectory and the complementary segment becomes "
            "the prompt; no expert demonstration); Prompt-DT with an expert-data prompt and "
            "with its own trajectories; DT zero-shot. The target return is the dataset's max "
            "return of each task. Results go to RUN/eval.json (resumable: finished settings "
            "are kept); `metadt report` turns them into tables and plots."),
    )
    p.add_argument("--run", required=True, metavar="RUN", help="a finished training run directory")
    p.add_argument("--preset", default=None, choices=("paper", "cpu", "smoke"),
                   help="evaluation preset (default: the run's preset)")
    p.add_argument("--settings", default=None, metavar="S1,S2",
                   help="settings to evaluate: zero-shot, few-shot, expert-prompt "
                        "(default: the method's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an EvaluateConfig field (repeatable), e.g. episodes=5")
    p.add_argument("--out", default=None, metavar="FILE", help="results file (default RUN/eval.json)")
    p.add_argument("--fresh", action="store_true", help="ignore finished settings in the results file")
    p.add_argument("--eval-tasks", type=int, default=None, metavar="N",
                   help="also evaluate on N extra unseen goals drawn from a seed disjoint from the "
                        "dataset's (point-robot; = --set eval_tasks=N)")
    p.add_argument("--quiet", dest="no_progress", action="store_true",
                   help="print only the final table (same as --no-progress)")
    add_no_verify(p)
    add_common_flags(p, seed_help="evaluation seed: env resets and random prompt segments, "
                                  "offset by the run's seed (default: 0; = --set seed=S)",
                     overwrite_help="start over: discard the finished settings in the "
                                    "results file (same as --fresh)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.config.evaluate import EvaluateConfig
    from metadt.evaluate.evaluator import evaluate_run
    from metadt.report.tables import eval_table
    from metadt.train.run import load_run

    preset = args.preset
    loaded = load_run(args.run, device="cpu")
    check_dataset(loaded.dataset_path, args, quiet=args.no_progress)
    if preset is None:
        preset = loaded.config.preset if loaded.config.preset in ("paper", "cpu", "smoke") else "cpu"
        family = loaded.family
    else:
        family = None
    del loaded
    cfg = EvaluateConfig.for_family(family or "point-robot", preset)
    overrides = flag_overrides(args, EvaluateConfig) + list(args.overrides)  # --set wins
    if args.settings:
        overrides.append(f"settings={args.settings}")
    if args.eval_tasks is not None:
        overrides.append(f"eval_tasks={args.eval_tasks}")
    cfg = cfg.with_overrides(overrides).validate()
    progress = None if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    res = evaluate_run(args.run, cfg, out=args.out, progress=progress,
                       fresh=args.fresh or args.overwrite)
    print(eval_table([res]))
    return 0
