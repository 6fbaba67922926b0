"""Plain references for the kernel tests (NumPy / float32 PyTorch), no fusion, no tricks."""
from __future__ import annotations

import math

import numpy as np
import torch


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
