"""metadt.kernels ships in the wheel: build it, install it aside, import it from there.

This is the slow kernels test (it builds the Rust extension in release mode,
about 1-2 minutes from a cold cache). The wheel is installed with
``pip install --no-deps --target <tmp>``, never into the running environment,
and imported in a subprocess whose working directory is outside the source
tree, so the source checkout cannot be what gets imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import importlib.util, sys
    import torch
    import metadt.kernels as K
    print(K.__file__)
    q = torch.randn(2, 1, 6, 16, requires_grad=True)
    kpm = torch.tensor([[True] * 6, [False] * 2 + [True] * 4])
    out = K.attention(q, q, q, kpm, causal=True)
    out.sum().backward()
    assert out.shape == (2, 1, 6, 16) and torch.isfinite(q.grad).all()
    assert torch.count_nonzero(out[1, :, :2]) == 0
    res = K.best_segments(torch.ones(2, 10), torch.tensor([10, 5]), 5, 4)
    assert res.start.tolist() == [4, 0], res  # row 1 (5 < 4 + 5 steps): the fallback start 0
    assert K.backend(q) == "torch"
    if importlib.util.find_spec("triton") is not None:
        import metadt.kernels._attention_triton as A
        import metadt.kernels._best_segments_triton as P
        print(A.__file__)
        print(P.__file__)
    print("OK")
""")


def _build_wheel(out: Path) -> Path:
    maturin = shutil.which("maturin")
    if maturin is not None:
        cmd = [maturin, "build", "--release", "-o", str(out)]
    else:  # PEP 517 build through pip (fetches maturin into an isolated build env)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    wheels = sorted(out.glob("metadt-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.skipif(not (REPO / "pyproject.toml").exists(), reason="needs the source checkout")
def test_kernels_import_from_installed_wheel(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--disable-pip-version-check", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (site / "metadt" / "kernels" / "_attention_triton.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "METADT_KERNELS")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "OK", proc.stdout
    for path in lines[:-1]:
        assert Path(path).resolve().is_relative_to(site.resolve()), (path, site)
