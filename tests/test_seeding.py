"""Every derived seed of metadt lives in metadt.seeding and keeps its value.

The constants below were recorded from the derivations as they were before they
moved to ``metadt.seeding`` (``train/checkpoint.batch_seed``,
``distributed.rank_torch_seed``, ``collect/collector._sub_seed``,
``collect/replay._seed``, ``Evaluator._seed`` and the ``default_rng([seed, key])``
streams of evaluation, prompt dropout and task targets): a change of any of them
changes every result, so it must fail here first.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt import distributed as dist
from metadt import seeding
from metadt.seeding import (ACTION_NOISE_KEY, PROMPT_DROPOUT_KEY, RANDOM_POLICY_KEY,
                            TASK_TARGETS_KEY, batch_seed, evaluation_seed, keyed_rng,
                            rank_batch_seed, rank_torch_seed, replay_seed, stream_seed)


def test_batch_seed_recorded_values():
    got = [batch_seed(s, i) for s, i in [(0, 0), (7, 3), (123456789, 10**6), (2**64 - 1, 5)]]
    assert got == [6375474604893067239, 7443599362937997628, 5614662496406055320,
                   4732834307693236310]
    assert all(0 <= v < 2**63 for v in got)


def test_rank_batch_seed_is_batch_seed_of_the_global_index():
    assert all(rank_batch_seed(7, i) == batch_seed(7, i) for i in range(5))
    assert rank_batch_seed(7, 3, 1, 2) == batch_seed(7, 7)
    # the old import paths give the same functions (trainers call dist.rank_batch_seed)
    from metadt.train.checkpoint import batch_seed as old_path

    assert old_path is batch_seed and dist.rank_batch_seed is rank_batch_seed
    assert dist.rank_torch_seed is rank_torch_seed


def test_rank_torch_seed_recorded_values_and_range():
    got = [rank_torch_seed(*a) for a in [(0, 0, 0, 2), (7, 3, 1, 4), (2**40, 9, 3, 8)]]
    assert got == [3128492958101557813, 4789496953329715208, 1262031539544086339]
    # above 2**32 (a 63-bit hash) but always below 2**63: torch.manual_seed takes it ...
    vals = [rank_torch_seed(s, i, r, 4) for s in (0, 2**63) for i in range(50) for r in range(4)]
    assert all(0 <= v < 2**63 for v in vals) and max(vals) >= 2**32
    torch.manual_seed(max(vals))
    # ... and its CPU generator keeps the low 32 bits (documented in rank_torch_seed)
    a = torch.rand(3)
    torch.manual_seed(max(vals) & 0xFFFFFFFF)
    assert torch.equal(a, torch.rand(3))
    assert len({v & 0xFFFFFFFF for v in vals}) == len(vals)  # distinct CPU streams here


def test_stream_and_replay_seeds_recorded_values():
    assert [stream_seed(s, k) for s, k in [(0, 1), (0, 6), (42, 7), (2**63, 4)]] == \
        [3964924996, 2617721224, 1955881634, 1372752731]
    from metadt.collect.collector import _ROLLOUT, _sub_seed

    assert _sub_seed is stream_seed and _ROLLOUT == seeding.STREAM_ROLLOUT == 6
    assert [replay_seed(*a) for a in [(0, 0, 0), (5, 17, 3), (2**62, 10**6, 44)]] == \
        [0, 1663341875504337631, 4611687018430387948]


def test_evaluation_seed_formula():
    assert evaluation_seed(0, 0, 5) == 5045
    assert evaluation_seed(1, 2, 3) == 1 + 2 * 100_003 + 3 * 1_009


@pytest.mark.parametrize("seed,key,expected", [
    (3, (ACTION_NOISE_KEY,), [0.8693987830071499, 0.041679496734799315]),
    (3, (RANDOM_POLICY_KEY,), [0.35637514017252425, 0.0033038940113324644]),
    (11, (PROMPT_DROPOUT_KEY,), [0.6855330387290068, 0.06140721224164725]),
    (5, (2, 1, TASK_TARGETS_KEY), [0.08937985459181297, 0.303420142043204]),
])
def test_keyed_streams_recorded_values(seed, key, expected):
    assert keyed_rng(seed, *key).random(2).tolist() == expected
    # the same as the spelled-out SeedSequence the callers used before
    ref = np.random.default_rng(np.random.SeedSequence([seed, *key])).random(2)
    assert ref.tolist() == expected


def test_keyed_rng_without_seed_is_fresh_entropy():
    assert keyed_rng(None, 1).random() != keyed_rng(None, 1).random()


def test_env_and_chunk_seeds_are_the_gymnasium_offsets():
    from metadt.seeding import chunk_seed, env_seeds

    assert env_seeds(10, 3) == [10, 11, 12] and env_seeds(0, 0) == []
    assert chunk_seed(100, 2, 8) == 116 and chunk_seed(100, 2, 8, 3) == 119
    # a block of tasks [lo, hi) of N, P copies each, reproduces the whole run's env seeds
    n, p, lo = 5, 2, 3
    whole = [s for c in range(3) for s in env_seeds(chunk_seed(7, c, n * p), n * p)]
    block = [s for c in range(3) for s in env_seeds(chunk_seed(7, c, n * p, lo * p), 2 * p)]
    assert block == [whole[c * n * p + lo * p + j] for c in range(3) for j in range(2 * p)]
