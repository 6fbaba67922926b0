"""Where torch runs: the device, the thread count, and host <-> device conversion.

One helper each, used by every part that needs them (collect, train, evaluate,
profile, distributed, models), so "auto" means the same device everywhere, a
thread count of 0 always means "torch's default", and arrays cross to torch
one way. Imports nothing of metadt (a leaf like :mod:`metadt.seeding`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch


def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None
                   ) -> torch.device:
    """The ``torch.device`` of a config or CLI value: ``"auto"`` (or None) is CUDA when
    present, else the CPU; anything else is parsed by torch. With ``local_rank``, a CUDA
    device without an index becomes ``cuda:local_rank`` (one GPU per rank)."""
    if name is None or str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None and local_rank is not None:
        dev = torch.device("cuda", int(local_rank))
    return dev


def check_device(dev: torch.device) -> torch.device:
    """``dev``, or a clear ``ValueError`` when it is CUDA and no GPU is present."""
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available here "
                         "(use --device cpu or auto)")
    return dev


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n > 0`` (process-wide); 0 or None: unchanged
    (torch's default)."""
    n = int(n or 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (``n <= 0`` or None: unchanged), then restore
    the previous count."""
    n = int(n or 0)
    old = torch.get_num_threads()
    set_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


def to_torch(a: Any, device: str | torch.device = "cpu", dtype: Any = None,
             non_blocking: bool = False) -> torch.Tensor:
    """An array-like as a tensor on ``device``. ``dtype`` is a NumPy dtype (None: kept);
    a C-contiguous array of that dtype on the CPU is shared, not copied."""
    arr = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    return torch.from_numpy(arr).to(device, non_blocking=non_blocking)


def to_numpy(t: Any, dtype: Any = None) -> np.ndarray:
    """A tensor (or array-like) as a NumPy array on the host (detached; ``dtype`` a NumPy
    dtype, None: kept)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype)


def batch_to_torch(batch: Mapping[str, Any], device: str | torch.device
                   ) -> dict[str, torch.Tensor]:
    """A sampled batch (dict of arrays) on ``device``: float64 columns become float32 (the
    models' dtype), other dtypes are kept; copies are non-blocking."""
    out = {}
    for k, v in batch.items():
        a = np.asarray(v)
        out[k] = to_torch(a, device, np.float32 if a.dtype == np.float64 else None,
                          non_blocking=True)
    return out


__all__ = ["resolve_device", "check_device", "set_threads", "torch_threads", "to_torch",
           "to_numpy", "batch_to_torch"]
