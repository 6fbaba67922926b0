"""The one seeding function of metadt."""
from __future__ import annotations

import os
import random

import numpy as np

from metadt.config.base import MAX_SEED, check_seed  # noqa: F401  (re-exported)


def torch_seed(seed: int) -> int:
    """What to give ``torch.manual_seed`` / ``Generator.manual_seed`` for a metadt seed:
    the seed itself below 2**32 (as always), else a 32-bit mix of it (torch's CPU
    generator keeps only the low 32 bits, so seeds 2**32 apart would share a stream)."""
    seed = check_seed(seed)
    if seed < 2**32:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def seed_everything(seed: int, *, deterministic_torch: bool = False) -> np.random.Generator:
    """Seed Python's `random`, NumPy's global state and torch (CPU and CUDA).

    Returns a fresh `np.random.Generator` seeded with `seed`, which callers
    should prefer over global state. Seeds are integers in [0, 2**64); seeds
    below 2**32 seed every library directly (as always), larger ones are never
    reduced modulo 2**32 (NumPy's global gets two 32-bit words, torch a 32-bit
    mix of the seed, since its CPU generator keeps only 32 bits). With `deterministic_torch`, torch is also
    asked to use deterministic algorithms (slower on GPU).
    """
    seed = check_seed(seed)  # [0, 2**64): a larger or negative seed is refused
    random.seed(seed)
    # NumPy's legacy global takes 32-bit words: a seed >= 2**32 is given as two words
    # (not reduced modulo 2**32, which would make seeds 2**32 apart share a stream)
    np.random.seed(seed if seed < 2**32 else [seed & 0xFFFFFFFF, seed >> 32])
    # child interpreters accept only [0, 2**32) here (they would not start otherwise)
    os.environ.setdefault("PYTHONHASHSEED", str(seed & 0xFFFFFFFF))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    else:
        torch.manual_seed(torch_seed(seed))
        if deterministic_torch:
            torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)
