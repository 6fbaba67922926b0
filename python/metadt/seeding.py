"""The one owner of metadt's seeds: seeding the libraries and every derived seed.

A run has one user seed (an integer in ``[0, 2**64)``). Every other seed is a
pure function of it defined here, so resuming, sharding across ranks and
re-running reproduce the same streams, and a derivation is changed in one
place. The values below are frozen: ``tests/test_seeding.py`` pins them to
recorded constants (changing one changes every result).

| function | derives | used by |
|---|---|---|
| :func:`seed_everything` | Python, NumPy global, torch (CPU+CUDA) | trainers, profiler |
| :func:`torch_seed` | a ``manual_seed`` value for a metadt seed | SAC, :func:`seed_everything` |
| :func:`batch_seed` | sampler seed of training batch ``i`` | trainers, profiler |
| :func:`rank_batch_seed` | batch ``i`` of rank ``r`` of ``W`` (``= batch_seed`` with one rank) | trainers (via ``distributed``) |
| :func:`rank_torch_seed` | the torch (dropout) seed of step ``i`` on rank ``r`` of ``W`` | Meta-DT trainer with several ranks |
| :func:`stream_seed` | independent 32-bit streams of a collection run | collect |
| :func:`replay_seed` | replay sampling seed per (run, SAC update, task) | collect's replay memory |
| :func:`evaluation_seed` | a rollout seed per (evaluation seed, subject seed, setting) | evaluate |
| :func:`env_seeds` | reset seeds of a vector env's envs (gymnasium's ``seed + j``) | envs |
| :func:`chunk_seed` | reset seed of chunk ``k`` of episodes run side by side | collect, envs' rollouts |
| :func:`keyed_rng` | a ``Generator`` keyed by ``(seed, ..., key)`` | action noise, random policy, prompt dropout, task targets |
"""
from __future__ import annotations

import os
import random

import numpy as np

from metadt.config.base import MAX_SEED, check_seed  # noqa: F401  (re-exported)

#: Keys of the :func:`keyed_rng` streams (ASCII tags; their values are frozen).
ACTION_NOISE_KEY = 0x6E6F6973  # "nois": evaluation rollouts' Gaussian action noise
RANDOM_POLICY_KEY = 0x72616E64  # "rand": evaluation's uniform-random rollouts
PROMPT_DROPOUT_KEY = 0x9E3779B9  # which samples of a Meta-DT batch lose their prompt
TASK_TARGETS_KEY = 0x7A  # the task-target transitions drawn for a batch
RANK_TORCH_KEY = 0xD80  # rank_torch_seed's tag

#: The streams of :func:`stream_seed` (collection): environment, SAC actions, replay
#: sampling, checkpoint evaluation, the random policy, dataset rollouts, rollout noise.
STREAM_ENV, STREAM_ACT, STREAM_SAMPLE, STREAM_EVAL, STREAM_RANDOM, STREAM_ROLLOUT, \
    STREAM_ROLLOUT_NOISE = 1, 2, 3, 4, 5, 6, 7


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


# ------------------------------------------------------------------ derived seeds
def batch_seed(seed: int, index: int) -> int:
    """The sampler seed of batch ``index`` of a run seeded ``seed`` (a pure function,
    ``< 2**63``): what makes a resumed training draw the batches it would have drawn."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))  # < 2**63


def rank_batch_seed(seed: int, index: int, rank: int = 0, world: int = 1) -> int:
    """Sampler seed of rank ``rank``'s part of global batch ``index``: ``batch_seed(seed,
    index * world + rank)`` (with one rank, exactly ``batch_seed(seed, index)``)."""
    return batch_seed(seed, int(index) * int(world) + int(rank))


def rank_torch_seed(seed: int, index: int, rank: int, world: int) -> int:
    """Seed of the torch RNG (dropout) of rank ``rank`` at step ``index`` in a multi-rank run.

    A 63-bit value (``< 2**63``, so ``torch.manual_seed`` always accepts it: it takes
    ``[0, 2**64)``). Torch's CPU generator (mt19937) keeps only its low 32 bits, so on
    the CPU it is a 32-bit seed like any other; CUDA's Philox generator uses all 64.
    Not reduced with :func:`torch_seed`: the value is a hash already (its low 32 bits are
    as uniform as a 32-bit mix), and changing it would change multi-rank results."""
    s = np.random.SeedSequence([int(seed), int(index), int(rank), int(world), RANK_TORCH_KEY])
    return int(s.generate_state(1, dtype=np.uint64)[0] >> 1)


def stream_seed(seed: int, stream: int) -> int:
    """The 32-bit seed of stream ``stream`` (``STREAM_*``) of a collection run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(stream)])
               .generate_state(1, dtype=np.uint32)[0])


def replay_seed(base: int, update: int, task: int) -> int:
    """A distinct, reproducible replay sampling seed per (run, SAC update, task), ``< 2**63``."""
    return (int(base) * 0x9E3779B97F4A7C15 + int(update) * 1_000_003 + int(task)) % (2**63)


def evaluation_seed(seed: int, subject_seed: int, salt: int) -> int:
    """Rollout seed of evaluation setting ``salt`` for an evaluation seeded ``seed`` of a
    subject (trained run) seeded ``subject_seed``."""
    return int(seed) + 100_003 * int(subject_seed) + 1_009 * int(salt)


def env_seeds(seed: int, n: int) -> list[int]:
    """Reset seeds of the ``n`` envs of a vector env reset with ``seed``: env ``j`` gets
    ``seed + j`` (gymnasium's convention)."""
    return [int(seed) + j for j in range(int(n))]


def chunk_seed(seed: int, chunk: int, stride: int, offset: int = 0) -> int:
    """Reset seed of chunk ``chunk`` of a run of episodes stepped ``stride`` envs at a time:
    ``seed + chunk * stride + offset`` (a block of tasks starting at env ``offset`` of a
    larger run resets with the seeds the whole run gives those envs)."""
    return int(seed) + int(chunk) * int(stride) + int(offset)


def keyed_rng(seed: int | None, *key: int) -> np.random.Generator:
    """``np.random.default_rng([seed, *key])``: an independent stream of ``seed`` per key
    (``seed=None``: fresh OS entropy)."""
    if seed is None:
        return np.random.default_rng(None)
    return np.random.default_rng([int(seed), *(int(k) for k in key)])


__all__ = ["MAX_SEED", "check_seed", "torch_seed", "seed_everything", "batch_seed",
           "rank_batch_seed", "rank_torch_seed", "stream_seed", "replay_seed",
           "evaluation_seed", "env_seeds", "chunk_seed", "keyed_rng", "ACTION_NOISE_KEY", "RANDOM_POLICY_KEY",
           "PROMPT_DROPOUT_KEY", "TASK_TARGETS_KEY", "RANK_TORCH_KEY", "STREAM_ENV",
           "STREAM_ACT", "STREAM_SAMPLE", "STREAM_EVAL", "STREAM_RANDOM", "STREAM_ROLLOUT",
           "STREAM_ROLLOUT_NOISE"]
