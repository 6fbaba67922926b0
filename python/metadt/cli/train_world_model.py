"""`metadt train-world-model`: train the context-aware world model on a dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-world-model",
        help="train the world model (task representation z) on a dataset's training tasks",
        description="Train the context-aware world model (GRU context encoder -> z, reward "
                    "and/or transition decoder) on the training tasks of a dataset, with "
                    "batches from TrajectoryStore.sample_transitions. Writes OUT/config.json, "
                    "OUT/model.pt, OUT/metrics.jsonl, OUT/curves.png and OUT/report.json "
                    "(test-task loss, linear probe R^2 of z -> task parameter on test tasks, "
                    "medium-vs-expert z distances). Run the same command again to resume.",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="size preset (default: cpu)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: runs/<dataset>/world-model-<quality>-<preset>-s<seed>)")
    p.add_argument("--quality", default=None, help="dataset quality to train on (default: mixed)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a WorldModelConfig field (repeatable), e.g. --set num_steps=500")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metadt.config.world_model import WorldModelConfig
    from metadt.data.dataset import Dataset
    from metadt.train.world_model import train_world_model
    from metadt.distributed import is_main

    say = print if is_main() else (lambda *a, **k: None)  # torchrun: rank 0 prints

    ds = Dataset.open(args.data)
    cfg = WorldModelConfig.for_family(ds.card.family, args.preset)
    for name in ("quality", "seed", "device"):
        if getattr(args, name) is not None:
            cfg = cfg.replace(**{name: getattr(args, name)})
    cfg = cfg.with_overrides(args.overrides).validate()
    out = Path(args.out) if args.out else (
        Path("runs") / Path(args.data).resolve().name
        / f"world-model-{cfg.quality}-{cfg.preset}-s{cfg.seed}")
    say(f"world model: {ds.card.family} / {cfg.quality}, {cfg.num_steps} steps -> {out}")
    rep = train_world_model(args.data, cfg, out, overwrite=args.overwrite,
                            progress=not args.no_progress)
    probe = rep.get("probe") or {}
    inv = rep.get("behaviour_invariance") or {}
    say(json.dumps({"out": str(out), "test_task_loss": rep.get("test_task_loss"),
                      "probe_r2_test": probe.get("r2_test"),
                      "fraction_same_task_closer": inv.get("fraction_same_task_closer")},
                     indent=2))
    return 0
