"""Atomic checkpoints with every RNG state, and per-batch sampler seeds.

Resuming is exact: batch ``i`` is sampled with :func:`batch_seed` ``(seed, i)``,
a pure function, and the torch/NumPy/Python RNG states (dropout, ...) are
saved with the model, optimizer, scheduler and step.

A checkpoint is a tensor file (:mod:`metadt.tensorfile`: safetensors + JSON,
SHA-256 checked): loading it never unpickles, and a changed byte is refused
with a message saying what to do. The old pickle format (``checkpoint.pt``)
is not loaded: :func:`legacy_checkpoint_error` says so.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metadt import tensorfile
from metadt.seeding import batch_seed  # noqa: F401  (re-exported; derived in seeding)

CHECKPOINT_FILE = "checkpoint.safetensors"
"""The resume point of a training run directory."""
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"
"""The resume point written by older metadt versions (pickle; never loaded)."""
CHECKPOINT_KIND = "metadt-train-checkpoint"
RESTART_HINT = ("delete it to restart this training from step 0 (or rerun with --overwrite); "
                "finished runs are unaffected")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (damaged, old format, another model)."""


def legacy_checkpoint_error(out: Path) -> CheckpointError:
    return CheckpointError(
        f"{Path(out) / LEGACY_CHECKPOINT_FILE}: a resume point in metadt's old pickle format, "
        f"which is no longer loaded (unpickling a file can run code); delete it to restart this "
        f"training from step 0 (or rerun with --overwrite)")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the resume point atomically (a crash keeps the previous checkpoint) as a
    checksummed tensor file."""
    state = {
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }
    return tensorfile.save(path, state, CHECKPOINT_KIND)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; returns the checkpoint dict.

    A damaged or foreign checkpoint raises :class:`CheckpointError` saying to delete it
    to restart. Tensors are read on the CPU; ``load_state_dict`` copies them to the
    model's and optimizer's devices (``map_location`` is accepted for compatibility)."""
    path = Path(path)
    try:
        state = tensorfile.load(path, CHECKPOINT_KIND, hint=RESTART_HINT)
    except tensorfile.TensorFileError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) \
                or state["step"] < 0:
            raise ValueError("no valid step counter")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: does not fit this model and optimizer "
                              f"({type(exc).__name__}: {exc}); {RESTART_HINT}") from None
    return state
