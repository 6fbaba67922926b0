"""metadt.runtime: the one device, thread and tensor-conversion helper, and that the
parts use it (no second resolve_device / thread setter left)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import metadt
from metadt import distributed as dist
from metadt.runtime import (batch_to_torch, check_device, resolve_device, set_threads,
                            to_numpy, to_torch, torch_threads)


def test_resolve_device_auto_and_names(monkeypatch):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want and resolve_device(None).type == want
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    # a CUDA device without index becomes the rank's GPU; an explicit index is kept
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_device(resolve_device("cuda"))
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(RuntimeError):
        resolve_device("not-a-device")


def test_dist_context_device_goes_through_resolve_device():
    assert dist.SINGLE.device("cuda") == torch.device("cuda")  # one process: no index added
    two = dist.DistContext(rank=1, world=2, local_rank=1)
    assert two.device("cuda") == torch.device("cuda", 1)
    assert two.device("cpu") == torch.device("cpu")


def test_set_threads_and_torch_threads_restore():
    old = torch.get_num_threads()
    try:
        set_threads(0)  # 0 / None: unchanged
        set_threads(None)
        assert torch.get_num_threads() == old
        set_threads(2)
        assert torch.get_num_threads() == 2
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with torch_threads(0):
            assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with torch_threads(1):
                raise KeyError("restored even on error")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_to_torch_and_back():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    t = to_torch(a)
    assert t.dtype == torch.float64 and np.shares_memory(a, t.numpy())  # no copy
    t32 = to_torch(a, "cpu", np.float32)
    assert t32.dtype == torch.float32 and torch.equal(t32, torch.tensor(a, dtype=torch.float32))
    tr = to_torch(a.T)  # non-contiguous input: made contiguous, same values
    assert tr.is_contiguous() and np.array_equal(tr.numpy(), a.T)
    assert to_torch([1, 2], dtype=np.int64).dtype == torch.int64
    g = torch.ones(2, requires_grad=True) * 2
    back = to_numpy(g)
    assert isinstance(back, np.ndarray) and back.tolist() == [2.0, 2.0]
    assert to_numpy(g, np.float64).dtype == np.float64
    assert to_numpy([1, 2]).tolist() == [1, 2]


def test_batch_to_torch_is_the_trainers_conversion():
    b = {"x": np.ones((2, 3)), "m": np.array([[True, False]]), "i": np.arange(3)}
    out = batch_to_torch(b, "cpu")
    assert out["x"].dtype == torch.float32 and out["m"].dtype == torch.bool
    assert out["i"].dtype == torch.int64
    from metadt.train.common import to_tensors

    assert to_tensors is batch_to_torch


PKG = Path(metadt.__file__).parent


def _defs(name: str) -> list[str]:
    found = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found.append(str(f.relative_to(PKG)))
    return found


def test_one_helper_each():
    """No second definition of the helpers anywhere in the package."""
    for name in ("resolve_device", "set_threads", "torch_threads", "to_tensors"):
        assert _defs(name) in ([], ["runtime.py"]), (name, _defs(name))
