"""Plain references for the kernel tests (NumPy / float32 PyTorch), no fusion, no tricks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metadt.kernels as K


def attention_float32(q, k, v, key_padding_mask=None, causal=True, scale=None,
                      dropout_keep=None, dropout_p=0.0):
    """Explicit float32 softmax attention with the metadt masking semantics."""
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    allowed = torch.ones(b, 1, t, t, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool()[:, None, None, :]
    row_ok = allowed.any(-1, keepdim=True)
    s = s.masked_fill(~allowed, float("-inf")).masked_fill(~row_ok, 0.0)
    p = torch.softmax(s, dim=-1) * row_ok
    if dropout_keep is not None:
        p = p * dropout_keep / (1.0 - dropout_p)
    return p @ v.float()


def left_padding_mask(lengths, t):
    """[B, T] bool, True = real token, padding at the front."""
    lengths = torch.as_tensor(lengths)
    pos = torch.arange(t)[None, :]
    return pos >= (t - lengths)[:, None]


def rust_best_segments(errors, lengths, k, start_min, groups=None):
    """The Rust store's choice on the same errors: {key: (row, start, score)} for every
    group with a segment (``store.best_segments`` argmax over an attached error column,
    through ``metadt.train.device_scoring.host_best_segments``; ``groups`` None = per row)."""
    from metadt.train.device_scoring import host_best_segments

    segs = host_best_segments(errors, lengths, length=k, start_min=start_min, groups=groups)
    return {int(key): (int(ep), int(s), float(sc))
            for key, ep, s, sc in zip(segs["keys"], segs["episodes"], segs["starts"],
                                      segs["scores"])}


def assert_same_choice_as_rust(result, errors, lengths, k, start_min, groups=None):
    """A ``BestSegments`` result chooses exactly what the Rust store chooses."""
    want = rust_best_segments(errors, lengths, k, start_min, groups)
    keys = result.keys.tolist()
    expected_keys = (list(range(len(lengths))) if groups is None
                     else sorted(set(np.asarray(groups).tolist())))
    assert keys == expected_keys
    for key, ep, start, score in zip(keys, result.episode.tolist(), result.start.tolist(),
                                     result.score.tolist()):
        if key in want:
            assert (ep, start) == want[key][:2], (key, ep, start, want[key])
            assert score == want[key][2], (key, score, want[key])  # bit-identical float64 sums
        else:
            assert (ep, start) == (-1, -1) and score == float("-inf"), (key, ep, start, score)


# ---------------------------------------------------------------- best_segments cases
# Shared by tests/test_kernels.py (torch backend) and tests/kernels_interpret_cases.py
# (the Triton kernel under the interpreter): the same cases, the same expectations.

def errors_case(n, t, seed, integer=False, groups=4):
    g = torch.Generator().manual_seed(seed)
    if integer:  # exact sums: exact ties between starts and between rows
        errors = torch.randint(0, 3, (n, t), generator=g).float()
    else:
        errors = torch.rand(n, t, generator=g) * torch.rand(n, 1, generator=g) * 10
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    task = torch.randint(-1, groups - 1, (n,), generator=g)
    if n:
        lengths[0] = t
    if n > 3:
        lengths[3] = 0
        task[3] = groups + 5  # a task whose only row is empty: no segment
    # padding past each row's length holds garbage, never read
    pad = torch.arange(t)[None, :] >= lengths[:, None]
    errors = errors.masked_fill(pad, float("nan"))
    if n > 1:
        errors[1, : int(lengths[1])] = 1e30 if t else 0  # huge but finite
    return errors, lengths, task


BEST_CASES = [(9, 1, 1, 0), (9, 7, 3, 2), (12, 20, 5, 4), (10, 75, 5, 4), (6, 200, 5, 4),
              (5, 4, 5, 0), (0, 10, 3, 0), (11, 12, 3, 20)]


def check_best_segments_choose_as_the_rust_scorer(backend, n, t, k, start_min, integer, per_task):
    """On the given backend: the Rust store's choice, and exactly the torch reference's output."""
    errors, lengths, task = errors_case(n, t, seed=n * 31 + t + k, integer=integer)
    groups = task if per_task else None
    assert K.backend(errors, lengths) == backend
    res = K.best_segments(errors, lengths, k, start_min, groups)
    assert res.episode.dtype == torch.int64 and res.score.dtype == torch.float64
    assert_same_choice_as_rust(res, errors.numpy(), lengths.numpy(), k, start_min,
                               None if groups is None else groups.numpy())
    ref = K.best_segments_torch(errors, lengths, k, start_min, groups)
    for a, b in zip(res, ref):
        assert torch.equal(a, b)


def check_best_segments_ties_go_to_the_earliest_row_then_start():
    errors = torch.zeros(4, 10)
    errors[1, [2, 6]] = 1.0  # rows 1 and 2 tie (score 1), each with two tied starts
    errors[2, [3, 7]] = 1.0
    lengths = torch.tensor([10, 10, 10, 3])
    res = K.best_segments(errors, lengths, 1, 2, torch.tensor([5, 5, 5, 5]))
    assert res.keys.tolist() == [5] and res.episode.tolist() == [1] and res.start.tolist() == [2]
    res = K.best_segments(errors, lengths, 2, 1)
    assert res.episode.tolist() == [0, 1, 2, 3] and res.start.tolist() == [1, 1, 2, 1]
    assert_same_choice_as_rust(res, errors.numpy(), lengths.numpy(), 2, 1)


def check_best_segments_reject_non_finite_errors_inside_episodes():
    errors = torch.zeros(2, 6)
    errors[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"errors\[1, 5\]"):
        K.best_segments(errors, torch.tensor([6, 6]), 2, 0)
    assert K.best_segments(errors, torch.tensor([6, 5]), 2, 0).episode.tolist() == [0, 1]
