"""The one seeding function of metadt."""
from __future__ import annotations

import os
import random

import numpy as np

from metadt.config.base import MAX_SEED, check_seed  # noqa: F401  (re-exported)


def seed_everything(seed: int, *, deterministic_torch: bool = False) -> np.random.Generator:
    """Seed Python's `random`, NumPy's global state and torch (CPU and CUDA).

    Returns a fresh `np.random.Generator` seeded with `seed`, which callers
    should prefer over global state. With `deterministic_torch`, torch is also
    asked to use deterministic algorithms (slower on GPU).
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    else:
        torch.manual_seed(seed)
        if deterministic_torch:
            torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)
