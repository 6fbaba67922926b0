"""The dataset-verification policy of the commands that read a dataset.

Every command that opens a dataset to read its data (train, train-world-model,
evaluate, profile, run) first verifies it once: every store is loaded with
``TrajectoryStore.load(..., verify=True)`` (CRC-32 of every file, finite
values) and checked against the card. ``--no-verify`` (same meaning in every
command) skips the full read and keeps the cheap checks (files present with the
manifest's sizes, headers, episode tables). ``metadt info`` does the cheap
checks, and the full one with ``--verify``. docs/store.md has the measured cost.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

NO_VERIFY_HELP = ("skip the full check of the dataset's files (CRC-32 of every file and "
                  "finite values: reads every byte once); the cheap checks (files present, "
                  "sizes, headers) still run")


def add_no_verify(p: argparse.ArgumentParser) -> None:
    """The ``--no-verify`` flag of a command that reads a dataset."""
    p.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)


def check_dataset(data: Any, args: argparse.Namespace, quiet: bool = False) -> Any:
    """Open (if a path) and check the dataset ``data`` as ``args.no_verify`` asks; returns
    the opened `Dataset`. Prints one line to stderr unless ``quiet``."""
    from metadt.data.dataset import Dataset

    ds = data if isinstance(data, Dataset) else Dataset.open(Path(data))
    verify = not getattr(args, "no_verify", False)
    t0 = time.perf_counter()
    counts = ds.check_stores(verify=verify)
    if not quiet:
        steps = sum(c["steps"] for c in counts.values())
        what = "verified (CRC-32, finite values)" if verify else "checked (files and sizes; --no-verify)"
        print(f"dataset {ds.path}: {len(counts)} stores, {steps} steps {what} in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
    return ds
