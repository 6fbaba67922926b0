"""`metadt profile`: where a training step's time goes."""
from __future__ import annotations

import argparse
import sys

from metadt.cli._common import add_common_flags, check_common
from metadt.cli._dataset import add_no_verify, check_dataset

ORDER = 70


def register(subparsers: argparse._SubParsersAction) -> None:
    from metadt.config.meta_dt import METHODS

    p = subparsers.add_parser(
        "profile",
        help="time a training step's phases (sampling, copy, z, forward, backward, optimizer)",
        description="Run N training steps of Meta-DT (or, with --stage world-model, of the world "
                    "model) with the trainer's own step function and print the time per step "
                    "split into batch sampling, host-to-device copy, z computation, forward, "
                    "backward, optimizer step and other; the share of each; steps/s and "
                    "samples/s. Modes: the Rust sampler in the step (as `metadt train` runs), "
                    "the Rust prefetching iterator (store.prefetch), and with --compare a plain "
                    "PyTorch DataLoader over a NumPy gather. CPU: wall clock; CUDA: CUDA events. "
                    "Nothing is written except --json/--trace. See docs/profile.md.",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--world-model", metavar="WM", default=None,
                   help="world-model directory for Meta-DT's z and prompt (default: an untrained "
                        "world model of the preset's size: same cost, random z)")
    p.add_argument("--stage", default="meta-dt", choices=("meta-dt", "world-model"),
                   help="which trainer to profile (default: meta-dt)")
    p.add_argument("--method", default="meta-dt", choices=tuple(METHODS),
                   help="method preset of the Meta-DT stage (default: meta-dt)")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="size preset (default: cpu)")
    p.add_argument("--quality", default=None, help="dataset quality (default: the preset's)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per mode (default: 50)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps before them, per mode (default: 5)")
    p.add_argument("--start-step", type=int, default=None,
                   help="index of the first step (default: Meta-DT's warm_train, i.e. with the "
                        "prompt; 0 for the world model)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="skip the prefetching-iterator mode")
    p.add_argument("--prefetch-depth", type=int, default=2,
                   help="batches the prefetch thread keeps ready (default: 2)")
    p.add_argument("--compare", action="store_true",
                   help="also run the steps with a torch DataLoader over a NumPy gather")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes in --compare (default: 0)")
    p.add_argument("--block", type=int, default=10,
                   help="modes run interleaved, this many steps at a time (default: 10)")
    p.add_argument("--trace", metavar="PATH", default=None,
                   help="write a PyTorch profiler trace (Chrome/Perfetto JSON) of a few steps")
    p.add_argument("--trace-steps", type=int, default=3, help="steps in the trace (default: 3)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the figures as JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (repeatable), e.g. --set batch_size=64")
    add_no_verify(p)
    add_common_flags(p, overwrite=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.data.dataset import Dataset
    from metadt.fileio import atomic_write_json
    from metadt.profile.step import profile_meta_dt, profile_world_model
    from metadt.profile.table import advice, describe, format_table

    check_common(args)
    ds = check_dataset(Dataset.open(args.data), args, quiet=args.no_progress)
    modes = ["sampler"] + ([] if args.no_prefetch else ["prefetch"]) + \
        (["dataloader"] if args.compare else [])
    common = dict(steps=args.steps, warmup=args.warmup, modes=modes, workers=args.workers,
                  prefetch_depth=args.prefetch_depth, block=args.block, trace=args.trace,
                  trace_steps=args.trace_steps,
                  on_mode=(lambda m: None) if args.no_progress else
                  (lambda m: print(f"setting up: {m}", file=sys.stderr, flush=True)))
    if args.stage == "world-model":
        from metadt.config.world_model import WorldModelConfig

        cfg = WorldModelConfig.for_family(ds.card.family, args.preset)
    else:
        from metadt.config.meta_dt import MetaDTConfig

        cfg = MetaDTConfig.for_family(ds.card.family, args.preset, args.method)
    for name in ("quality", "seed", "device"):
        if getattr(args, name) is not None:
            cfg = cfg.replace(**{name: getattr(args, name)})
    cfg = cfg.with_overrides(args.overrides).validate()
    if args.threads is not None:
        if hasattr(cfg, "num_threads"):  # the trainer applies it; so does the profiler
            cfg = cfg.replace(num_threads=args.threads)  # 0 = torch's default
        else:
            from metadt.runtime import set_threads

            set_threads(args.threads)  # 0 = torch's default: unchanged
    if args.stage == "world-model":
        if args.world_model is not None:
            print("note: --world-model is ignored with --stage world-model", file=sys.stderr)
        doc = profile_world_model(args.data, cfg, start_step=args.start_step or 0, **common)
    else:
        doc = profile_meta_dt(args.data, cfg, args.world_model, start_step=args.start_step,
                              **common)
    print(describe(doc))
    print()
    print(format_table(doc))
    print()
    for line in advice(doc):
        print(f"- {line}")
    if args.json:
        atomic_write_json(args.json, doc)
        print(f"figures: {args.json}")
    if doc.get("trace"):
        print(f"trace: {doc['trace']} (open in https://ui.perfetto.dev or chrome://tracing)")
    return 0
