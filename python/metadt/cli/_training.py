"""Arguments and config resolution shared by `metadt train` and `metadt train-world-model`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from metadt.cli._dataset import add_no_verify, check_dataset


def add_training_arguments(p: argparse.ArgumentParser, *, config_name: str, out_default: str,
                           quality_default: str, set_example: str) -> None:
    """The options every training command takes (data, preset, out, seed, device, overrides)."""
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="size preset (default: cpu)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help=f"output directory (default: {out_default})")
    p.add_argument("--quality", default=None,
                   help=f"dataset quality to train on (default: {quality_default})")
    p.add_argument("--seed", type=int, default=None, help="seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"override a {config_name} field (repeatable), e.g. --set {set_example}")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_no_verify(p)


def resolve_config(args: argparse.Namespace, make: Callable[[str], Any]) -> tuple[Any, Any]:
    """Open the dataset and build its preset config with the command line's changes.

    `make(family)` returns the preset config; returns ``(dataset, config)``.
    """
    from metadt.data.dataset import Dataset
    from metadt.distributed import is_main

    ds = check_dataset(Dataset.open(args.data), args, quiet=not is_main())
    cfg = make(ds.card.family)
    for name in ("quality", "seed", "device"):
        if getattr(args, name) is not None:
            cfg = cfg.replace(**{name: getattr(args, name)})
    return ds, cfg.with_overrides(args.overrides).validate()


def default_out(args: argparse.Namespace, name: str) -> Path:
    """`--out`, or runs/<dataset dir name>/<name>."""
    return Path(args.out) if args.out else Path("runs") / Path(args.data).resolve().name / name
