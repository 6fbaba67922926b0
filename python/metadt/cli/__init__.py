"""The `metadt` command line.

Each subcommand lives in its own module of this package and defines:

- ``ORDER``: an int placing it in ``metadt --help`` (smaller first);
- ``register(subparsers)``: adds its parser and calls
  ``parser.set_defaults(func=run)`` where ``run(args) -> int`` is the command.

Modules are discovered automatically, so adding a command never edits this
file. The CLI is the only place that reads arguments or decides what to print;
library code takes configs and reports progress through callbacks or tqdm.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

DESCRIPTION = """\
metadt: Meta-DT, offline meta-RL as conditional sequence modeling.

Typical flow (point-robot, CPU-sized budget):
  metadt envs                                       # the task families
  metadt collect --family point-robot --preset cpu --out data/point-robot
  metadt info data/point-robot                      # what was collected
  metadt train-world-model --data data/point-robot --preset cpu
  metadt train --data data/point-robot --world-model runs/... --preset cpu
  metadt evaluate --run runs/...
  metadt run                                        # all of the above, one command

Every command has its own --help. Presets: `paper` (published sizes, for a GPU),
`cpu` (finishes on a laptop-class CPU in minutes), `smoke` (seconds, for tests).
"""


def _command_modules() -> list:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metadt",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from metadt import __version__

    parser.add_argument("--version", action="version", version=f"metadt {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # FileNotFoundError, FileExistsError, disk full, ...
        print(f"metadt: error: {exc}", file=sys.stderr)
        return 1
