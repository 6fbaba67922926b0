"""Provenance (issue 18 item 3): every result JSON of a smoke pipeline says what made it."""
from __future__ import annotations

import json
import sys
from importlib.metadata import version

import pytest

from metadt.provenance import PACKAGES, provenance

KEYS = {"metadt_version", "git_commit", "versions", "python", "platform", "device", "command"}


def _check(rec, where):
    assert isinstance(rec, dict), f"{where}: no provenance"
    assert KEYS <= set(rec), f"{where}: missing {KEYS - set(rec)}"
    assert set(rec["versions"]) == set(PACKAGES), where
    assert rec["metadt_version"] == version("metadt"), where
    assert rec["versions"]["torch"] == version("torch"), where
    assert rec["versions"]["numpy"] == version("numpy"), where


def test_provenance_reads_versions_without_importing_heavy_packages():
    import subprocess

    code = ("import sys; from metadt.provenance import provenance; p = provenance(); "
            "print(sorted(m for m in ('torch', 'mujoco', 'metaworld', 'triton', 'gymnasium') "
            "if m in sys.modules)); print(p['versions']['torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["[]", version("torch")]
    rec = provenance("cpu")
    _check(rec, "provenance()")
    assert rec["device"] == "cpu"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from metadt.cli import main

    root = tmp_path_factory.mktemp("prov")
    out, data = root / "run", root / "data"
    argv = ["run", "--preset", "smoke", "--methods", "meta-dt,dt", "--out", str(out),
            "--data", str(data), "--jobs", "1", "--no-progress", "--device", "cpu",
            "--set", "num_steps=5"]
    with pytest.MonkeyPatch.context() as mp:  # the command line, as `metadt` sees it
        mp.setattr(sys, "argv", ["/usr/bin/metadt", *argv])
        assert main(argv) == 0
    return out, data


def test_every_result_json_records_provenance(pipeline):
    out, data = pipeline
    files = {
        "dataset card": data / "card.json",
        "pipeline": out / "pipeline.json",
        "world model": out / "seed-0" / "world-model" / "report.json",
        "meta-dt run": out / "seed-0" / "meta-dt" / "run.json",
        "dt run": out / "seed-0" / "dt" / "run.json",
        "meta-dt evaluation": out / "seed-0" / "meta-dt" / "eval.json",
        "dt evaluation": out / "seed-0" / "dt" / "eval.json",
        "report": out / "report" / "results.json",
    }
    for what, path in files.items():
        doc = json.loads(path.read_text())
        rec = doc["collection"]["provenance"] if what == "dataset card" else doc["provenance"]
        _check(rec, what)
        assert rec["command"].startswith("metadt run --preset smoke"), what  # what made it
    for what in ("meta-dt run", "world model", "meta-dt evaluation"):
        assert json.loads(files[what].read_text())["provenance"]["device"] == "cpu"
    # the shared --set reached both trainings
    assert json.loads(files["meta-dt run"].read_text())["steps_done"] == 5
