"""`metadt train`: train Meta-DT, or a baseline/ablation, on a dataset."""
from __future__ import annotations

import argparse
import json

from metadt.cli._training import add_training_arguments, already_done, default_out, resolve_config

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
                    "OUT/config.json, OUT/checkpoint.safetensors, OUT/metrics.jsonl, OUT/model.safetensors, "
                    "OUT/run.json and OUT/curves.png. Run the same command again to resume.",
    )
    add_training_arguments(p, config_name="MetaDTConfig",
                           out_default="runs/<dataset>/<method>-<quality>-<preset>-s<seed>",
                           quality_default="medium", set_example="prompt_strategy=last")
    p.add_argument("--world-model", metavar="WM", default=None,
                   help="world-model directory (needed by methods using z or the complementary prompt)")
    p.add_argument("--method", default="meta-dt", choices=tuple(METHODS),
                   help="method preset (default: meta-dt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.config.meta_dt import MetaDTConfig
    from metadt.train.meta_dt import RESOLVED_FIELDS, train_meta_dt
    from metadt.distributed import is_main

    say = print if is_main() else (lambda *a, **k: None)  # torchrun: rank 0 prints

    ds, cfg = resolve_config(args, lambda family: MetaDTConfig.for_family(family, args.preset,
                                                                           args.method))
    out = default_out(args, f"{cfg.method}-{cfg.quality}-{cfg.preset}-s{cfg.seed}")
    if already_done(out, args, "training", "run.json", cfg, "training run", RESOLVED_FIELDS):
        return 0
    say(f"{cfg.method}: {ds.card.family} / {cfg.quality}, {cfg.num_steps} steps -> {out}")
    from metadt.evaluate.evaluator import training_return_probe

    probe = training_return_probe(args.data) if cfg.train_eval_every > 0 else None
    summary = train_meta_dt(args.data, cfg, out, args.world_model, overwrite=args.overwrite,
                            progress=not args.no_progress, evaluate_return=probe)
    losses = summary.pop("losses")
    summary["final_loss"] = losses[-1] if losses else None
    summary["out"] = str(out)
    say(json.dumps(summary, indent=2))
    return 0
