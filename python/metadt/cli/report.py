"""`metadt report`: results tables and plots from finished runs, side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 60


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="rebuild results.json / results.md / plots from finished runs (compare several)",
        description=(
            "Rebuild the report from finished evaluations. Each RUN is a `metadt run` output "
            "directory, a `metadt train` run directory, or an eval.json; every eval.json "
            "below it belongs to its group. Per method and setting: mean ± std return over "
            "test tasks and seeds, normalized score (random = 0, dataset max = 1), the "
            "dataset's max and mean returns beside it, per-task tables and learning curves; "
            "over seeds x every task unseen in training: IQM and mean with stratified-bootstrap "
            "95% CIs, probabilities of improvement of Meta-DT over each baseline (rliable), the "
            "z / prompt reliance diagnostics and the z probe, and an interval plot. "
            "With several RUNs the groups are also compared side by side."),
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run / pipeline directories or eval.json files")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report directory (default: RUN/report for one RUN, ./report otherwise)")
    p.add_argument("--name", dest="names", action="append", default=None, metavar="NAME",
                   help="a group's name in the comparison (repeat, one per RUN)")
    p.add_argument("--title", default="metadt results", help="report title")
    p.add_argument("--reps", type=int, default=2000, metavar="N",
                   help="bootstrap resamples of the rliable confidence intervals (default 2000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.report.build import build_report

    if args.names and len(args.names) != len(args.runs):
        raise ValueError(f"--name given {len(args.names)} times for {len(args.runs)} runs")
    if args.out:
        out = Path(args.out)
    elif len(args.runs) == 1 and Path(args.runs[0]).is_dir():
        out = Path(args.runs[0]) / "report"
    else:
        out = Path("report")
    if args.reps < 1:
        raise ValueError("--reps must be >= 1")
    build_report(args.runs, out, names=args.names, title=args.title, reps=args.reps)
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"report written to {out}/ (results.json, results.md, *.png)")
    return 0
