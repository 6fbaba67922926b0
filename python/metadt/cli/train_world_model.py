"""`metadt train-world-model`: train the context-aware world model on a dataset."""
from __future__ import annotations

import argparse
import json

from metadt.cli._training import add_training_arguments, already_done, default_out, resolve_config

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-world-model",
        help="train the world model (task representation z) on a dataset's training tasks",
        description="Train the context-aware world model (GRU context encoder -> z, reward "
                    "and/or transition decoder) on the training tasks of a dataset, with "
                    "batches from TrajectoryStore.sample_transitions. Writes OUT/config.json, "
                    "OUT/model.safetensors, OUT/metrics.jsonl, OUT/curves.png and OUT/report.json "
                    "(test-task loss, linear probe R^2 of z -> task parameter on test tasks, "
                    "medium-vs-expert z distances). The default data is the union of the "
                    "random, medium and expert qualities and the decoders also predict 4 other "
                    "transitions of the same task (task_targets); --quality mixed --set "
                    "task_targets=0 is the paper's recipe. Run the same command again to resume.",
    )
    add_training_arguments(p, config_name="WorldModelConfig",
                           out_default="runs/<dataset>/world-model-<quality>-<preset>-s<seed>",
                           quality_default="random+medium+expert; '+' joins qualities", set_example="num_steps=500")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.config.world_model import WorldModelConfig
    from metadt.evaluate.world_model_report import world_model_report
    from metadt.train.world_model import train_world_model
    from metadt.distributed import is_main

    say = print if is_main() else (lambda *a, **k: None)  # torchrun: rank 0 prints

    ds, cfg = resolve_config(args, lambda family: WorldModelConfig.for_family(family, args.preset))
    out = default_out(args, f"world-model-{cfg.quality}-{cfg.preset}-s{cfg.seed}")
    if already_done(out, args, "world-model training", "report.json", cfg,
                    "world-model training"):
        return 0
    say(f"world model: {ds.card.family} / {cfg.quality}, {cfg.num_steps} steps -> {out}")
    rep = train_world_model(args.data, cfg, out, overwrite=args.overwrite,
                            progress=not args.no_progress, report=world_model_report)
    probe = rep.get("probe") or {}
    inv = rep.get("behaviour_invariance") or {}
    say(json.dumps({"out": str(out), "test_task_loss": rep.get("test_task_loss"),
                      "probe_quality": probe.get("quality"),
                      "probe_r2_test": probe.get("r2_test"),
                      "fraction_same_task_closer": inv.get("fraction_same_task_closer")},
                     indent=2))
    return 0
