"""The Triton kernels under Triton's CPU interpreter, against float32 / NumPy references.

These tests need ``TRITON_INTERPRET=1`` in the environment before ``triton``
is imported, so they only run in a process started that way (in any other
process they skip). The file is not named ``test_*.py``, so the main pytest
run does not collect it; ``tests/test_kernels.py::test_triton_kernels_under_interpreter``
runs it in a subprocess with ``TRITON_INTERPRET=1 METADT_KERNELS=triton``, so
a plain ``pytest`` run covers it. By hand::

    TRITON_INTERPRET=1 METADT_KERNELS=triton python -m pytest tests/kernels_interpret_cases.py

Tolerances (kernel vs float32 reference computed from the same inputs):
float32 1e-5 abs + 1e-5 rel on outputs and gradients (observed <= 2e-6);
float16 5e-3 / 5e-3 and bfloat16 3e-2 / 3e-2 (one or two ulps of the output
dtype); best segments: exactly the Rust store's choice and float64 score.
"""
from __future__ import annotations

import os

import pytest
import torch

import metadt.kernels as K
from kernels_reference import (BEST_CASES, attention_float32,
                               check_best_segments_choose_as_the_rust_scorer,
                               check_best_segments_reject_non_finite_errors_inside_episodes,
                               check_best_segments_ties_go_to_the_earliest_row_then_start,
                               left_padding_mask)

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get(K.ENV_VAR) != "triton",
    reason="needs TRITON_INTERPRET=1 and METADT_KERNELS=triton from process start "
           "(launched by tests/test_kernels.py)",
)

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def _inputs(b, h, t, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(b, h, t, d, generator=g).to(dtype).requires_grad_() for _ in range(3)]
    go = torch.randn(b, h, t, d, generator=g).to(dtype)
    return qkv, go


def _check_attention(t, d, padded, causal, dtype=torch.float32, dropout_p=0.0, blocks=None,
                     via_public_api=False):
    from metadt.kernels._attention_triton import attention_triton, dropout_keep_mask

    b, h = 3, 2
    (q, k, v), go = _inputs(b, h, t, d, dtype, seed=1000 * t + d + padded + 2 * causal)
    # Trajectory 0 full, 1 left-padded by 3, 2 entirely padding.
    kpm = left_padding_mask([t, max(t - 3, 0), 0], t) if padded else None
    seed = 4321
    if via_public_api:
        assert K.backend(q, k, v) == "triton"
        out = K.attention(q, k, v, kpm, causal=causal)
    else:
        out = attention_triton(q, k, v, kpm, causal, dropout_p, seed=seed, blocks=blocks)
    keep = dropout_keep_mask(b, h, t, dropout_p, seed) if dropout_p > 0 else None
    ref = attention_float32(q, k, v, kpm, causal, dropout_keep=keep, dropout_p=dropout_p)
    assert out.shape == (b, h, t, d) and out.dtype == dtype
    assert torch.isfinite(out).all()
    tol = TOL[dtype]
    torch.testing.assert_close(out.float(), ref, **tol)
    grads = torch.autograd.grad(out, (q, k, v), go)
    refs = torch.autograd.grad(ref, (q, k, v), go.float())
    for name, g, r in zip("qkv", grads, refs):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        torch.testing.assert_close(g.float(), r.float(), **tol, msg=lambda m: f"d{name}: {m}")
    if padded and causal:
        assert torch.count_nonzero(out[2]) == 0  # every row fully masked -> exact zeros
        assert torch.count_nonzero(out[1, :, : min(3, t)]) == 0
        assert torch.count_nonzero(grads[0][2]) == 0


@pytest.mark.parametrize("t", [1, 7, 33, 75])
@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_float32_reference(t, d, padded, causal):
    _check_attention(t, d, padded, causal, via_public_api=True)


