"""`metadt run`: the main job, from data to the results table, in one command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metadt.cli._common import add_common_flags, check_common, remove_output
from metadt.cli._dataset import add_no_verify

ORDER = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole pipeline: collect, world model, Meta-DT + baselines, evaluate, report",
        description=(
            "Run the whole Meta-DT pipeline for a task family: collect the offline datasets "
            "(if --data holds none), train the world model, train Meta-DT and every baseline "
            "and ablation (DT, Prompt-DT, Meta-DT without z / without prompt / with a random "
            "prompt), evaluate them zero-shot and few-shot on the unseen test tasks, and "
            "write the report (OUT/report/results.md, results.json, plots). With no "
            "arguments: point-robot, cpu preset, one seed (minutes on a 2-core CPU). "
            "Interrupt it at any time; the same command resumes where it stopped."),
    )
    p.add_argument("--family", default="point-robot", help="task family (see `metadt envs`)")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="budget of every stage (default cpu)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="training seeds (default 1)")
    p.add_argument("--first-seed", type=int, default=None, metavar="S",
                   help="first training seed (default 0; same as --seed)")
    p.add_argument("--methods", default=None, metavar="M1,M2",
                   help="methods to train (default all: meta-dt, dt, prompt-dt, meta-dt-no-z, "
                        "meta-dt-no-prompt, meta-dt-random-prompt)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default runs/<family>-<preset>)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory, collected there if missing "
                        "(default data/<family>-<preset>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override FIELD in every stage config that has it (repeatable), e.g. "
                        "--set device=cpu or --set num_steps=500 (world model and every "
                        "method); a field no stage has is an error. --set-STAGE targets one "
                        "stage and wins over --set")
    for stage, what in (("collect", "CollectConfig"), ("world-model", "WorldModelConfig"),
                        ("train", "MetaDTConfig (every method)"), ("evaluate", "EvaluateConfig")):
        p.add_argument(f"--set-{stage}", dest=f"set_{stage.replace('-', '_')}", action="append",
                       default=[], metavar="FIELD=VALUE", help=f"override a {what} field (repeatable)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="independent trainings run at once, each in its own process with "
                        "--threads torch threads: the seeds' world models, then every method "
                        "(train + evaluate) of a seed once its world model is done; results "
                        "equal --jobs 1 (default: the machine's cores, here "
                        f"{_cores()})")
    p.add_argument("--eval-tasks", type=int, default=None, metavar="N",
                   help="also evaluate on N extra unseen goals drawn from a seed disjoint from the "
                        "dataset's, never trained on (point-robot; = --set-evaluate eval_tasks=N)")
    add_no_verify(p)
    add_common_flags(p, seed_help="first training seed: the seeds are S .. S+N-1 for --seeds N "
                                  "(default 0; the data's seed is the collect_seed field)",
                     threads_help="torch threads of every stage (default 1: fastest for the "
                                  "small cpu-preset models on a shared machine; 0 = torch's "
                                  "default)",
                     overwrite_help="start over: delete OUT (the previous models, evaluations "
                                    "and report); the dataset in --data is kept")
    p.set_defaults(func=run)


def _cores() -> int:
    """CPU cores this process may use."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    from metadt.config.pipeline import PipelineConfig
    from metadt.pipeline.runner import PIPELINE_FILE, REPORT_DIR

    check_common(args)
    if args.seed is not None and args.first_seed is not None and args.seed != args.first_seed:
        raise ValueError("--seed and --first-seed are the same option; give one")
    first = args.seed if args.seed is not None else (args.first_seed or 0)
    cfg = PipelineConfig(
        family=args.family, preset=args.preset, seeds=args.seeds, first_seed=first,
        data=args.data or "", overrides=tuple(args.overrides),
        collect_overrides=tuple(args.set_collect), world_model_overrides=tuple(args.set_world_model),
        train_overrides=tuple(args.set_train),
        evaluate_overrides=tuple(args.set_evaluate) + (
            (f"eval_tasks={args.eval_tasks}",) if args.eval_tasks is not None else ()),
        torch_threads=args.threads if args.threads is not None else 1,
        device=args.device or "", jobs=args.jobs if args.jobs is not None else _cores(),
    )
    if args.methods:
        cfg = cfg.replace(methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    cfg.validate()
    out = args.out or f"runs/{cfg.family}-{cfg.preset}"
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    from metadt.cli.collect import _Bars
    from metadt.distributed import is_main
    from metadt.pipeline.runner import Pipeline

    pipe = Pipeline(cfg, out, progress=say, bars=not args.no_progress, verify=not args.no_verify)
    pipe.check_configs()  # every name and override, before anything is deleted or written
    if args.overwrite and is_main():
        data, dest = Path(cfg.data_dir()).resolve(), Path(out).resolve()
        if data == dest or dest in data.parents:
            raise ValueError(f"--overwrite: the dataset {cfg.data_dir()} is inside {out}; "
                             f"not deleting it")
        if remove_output(out, (PIPELINE_FILE,), "pipeline output"):
            say(f"--overwrite: deleted {out}")
    bars = _Bars(disable=args.no_progress or not is_main())
    pipe.collect_progress = bars if is_main() else None
    try:
        pipe.run()
    finally:
        bars.close()
    if is_main():  # under torchrun: rank 0 prints
        print((Path(out) / REPORT_DIR / "results.md").read_text(encoding="utf-8"))
    return 0
