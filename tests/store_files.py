"""Helpers to build small stores and edit their files on disk (tests and the fuzz campaign)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

import metadt


def small_store(lengths=(5, 8, 3), od=2, ad=1, seed=0, columns=("err",)):
    """Episode i has task i % 2; obs/actions/rewards random; an attached
    non-negative column per name in ``columns``."""
    rng = np.random.default_rng(seed)
    s = metadt.TrajectoryStore(od, ad)
    for i, T in enumerate(lengths):
        s.add_episode(rng.normal(size=(T, od)), rng.normal(size=(T, ad)), rng.normal(size=T), task=i % 2)
    for c in columns:
        s.attach_column(c, np.abs(rng.normal(size=(s.num_steps, 2))).astype(np.float32))
    return s


def manifest(d) -> dict:
    return json.loads((Path(d) / "manifest.json").read_text())


def write_manifest(d, m: dict) -> None:
    (Path(d) / "manifest.json").write_text(json.dumps(m))


def entry(m: dict, name: str) -> dict:
    return next(f for f in m["files"] if f["name"] == name)


def refresh_entry(d, name: str) -> None:
    """Make the manifest's size and CRC of file ``name`` match the file again
    (so only the content checks can catch an edit)."""
    m = manifest(d)
    e = entry(m, name)
    data = (Path(d) / e["file"]).read_bytes()
    e["bytes"], e["crc32"] = len(data), zlib.crc32(data)
    write_manifest(d, m)


def rewrite_npy(d, name: str, arr: np.ndarray) -> None:
    """Replace the .npy of ``name`` by ``arr`` (header by NumPy) with a
    consistent manifest entry (shape, bytes, CRC)."""
    buf = io.BytesIO()
    np.save(buf, arr)
    m = manifest(d)
    e = entry(m, name)
    (Path(d) / e["file"]).write_bytes(buf.getvalue())
    e["shape"] = list(arr.shape)
    write_manifest(d, m)
    refresh_entry(d, name)


def patch_values(d, name: str, fn) -> None:
    """Apply ``fn`` to the array of file ``name`` in place (same shape and
    dtype, same header) and fix its manifest size and CRC."""
    m = manifest(d)
    path = Path(d) / entry(m, name)["file"]
    arr = np.load(path).copy()
    fn(arr)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - arr.nbytes] + arr.tobytes())
    refresh_entry(d, name)


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (a crash or hang there is a test
    failure here, not a lost test run)."""
    here = str(Path(__file__).resolve().parent)
    prelude = f"import sys; sys.path.insert(0, {here!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout)
