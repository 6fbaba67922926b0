"""`metadt train`: train Meta-DT, or a baseline/ablation, on a dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    from metadt.config.meta_dt import METHODS

    p = subparsers.add_parser(
        "train",
        help="train Meta-DT or a baseline (dt, prompt-dt, ablations) on a dataset",
        description="Train the conditioned decision transformer with one trainer for every "
                    "method: " + ", ".join(METHODS) + ". Batches come from "
                    "TrajectoryStore.sample_windows; z and the complementary prompt use the "
                    "world model of --world-model (from `metadt train-world-model`). Writes "
                    "OUT/config.json, OUT/checkpoint.pt, OUT/metrics.jsonl, OUT/model.pt, "
                    "OUT/run.json and OUT/curves.png. Run the same command again to resume.",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--world-model", metavar="WM", default=None,
                   help="world-model directory (needed by methods using z or the complementary prompt)")
    p.add_argument("--method", default="meta-dt", choices=tuple(METHODS),
                   help="method preset (default: meta-dt)")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="size preset (default: cpu)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default: runs/<dataset>/<method>-<quality>-<preset>-s<seed>)")
    p.add_argument("--quality", default=None, help="dataset quality to train on (default: medium)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a MetaDTConfig field (repeatable), e.g. --set prompt_strategy=last")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.config.meta_dt import MetaDTConfig
    from metadt.data.dataset import Dataset
    from metadt.train.meta_dt import train_meta_dt
    from metadt.distributed import is_main

    say = print if is_main() else (lambda *a, **k: None)  # torchrun: rank 0 prints

    ds = Dataset.open(args.data)
    cfg = MetaDTConfig.for_family(ds.card.family, args.preset, args.method)
    for name in ("quality", "seed", "device"):
        if getattr(args, name) is not None:
            cfg = cfg.replace(**{name: getattr(args, name)})
    cfg = cfg.with_overrides(args.overrides).validate()
    out = Path(args.out) if args.out else (
        Path("runs") / Path(args.data).resolve().name
        / f"{cfg.method}-{cfg.quality}-{cfg.preset}-s{cfg.seed}")
    say(f"{cfg.method}: {ds.card.family} / {cfg.quality}, {cfg.num_steps} steps -> {out}")
    summary = train_meta_dt(args.data, cfg, out, args.world_model, overwrite=args.overwrite,
                            progress=not args.no_progress)
    losses = summary.pop("losses")
    summary["final_loss"] = losses[-1] if losses else None
    summary["out"] = str(out)
    say(json.dumps(summary, indent=2))
    return 0
