"""metadt.layout's context rules (NumPy and torch) against the Rust store's
`gather_steps`, the one owner of the batch layout: the device path
(metadt.train.device_scoring) builds contexts with these helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt import TrajectoryStore
from metadt.layout import context_index, episode_context_mask, episode_contexts

OD, AD = 3, 2


def _store(lengths, seed=0):
    rng = np.random.default_rng(seed)
    store, eps = TrajectoryStore(OD, AD), []
    for i, t in enumerate(lengths):
        ep = (rng.normal(size=(t, OD)).astype(np.float32), rng.normal(size=(t, AD)).astype(np.float32),
              rng.normal(size=t).astype(np.float32))
        store.add_episode(*ep, task=i % 2)
        eps.append(ep)
    return store, eps


@pytest.mark.parametrize("h", [1, 3, 5])
@pytest.mark.parametrize("as_torch", [False, True])
def test_episode_contexts_equal_the_store(h, as_torch):
    T, n = 4, 3  # h = 5 > T: every context is partly padding
    store, eps = _store([T] * n, seed=h)
    ref = store.gather_steps(np.arange(n * T), h)
    conv = (lambda a: torch.from_numpy(a)) if as_torch else (lambda a: a)
    for k, key in enumerate(("obs", "actions", "rewards")):
        x = conv(np.stack([e[k] for e in eps]))
        got = episode_contexts(x, h)
        assert isinstance(got, torch.Tensor) == as_torch
        got = np.asarray(got).reshape(n * T, h, *x.shape[2:])
        np.testing.assert_array_equal(got, ref[f"ctx_{key}"])
    mask = episode_context_mask(T, h, like=conv(np.zeros(1)) if as_torch else None)
    np.testing.assert_array_equal(np.tile(np.asarray(mask), (n, 1)), ref["ctx_mask"])


@pytest.mark.parametrize("as_torch", [False, True])
def test_context_index_equals_the_store(as_torch):
    lengths = [1, 6, 2, 9, 3]
    store, _ = _store(lengths, seed=7)
    h = 4
    off = np.asarray(store.episode_offsets(), dtype=np.int64)
    starts = np.repeat(off, lengths)
    idx = np.random.default_rng(1).permutation(sum(lengths))[:15]
    ref = store.gather_steps(np.sort(idx), h)
    idx = np.sort(idx)
    obs = np.concatenate([store.gather_steps(np.arange(sum(lengths)), 0)["obs"]])
    if as_torch:
        rows, valid = context_index(torch.from_numpy(idx), torch.from_numpy(starts[idx]), h)
        rows, valid = rows.numpy(), valid.numpy()
    else:
        rows, valid = context_index(idx, starts[idx], h)
    np.testing.assert_array_equal(valid, ref["ctx_mask"])
    np.testing.assert_array_equal(np.where(valid[..., None], obs[rows], 0.0), ref["ctx_obs"])


def test_bad_context_lengths_are_refused():
    with pytest.raises(ValueError, match="h >= 1"):
        episode_contexts(np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="h >= 1"):
        context_index(np.zeros(2, np.int64), np.zeros(2, np.int64), 0)
