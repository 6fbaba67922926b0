"""Atomic checkpoints with every RNG state, and per-batch sampler seeds.

Resuming is exact: batch ``i`` is sampled with :func:`batch_seed` ``(seed, i)``,
a pure function, and the torch/NumPy/Python RNG states (dropout, ...) are
saved with the model, optimizer, scheduler and step.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metadt.fileio import atomic_torch_save


def batch_seed(seed: int, index: int) -> int:
    """The sampler seed of batch ``index`` of a run seeded ``seed`` (a pure function)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))  # < 2**63


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
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
    """Write the resume point atomically (a crash keeps the previous checkpoint)."""
    state = {
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; returns the checkpoint dict."""
    state = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
