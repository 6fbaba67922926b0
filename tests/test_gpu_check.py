"""benches/gpu_check.py in its CPU mode (no GPU here): Triton's interpreter on tiny shapes.

The script restarts itself with TRITON_INTERPRET=1; every section must run and every
correctness check pass, and the output must say its timings are not GPU timings.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_gpu_check_cpu_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "METADT_KERNELS")}
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benches" / "gpu_check.py"),
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    tail = proc.stdout[-6000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, tail
    assert "NOT GPU timings" in proc.stdout and "NOT a GPU timing" in proc.stdout, tail
    doc = json.loads(out.read_text())
    assert doc["mode"] == "interpreter" and doc["gpu_timings"] is False and doc["ok"] is True
    assert set(doc["sections_s"]) == {"correctness", "attention", "scoring", "profile", "train"}
    names = [c["name"] for c in doc["correctness"]]
    assert all(c["ok"] for c in doc["correctness"]), doc["correctness"]
    assert any(n.startswith("attention") and "bfloat16" in n for n in names)
    assert any(n.startswith("attention") and "float32" in n for n in names)
    assert sum(n.startswith("best_segments") for n in names) >= 12
    assert any(n.startswith("best_segments") and n.endswith("bfloat16") for n in names)
    assert "training losses finite" in names
    assert {r["dtype"] for r in doc["attention_speed"]} == {"float32", "bfloat16"}
    assert all(r["triton_ms"] > 0 and r["sdpa_ms"] > 0 for r in doc["attention_speed"])
    assert {r["name"].split()[-1] for r in doc["scoring_speed"]} == {"episode", "task"}
    prof = doc["profile"]
    assert prof["amp"] == "auto" and prof["modes"][0]["steps_per_s"] > 0
    assert 0.0 <= prof["modes"][0]["data_loading_share"] <= 1.0
    train = doc["train"]
    assert train["losses_finite"] and train["steps_per_s"] > 0 and train["memory_mib"] > 0
