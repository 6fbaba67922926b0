"""The flags every long command shares, with one meaning everywhere.

``add_common_flags(parser)`` adds, to each of `run`, `collect`, `train-world-model`,
`train`, `evaluate` and `profile`:

  --no-progress    no progress bars
  --seed S         the seed of what the command computes (default: the config's, 0)
  --device D       torch device: cpu, cuda, cuda:N or auto (default: the preset's)
  --threads N      torch intra-op threads (default: the preset's; 0 = torch's default)
  --overwrite      start over: discard the command's previous output in --out
                   (not in `profile`, which writes no output directory)

`flag_overrides(args, config_cls)` turns the given ones into ``field=value``
overrides of a config, so a flag and ``--set`` mean the same thing.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

COMMON_FLAGS = ("--no-progress", "--seed", "--device", "--threads", "--overwrite")

#: config field names a flag sets, first existing one wins
_FIELDS = {"seed": ("seed",), "device": ("device",),
           "threads": ("num_threads", "torch_threads")}


def add_common_flags(p: argparse.ArgumentParser, *, overwrite: bool = True,
                     overwrite_help: str = "start over: discard this command's previous "
                                           "output in --out instead of resuming it",
                     seed_help: str = "seed (default: the config's, 0)",
                     threads_help: str = "torch intra-op threads (default: the preset's; "
                                         "0 = torch's default)") -> None:
    """Add the shared flags to a long command's parser (see the module docstring)."""
    g = p.add_argument_group("common flags (the same in every long command)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--seed", type=int, default=None, metavar="S", help=seed_help)
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda, cuda:N or auto (default: the preset's)")
    g.add_argument("--threads", type=int, default=None, metavar="N", help=threads_help)
    if overwrite:
        g.add_argument("--overwrite", action="store_true", help=overwrite_help)


def check_common(args: argparse.Namespace) -> None:
    """Refuse out-of-range shared flags before anything runs."""
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if getattr(args, "seed", None) is not None:
        from metadt.config.base import check_seed

        check_seed(args.seed, "--seed")


def flag_overrides(args: argparse.Namespace, config_cls: Any, *,
                   skip: tuple[str, ...] = ()) -> list[str]:
    """``field=value`` overrides of ``config_cls`` for the shared flags given in ``args``."""
    check_common(args)
    names = {f.name for f in dataclasses.fields(config_cls)}
    out = []
    for flag, fields in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is None or flag in skip:
            continue
        for field in fields:
            if field in names:
                out.append(f"{field}={value}")
                break
    return out


def remove_output(path: Any, markers: tuple[str, ...], what: str) -> bool:
    """``--overwrite``: delete the directory ``path`` when it holds metadt output (one of
    ``markers`` inside it); refuse any other non-empty directory (never delete what
    metadt did not write). Returns True when something was deleted."""
    import shutil
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return False
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"--overwrite: {path} is not a directory; not deleting it")
    if not any(path.iterdir()):
        return False
    if not any((path / m).exists() for m in markers):
        raise ValueError(f"--overwrite: {path} does not look like a metadt {what} (none of "
                         f"{', '.join(markers)} in it); not deleting it")
    shutil.rmtree(path)
    return True
