"""The one place that decides between a Triton kernel and its PyTorch fallback.

Every public kernel in :mod:`metadt.kernels` asks :func:`use_triton` once per
call. The decision is:

* ``METADT_KERNELS=torch``  -> always the PyTorch implementation;
* ``METADT_KERNELS=triton`` -> always Triton (raises if Triton cannot be
  imported, if the tensors are on the CPU and Triton's interpreter,
  ``TRITON_INTERPRET=1``, is not switched on, or if the kernel does not
  support the call);
* ``METADT_KERNELS=auto`` (the default, also when unset or empty) -> Triton
  when it is importable, every tensor lives on a CUDA device and the kernel
  supports the call (dtype, sizes); PyTorch otherwise.

A caller states what its kernel cannot do through ``unsupported`` (a reason,
or ``None``); the decision itself is made only here.

The variable is read on every call, so it can be flipped at run time (handy
for debugging a single call); the result of importing Triton is cached.
"""
from __future__ import annotations

import functools
import os

import torch

ENV_VAR = "METADT_KERNELS"
MODES = ("auto", "triton", "torch")


def mode() -> str:
    """The dispatch mode requested by ``METADT_KERNELS`` (``auto`` if unset)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}"
        )
    return value


def interpreter_enabled() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available() -> bool:
    """Whether ``triton`` can be imported in this process."""
    return _triton_import_error() is None


def use_triton(*tensors: torch.Tensor, unsupported: str | None = None) -> bool:
    """Decide, for one call on ``tensors``, whether to run the Triton kernel.

    ``unsupported``: why the Triton kernel cannot take this call (e.g. a
    dtype it lacks), or ``None``. In ``auto`` mode such calls go to PyTorch;
    with ``METADT_KERNELS=triton`` they raise.
    """
    requested = mode()
    if requested == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if requested == "triton":
        err = _triton_import_error()
        if err is not None:
            raise RuntimeError(f"{ENV_VAR}=triton but Triton cannot be imported ({err})")
        if not on_cuda and not interpreter_enabled():
            raise RuntimeError(
                f"{ENV_VAR}=triton on CPU tensors needs Triton's interpreter: "
                "set TRITON_INTERPRET=1 before triton is imported"
            )
        if unsupported is not None:
            raise RuntimeError(f"{ENV_VAR}=triton but the Triton kernel cannot take this call: "
                               f"{unsupported}")
        return True
    return on_cuda and unsupported is None and triton_available()


def backend(*tensors: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"``: what a kernel call on ``tensors`` would run.

    Without tensors, answers for CUDA tensors when a GPU is present and CPU
    tensors otherwise.
    """
    if not tensors:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tensors = (torch.empty(0, device=device),)
    return "triton" if use_triton(*tensors) else "torch"
