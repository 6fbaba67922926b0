"""Prompt scoring on the world model's device (metadt.train.device_scoring).

Here (no GPU, no interpreter) the switch says "host"; the device path itself runs
in tests/device_interpret_cases.py, in a subprocess started with
``TRITON_INTERPRET=1 METADT_KERNELS=triton`` (launched below).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metadt.kernels as K

HERE = Path(__file__).resolve().parent


def test_cpu_world_model_stays_on_the_host_path(monkeypatch):
    from metadt.config.world_model import WorldModelConfig
    from metadt.models import WorldModel
    from metadt.train import device_scoring

    wm = WorldModel(2, 2, WorldModelConfig(gru_hidden=8, decoder_hidden=8))
    for mode in ("auto", "torch", ""):
        monkeypatch.setenv(K.ENV_VAR, mode)
        assert not device_scoring.on_device(wm)
    assert K.backend(torch.zeros(1)) == "torch"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_device_scoring_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", **{K.ENV_VAR: "triton"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(HERE / "device_interpret_cases.py")],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, tail
