"""metadt.kernels on the CPU: the PyTorch fallbacks against plain references, and dispatch.

The Triton kernels themselves are tested under Triton's interpreter in a
separate process (tests/kernels_interpret_cases.py, launched from here).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metadt.kernels as K
from metadt.kernels import dispatch
from kernels_reference import (BEST_CASES, assert_same_choice_as_rust, attention_float32,
                               check_best_segments_choose_as_the_rust_scorer,
                               check_best_segments_reject_non_finite_errors_inside_episodes,
                               check_best_segments_ties_go_to_the_earliest_row_then_start,
                               errors_case, left_padding_mask)

HERE = Path(__file__).resolve().parent

# Fallback vs the float32 reference: both float32 on the CPU, only the
# summation order differs.
ATOL, RTOL = 1e-5, 1e-5


def _qkv(b, h, t, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, dtype=torch.float32).to(dtype).requires_grad_()
            for _ in range(3)]


@pytest.mark.parametrize("t", [1, 7, 33, 75])
@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_fallback_matches_reference(t, d, padded, causal, monkeypatch):
    monkeypatch.setenv(K.ENV_VAR, "auto")
    b, h = 3, 2
    q, k, v = _qkv(b, h, t, d, seed=t * 100 + d)
    kpm = left_padding_mask([t, max(t - 3, 0), 0], t) if padded else None
    out = K.attention(q, k, v, kpm, causal=causal)
    ref = attention_float32(q, k, v, kpm, causal=causal)
    assert out.shape == (b, h, t, d)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), go)
    refs = torch.autograd.grad(ref, (q, k, v), go)
    for g, r in zip(grads, refs):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    if padded and causal:
        # Trajectory 2 is all padding; trajectory 1's first 3 rows see only padding.
        assert torch.count_nonzero(out[2]) == 0
        assert torch.count_nonzero(out[1, :, : min(3, t)]) == 0


def test_attention_fully_masked_gives_zeros_and_finite_grads():
    q, k, v = _qkv(2, 1, 5, 16)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    for causal in (True, False):
        out = K.attention(q, k, v, kpm, causal=causal)
        assert torch.equal(out, torch.zeros_like(out))
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        for g in grads:
            assert torch.equal(g, torch.zeros_like(g))


def test_attention_dropout_eval_is_deterministic_and_train_drops():
    q, k, v = _qkv(2, 2, 9, 16)
    kpm = left_padding_mask([9, 4], 9)
    a = K.attention(q, k, v, kpm, dropout_p=0.5, training=False)
    b = K.attention(q, k, v, kpm, dropout_p=0.5, training=False)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, attention_float32(q, k, v, kpm), atol=ATOL, rtol=RTOL)
    torch.manual_seed(0)
    c = K.attention(q, k, v, kpm, dropout_p=0.5, training=True)
    assert torch.isfinite(c).all() and not torch.allclose(a, c)


def test_attention_rejects_bad_shapes():
    q, k, v = _qkv(2, 1, 5, 16)
    with pytest.raises(ValueError):
        K.attention(q, k[:, :, :4], v)
    with pytest.raises(ValueError):
        K.attention(q, k, v, torch.ones(2, 4, dtype=torch.bool))


def test_best_segments_float64_and_half_errors():
    errors, lengths, task = errors_case(7, 30, seed=1)
    errors = errors.clamp(max=100.0)  # row 1's 1e30 would overflow float16 (NaN padding stays)
    r64 = K.best_segments(errors.double(), lengths, 5, 4, task)
    r32 = K.best_segments(errors, lengths, 5, 4, task)
    for a, b in zip(r64, r32):  # float64 errors that are float32 values: the same sums
        assert torch.equal(a, b)
    for dtype in (torch.float16, torch.bfloat16):
        half = errors.to(dtype)
        res = K.best_segments(half, lengths, 5, 4, task)
        assert_same_choice_as_rust(res, half.float().numpy(), lengths.numpy(), 5, 4,
                                   task.numpy())


def test_best_segments_validation():
    x = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="lengths"):
        K.best_segments(x, torch.tensor([5]), 2, 0)
    with pytest.raises(ValueError, match="k must"):
        K.best_segments(x, torch.tensor([5, 5]), 0, 0)
    with pytest.raises(ValueError, match="start_min"):
        K.best_segments(x, torch.tensor([5, 5]), 2, -1)
    with pytest.raises(ValueError, match="integer"):
        K.best_segments(x, torch.tensor([5.0, 5.0]), 2, 0)
    with pytest.raises(ValueError, match="groups"):
        K.best_segments(x, torch.tensor([5, 5]), 2, 0, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        K.best_segments(torch.zeros(2, 5, 1), torch.tensor([5, 5]), 2, 0)
    with pytest.raises(ValueError, match="float"):
        K.best_segments(torch.zeros(2, 5, dtype=torch.int64), torch.tensor([5, 5]), 2, 0)


def test_dispatch_env_var(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv(K.ENV_VAR, raising=False)
    assert dispatch.mode() == "auto"
    assert K.backend(cpu) == "torch"  # CPU tensors never take Triton in auto
    monkeypatch.setenv(K.ENV_VAR, "torch")
    assert K.backend(cpu) == "torch"
    monkeypatch.setenv(K.ENV_VAR, "bogus")
    with pytest.raises(ValueError):
        K.backend(cpu)
    monkeypatch.setenv(K.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError):  # CPU tensors need the interpreter
        K.backend(cpu)
    with pytest.raises(RuntimeError):
        K.attention(*_qkv(1, 1, 3, 16))


def test_dispatch_routes_unsupported_calls_to_torch_in_auto(monkeypatch):
    monkeypatch.setenv(K.ENV_VAR, "auto")
    cpu = torch.zeros(1)
    assert not dispatch.use_triton(cpu, unsupported="float64")
    monkeypatch.setenv(K.ENV_VAR, "torch")
    assert not dispatch.use_triton(cpu, unsupported="float64")


def test_dispatch_forced_torch_on_any_device(monkeypatch):
    monkeypatch.setenv(K.ENV_VAR, "torch")
    q, k, v = _qkv(1, 1, 4, 16)
    torch.testing.assert_close(K.attention(q, k, v), attention_float32(q, k, v),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_under_interpreter():
    """Run tests/kernels_interpret_cases.py in a process that starts with TRITON_INTERPRET=1.

    The interpreter must be switched on before ``triton`` is imported, so it
    cannot be toggled inside this (interpreter-free) pytest process.
    """
    env = dict(os.environ, TRITON_INTERPRET="1", **{K.ENV_VAR: "triton"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(HERE / "kernels_interpret_cases.py")],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, tail


AOT_SHARED_LIMIT = 99 * 1024  # max shared memory per block on sm_86/sm_89 (sm_80: 163 KB)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_compile_for_gpu_ahead_of_time():
    """No GPU here: compile the kernels to cubin for sm_80 (the real compiler, not the
    interpreter) with the launch configuration the wrappers would pick, and check that
    each fits consumer GPUs' shared memory."""
    proc = subprocess.run([sys.executable, "-c", AOT_CHECK], cwd=HERE, capture_output=True,
                          text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("shared ")]
    assert len(lines) == 10, proc.stdout
    for ln in lines:
        assert int(ln.split()[-1]) <= AOT_SHARED_LIMIT, ln


