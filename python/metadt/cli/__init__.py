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


class _VersionAction(argparse.Action):
    """``--version``: the provenance record (metadt.provenance), readably."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        from metadt.provenance import format_provenance

        print(format_provenance())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metadt",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the metadt version, git commit and the versions of torch, "
                             "numpy, gymnasium, mujoco, metaworld and triton (the provenance "
                             "every result file records), then exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # a deprecated name used on the command line (a flag, a --set field, a config file) is
    # shown once; Python hides DeprecationWarnings outside __main__ by default
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"metadt(\.|$)")
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # `metadt ... | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)  # no second error when Python flushes
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell tool killed by the signal
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # FileNotFoundError, FileExistsError, disk full, ...
        print(f"metadt: error: {exc}", file=sys.stderr)
        return 1
