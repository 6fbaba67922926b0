"""Files a user received are read as data: a FIFO, device, directory or huge (sparse)
file where metadt expects a JSON file, a tensor file or a pickle is a clear error,
never a hang or an out-of-memory (issue 19: run directories are data)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metadt import tensorfile
from metadt.fileio import MAX_JSON_BYTES, read_file_bytes, read_json


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.write(b"{}")
        fh.truncate(size)
    return path


def test_read_json_reads_a_regular_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"x": [1, 2]}))
    assert read_json(p) == {"x": [1, 2]}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("kind", ["fifo", "dir", "huge", "dev"])
def test_read_json_refuses_what_is_not_a_small_regular_file(tmp_path, kind):
    p = tmp_path / "card.json"
    if kind == "fifo":
        os.mkfifo(p)            # no writer: a blocking open would hang forever
        want = "not a regular file"
    elif kind == "dir":
        p.mkdir()
        want = "is a directory"
    elif kind == "huge":
        _sparse(p, MAX_JSON_BYTES + 1)
        want = "bytes, more than"
    else:
        p = Path("/dev/zero")   # endless: reading it whole would never end
        want = "not a regular file"
    with pytest.raises(ValueError, match=want):
        read_json(p)


def test_read_file_bytes_limit_is_exact(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100)
    assert read_file_bytes(p, 100) == b"x" * 100
    with pytest.raises(ValueError, match="100 bytes, more than a file may have \\(99\\)"):
        read_file_bytes(p, 99)


def test_tensor_file_in_place_of_a_fifo_or_a_huge_file(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(tensorfile.TensorFileError, match="not a regular file"):
        tensorfile.load(fifo, None)
    huge = _sparse(tmp_path / "checkpoint.safetensors", 1 << 40)   # 1 TiB > half of any RAM here; no disk used
    with pytest.raises(tensorfile.TensorFileError, match="bytes, more than a tensor file may have"):
        tensorfile.load(huge, None)


def test_cli_on_a_dataset_whose_card_is_a_fifo_fails_fast(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    os.mkfifo(d / "card.json")
    r = subprocess.run([sys.executable, "-m", "metadt", "info", str(d)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "card.json: not a regular file" in r.stderr and "Traceback" not in r.stderr, r.stderr