AOT_CHECK = r'''
import sys
import torch
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if "nvidia" not in triton.backends.backends:
        raise ImportError("no nvidia backend")
except Exception as exc:
    print(f"cannot compile ahead of time: {exc}")
    sys.exit(3)
from metadt.kernels import _attention_triton as A, _best_segments_triton as P

target = GPUTarget("cuda", 80, 32)

def compile_one(fn, types, consts, options):
    sig = {n: ("constexpr" if n in consts else types[n]) for n in fn.arg_names}
    k = triton.compile(ASTSource(fn, sig, consts), target=target, options=options)
    print("shared", fn.__name__, consts, k.metadata.shared)

for tdt, d in [(torch.float32, 128), (torch.bfloat16, 128), (torch.float16, 256)]:
    dt = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[tdt]
    cfg = A.block_sizes(75, d, tdt, interpret=False)
    options = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
    prec = "ieee" if tdt == torch.float32 else None
    for fn in (A._attn_fwd, A._attn_bwd_dkdv, A._attn_bwd_dq):
        types = {}
        for n in fn.arg_names:
            if n in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ"):
                types[n] = "*" + dt
            elif n == "KPM":
                types[n] = "*u8"
            elif n in ("LSE", "DELTA"):
                types[n] = "*fp32"
            elif n in ("dropout_p", "qk_scale", "sm_scale"):
                types[n] = "fp32"
            else:
                types[n] = "i32"
        consts = dict(HAS_KPM=True, CAUSAL=True, DROPOUT=True, DOT_F32=tdt == torch.float32,
                      PRECISION=prec, **cfg)
        compile_one(fn, types, consts, dict(options, enable_fp_fusion=True))
types = dict(E="*fp32", LEN="*i64", ORDER="*i64", OFF="*i64", EP="*i64", START="*i64",
             SCORE="*fp64", T="i32", k="i32", start_min="i32", width="i32")
compile_one(P._best_segments_kernel, types, dict(BLOCK_S=256), dict(num_warps=4))
'''


@pytest.mark.parametrize("n,t,k,start_min", BEST_CASES)
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("per_task", [False, True])
def test_best_segments_choose_as_the_rust_scorer(n, t, k, start_min, integer, per_task):
    check_best_segments_choose_as_the_rust_scorer("torch", n, t, k, start_min, integer, per_task)


def test_best_segments_ties_go_to_the_earliest_row_then_start():
    check_best_segments_ties_go_to_the_earliest_row_then_start()


def test_best_segments_reject_non_finite_errors_inside_episodes():
    check_best_segments_reject_non_finite_errors_inside_episodes()
