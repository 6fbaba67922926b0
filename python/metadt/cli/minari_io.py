"""`metadt export-minari` and `metadt import-minari`: Minari datasets in and out."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from metadt.cli._dataset import add_no_verify, check_dataset

ORDER = 27

EXPORT_DESCRIPTION = """\
Write each quality of a metadt dataset as a Minari dataset (the offline-RL
dataset standard of the Farama Foundation), with the `minari` package's own
writer: ids `metadt/<family>/<quality>-v0` under --out (use --out as
MINARI_DATASETS_PATH, or `minari.load_dataset(id)` with it set).

Per episode: observations [T+1, obs] (the T observations, then the last
next observation), actions, rewards, and terminations and truncations kept
apart (a true termination vs a time-limit cut); the episode metadata holds
task_id and task_params (the task's parameters as JSON). The dataset
metadata holds the metadt dataset card (`metadt_card`, JSON).

Needs the optional extra: pip install "metadt[minari]" (pip install
".[minari]" in a checkout). The dataset is verified first (--no-verify skips
the full read, as in every command that reads a dataset).
"""

EXPORT_EPILOG = """\
examples:
  metadt export-minari data/point-robot --out minari-data
  MINARI_DATASETS_PATH=minari-data python -c "import minari; \\
      print(minari.load_dataset('metadt/point-robot/expert-v0').total_steps)"
"""

IMPORT_DESCRIPTION = """\
Read Minari datasets written by `metadt export-minari` back into a metadt
dataset directory (one store per quality, the card from the export). DIR is
the export's --out (every dataset under it is read; select with --id).

A Minari dataset is data from anyone: every field is checked before anything
is stored (the card as strictly as card.json; per episode the shapes, dtypes
and finiteness of observations, actions and rewards, termination and
truncation flags, and a task id that is one of the card's tasks, with the
card's parameters). Nothing in it is executed (an environment spec it may
carry is never used). Needs pip install "metadt[minari]".
"""

IMPORT_EPILOG = """\
examples:
  metadt import-minari minari-data --out data/point-robot-back
  metadt import-minari minari-data --id metadt/point-robot/expert-v0 --out data/pr-expert
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export-minari", help="write a dataset's qualities as Minari datasets",
                              description=EXPORT_DESCRIPTION, epilog=EXPORT_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="metadt dataset directory (holds card.json)")
    p.add_argument("--out", required=True, help="Minari datasets root directory (created if absent)")
    p.add_argument("--quality", action="append", default=None,
                   help="quality to export (repeatable; default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace Minari datasets of the same ids under --out")
    add_no_verify(p)
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("import-minari", help="read Minari datasets made by export-minari "
                              "into a metadt dataset", description=IMPORT_DESCRIPTION,
                              epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="Minari datasets root (the --out of export-minari)")
    p.add_argument("--out", required=True, help="metadt dataset directory to create")
    p.add_argument("--id", action="append", default=None, dest="ids",
                   help="Minari dataset id to import (repeatable; default: every dataset under DIR)")
    p.set_defaults(func=run_import)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _minari_or_error() -> bool:
    """False (after printing the install hint) when the optional extra is missing."""
    from metadt.data.minari_format import require_minari

    try:
        require_minari()
    except ImportError as exc:
        print(f"metadt: error: {exc}", file=sys.stderr)
        return False
    return True


def run_export(args: argparse.Namespace) -> int:
    from metadt.data.minari_format import export_minari

    if not _minari_or_error():
        return 1
    ds = check_dataset(args.dataset, args)
    ids = export_minari(ds, args.out, qualities=args.quality, overwrite=args.overwrite, progress=_say)
    for q, did in ids.items():
        print(f"{q}\t{did}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from metadt.data.minari_format import import_minari

    if not _minari_or_error():
        return 1
    ds = import_minari(args.dir, args.out, ids=args.ids, progress=_say)
    counts = ds.check_stores(verify=True)
    print(f"{ds.path}: {len(counts)} qualities ({', '.join(counts)}), "
          f"{sum(c['steps'] for c in counts.values())} steps")
    return 0
