"""Arguments and config resolution shared by `metadt train` and `metadt train-world-model`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from metadt.cli._common import add_common_flags, flag_overrides
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
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"override a {config_name} field (repeatable), e.g. --set {set_example}")
    add_no_verify(p)
    add_common_flags(p)


def resolve_config(args: argparse.Namespace, make: Callable[[str], Any]) -> tuple[Any, Any]:
    """Open the dataset and build its preset config with the command line's changes.

    `make(family)` returns the preset config; returns ``(dataset, config)``.
    """
    from metadt.data.dataset import Dataset
    from metadt.distributed import is_main

    ds = check_dataset(Dataset.open(args.data), args, quiet=not is_main())
    cfg = make(ds.card.family)
    if args.quality is not None:
        cfg = cfg.replace(quality=args.quality)
    overrides = flag_overrides(args, type(cfg)) + list(args.overrides)  # --set wins
    return ds, cfg.with_overrides(overrides).validate()


def default_out(args: argparse.Namespace, name: str) -> Path:
    """`--out`, or runs/<dataset dir name>/<name>."""
    return Path(args.out) if args.out else Path("runs") / Path(args.data).resolve().name / name


def already_done(out: Path, args: argparse.Namespace, what: str, summary_file: str,
                 cfg: Any, run_what: str, resolved: tuple[str, ...] = ()) -> bool:
    """True (after saying so) when ``out`` holds a finished run of ``cfg`` and --overwrite
    is not given: rerunning a finished training is a no-op, not a zero-step training. A
    finished run of another config is refused (``RunDirMismatch``, naming the fields);
    the ``resolved`` fields, which the trainer fills in from the dataset and world model,
    are not compared here."""
    import dataclasses
    import json
    import sys

    from metadt.distributed import is_main
    from metadt.fileio import read_json
    from metadt.train.loop import training_run_dir

    run = training_run_dir(out, run_what, getattr(cfg, "RENAMED", None))
    if args.overwrite or not run.finished:
        return False
    run = dataclasses.replace(run, runtime=run.runtime | frozenset(resolved))
    run.check(cfg.to_dict())
    if is_main():
        print(f"{out}: {what} already done; nothing to train (--overwrite starts over)",
              file=sys.stderr)
        if (out / summary_file).is_file():
            print(json.dumps(read_json(out / summary_file), indent=2))
    return True
