"""Provenance: what made a result (versions, commit, device, command line).

Every JSON metadt writes as a result -- the dataset card, a training run's
``run.json`` and ``config.json``, a world model's ``report.json``, an evaluation's
``eval.json``, the report's ``results.json`` and a pipeline's ``pipeline.json`` --
records ``provenance()`` under the key ``"provenance"``, and ``metadt --version``
prints it. Versions come from the installed distributions' metadata
(``importlib.metadata``): nothing heavy (torch, mujoco, ...) is imported to learn
them. The git commit is the one of the checkout metadt runs from, when it runs
from one (an editable install); ``None`` otherwise.
"""
from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded (None when not installed).
PACKAGES = ("metadt", "torch", "numpy", "gymnasium", "mujoco", "metaworld", "triton")
PROVENANCE_KEY = "provenance"


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None when not installed)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this metadt is imported from (``-dirty`` appended
    when tracked files differ), or None (not a checkout, no git)."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        if not top or not (Path(top) / "python" / "metadt" / "provenance.py").is_file():
            return None  # some other repository that happens to contain an install
        sha = subprocess.run(["git", "-C", top, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def provenance(device: str | None = None) -> dict[str, Any]:
    """The provenance record: versions of `PACKAGES`, git commit, python, platform, the
    torch ``device`` used (when the caller knows it) and the command line."""
    return {
        "metadt_version": package_version("metadt"),
        "git_commit": git_commit(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": None if device is None else str(device),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        if sys.argv and sys.argv[0] else None,
        "cwd": os.getcwd(),
    }


def format_provenance(record: dict[str, Any] | None = None) -> str:
    """``metadt --version``: the record as readable lines."""
    rec = provenance() if record is None else record
    lines = [f"metadt {rec['metadt_version'] or 'unknown'}"
             + (f" (git {rec['git_commit']})" if rec.get("git_commit") else "")]
    for name, ver in rec["versions"].items():
        if name != "metadt":
            lines.append(f"  {name:10} {ver or 'not installed'}")
    lines.append(f"  {'python':10} {rec['python']} on {rec['platform']}")
    return "\n".join(lines)