@pytest.mark.parametrize("t,d,blocks", [(75, 64, (16, 32)), (75, 32, (32, 16)), (33, 16, (16, 16)),
                                        (7, 16, (16, 16))])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_several_blocks(t, d, blocks, causal):
    # T not a multiple of the block, several query and key blocks per row.
    _check_attention(t, d, True, causal, blocks=blocks)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_half_precision(dtype, causal):
    _check_attention(33, 32, True, causal, dtype=dtype)


@pytest.mark.parametrize("t,blocks", [(33, None), (75, (16, 32))])
def test_attention_dropout_matches_reference_with_same_pattern(t, blocks):
    _check_attention(t, 16, True, True, dropout_p=0.25, blocks=blocks)


def test_dropout_pattern_rate_and_repeatability():
    from metadt.kernels._attention_triton import dropout_keep_mask

    a = dropout_keep_mask(2, 2, 75, 0.3, seed=7)
    b = dropout_keep_mask(2, 2, 75, 0.3, seed=7)
    c = dropout_keep_mask(2, 2, 75, 0.3, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.float().mean().item() - 0.7) < 0.02
    assert not torch.equal(a[0, 0], a[0, 1])  # heads get different patterns


def test_attention_training_flag_and_seeding():
    (q, k, v), _ = _inputs(2, 1, 9, 16, torch.float32, seed=3)
    kpm = left_padding_mask([9, 5], 9)
    evaluation = K.attention(q, k, v, kpm, dropout_p=0.5, training=False)
    torch.testing.assert_close(evaluation, attention_float32(q, k, v, kpm), **TOL[torch.float32])
    torch.manual_seed(11)
    first = K.attention(q, k, v, kpm, dropout_p=0.5)
    torch.manual_seed(11)
    again = K.attention(q, k, v, kpm, dropout_p=0.5)
    assert torch.equal(first, again) and not torch.equal(first, evaluation)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_strided_inputs_like_fused_qkv(causal):
    # The model slices q, k, v out of one [B, T, 3, H, Dh] projection: no copies needed.
    b, t, h, dh = 3, 33, 2, 16
    g = torch.Generator().manual_seed(9)
    x = torch.randn(b, t, 3 * h * dh, generator=g, requires_grad=True)
    kpm = left_padding_mask([t, t - 5, 2], t)
    q, k, v = x.view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    out = K.attention(q, k, v, kpm, causal=causal)
    ref = attention_float32(q, k, v, kpm, causal)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    go = torch.randn(out.shape, generator=g).permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    (gx,) = torch.autograd.grad(out, x, go)
    (rx,) = torch.autograd.grad(ref, x, go)
    torch.testing.assert_close(gx, rx, **TOL[torch.float32])


def test_attention_empty_batch_keeps_graph():
    q, k, v = (torch.zeros(0, 2, 5, 16, requires_grad=True) for _ in range(3))
    out = K.attention(q, k, v)
    assert out.shape == (0, 2, 5, 16)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g.shape == q.shape for g in grads)


def test_forced_triton_refuses_what_the_kernels_cannot_take():
    x = torch.zeros(1, 1, 4, 16, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="cannot take this call"):
        K.attention(x, x, x)
    wide = torch.zeros(1, 1, 4, 512)
    with pytest.raises(RuntimeError, match="head dim"):
        K.attention(wide, wide, wide)
    p = torch.zeros(2, 8, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float64"):
        K.best_segments(p, torch.tensor([8, 8]), 3, 0)


@pytest.mark.parametrize("n,t,k,start_min", BEST_CASES)
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("per_task", [False, True])
def test_best_segments_choose_as_the_rust_scorer(n, t, k, start_min, integer, per_task):
    check_best_segments_choose_as_the_rust_scorer("triton", n, t, k, start_min, integer, per_task)


def test_best_segments_ties_go_to_the_earliest_row_then_start():
    check_best_segments_ties_go_to_the_earliest_row_then_start()


def test_best_segments_reject_non_finite_errors_inside_episodes():
    check_best_segments_reject_non_finite_errors_inside_episodes()
