"""Fused flash-attention (forward + backward) in Triton, with key padding, causal mask, dropout.

Imported lazily by :func:`metadt.kernels.attention` only when the dispatch
point picks Triton. Semantics are those of :mod:`metadt.kernels.attention`.

Algorithm (FlashAttention-2): the forward streams key/value blocks through an
online softmax in the log2 domain and stores the output and the per-row
log-sum-exp; the backward recomputes the probabilities from that LSE in two
kernels (dK/dV per key block looping over query blocks, dQ per query block
looping over key blocks), so it needs no atomics and is deterministic.

Masked scores are ``-inf``; a row whose every key is masked keeps
``m = -inf`` and ``l = 0``: the running maximum is replaced by 0 when it is
``-inf`` (so ``exp2`` sees ``-inf``, never ``inf - inf``), its output is
written as exactly 0 and its LSE as ``+inf``, so the backward recomputes
``p = 0`` for it and its gradients are exactly 0.

Dropout uses Philox (``tl.rand``) keyed by ``(seed + batch*head, i*T + j)``,
so the backward regenerates the forward's pattern bit for bit;
:func:`dropout_keep_mask` materializes the same pattern for tests.

Precision: products accumulate in float32. For float32 inputs the matrix
products use TF32 only when PyTorch's own switch allows it for float32
matmuls (``torch.backends.cuda.matmul.fp32_precision``/``allow_tf32``), IEEE
float32 otherwise. Under Triton's interpreter
(``TRITON_INTERPRET=1``) all products run in float32 (the interpreter's
bf16 ``tl.dot`` is wrong).
"""
from __future__ import annotations

import math

import torch
import triton
from torch.autograd.function import once_differentiable
import triton.language as tl

from .attention import MAX_HEAD_DIM, TRITON_DTYPES
from .dispatch import interpreter_enabled

__all__ = ["attention_triton", "dropout_keep_mask", "block_sizes"]

LOG2E = 1.4426950408889634


@triton.jit
def _attn_fwd(Q, K, V, KPM, O, LSE, seed, dropout_p, qk_scale,
              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
              H, T, D,
              HAS_KPM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
              DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    hh = bh % H
    Q += b.to(tl.int64) * sqb + hh.to(tl.int64) * sqh
    K += b.to(tl.int64) * skb + hh.to(tl.int64) * skh
    V += b.to(tl.int64) * svb + hh.to(tl.int64) * svh
    O += b.to(tl.int64) * sob + hh.to(tl.int64) * soh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    d_ok = offs_d < D
    q = tl.load(Q + offs_m[:, None] * sqt + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    keep_scale = 1.0 / (1.0 - dropout_p)

    hi = T
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < T
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + offs_n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + offs_n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        ok = n_ok
        if HAS_KPM:
            kp = tl.load(KPM + b * T + offs_n, mask=n_ok, other=0)
            ok = ok & (kp != 0)
        valid = ok[None, :] & m_ok[:, None]
        if CAUSAL:
            valid = valid & (offs_m[:, None] >= offs_n[None, :])
        qk = tl.where(valid, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            rnd = tl.rand(seed + bh, offs_m[:, None] * T + offs_n[None, :])
            p = tl.where(rnd >= dropout_p, p * keep_scale, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    tl.store(O + offs_m[:, None] * sot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])
    lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, lse, mask=m_ok)


@triton.jit
def _attn_bwd_dkdv(Q, K, V, KPM, DO, LSE, DELTA, DK, DV, seed, dropout_p, qk_scale, sm_scale,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                   H, T, D,
                   HAS_KPM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
                   DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    hh = bh % H
    Q += b.to(tl.int64) * sqb + hh.to(tl.int64) * sqh
    K += b.to(tl.int64) * skb + hh.to(tl.int64) * skh
    V += b.to(tl.int64) * svb + hh.to(tl.int64) * svh
    DO += b.to(tl.int64) * sdb + hh.to(tl.int64) * sdh
    base = bh.to(tl.int64) * T * D  # DK, DV: contiguous [B, H, T, D]
    row_base = bh.to(tl.int64) * T
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < T
    d_ok = offs_d < D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + offs_n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + offs_n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    ok = n_ok
    if HAS_KPM:
        kp = tl.load(KPM + b * T + offs_n, mask=n_ok, other=0)
        ok = ok & (kp != 0)

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    keep_scale = 1.0 / (1.0 - dropout_p)
    lo = 0
    if CAUSAL:
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start_m in range(lo, T, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < T
        q_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + offs_m[:, None] * sqt + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + offs_m[:, None] * sdt + offs_d[None, :], mask=q_mask, other=0.0)
        if DOT_F32:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
        qkT = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # [N, M]
        valid = ok[:, None] & m_ok[None, :]
        if CAUSAL:
            valid = valid & (offs_m[None, :] >= offs_n[:, None])
        pT = tl.where(valid, tl.exp2(qkT - lse[None, :]), 0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # [N, M]
        if DROPOUT:
            rnd = tl.rand(seed + bh, offs_m[None, :] * T + offs_n[:, None])
            keep = rnd >= dropout_p
            pdT = tl.where(keep, pT * keep_scale, 0.0)
            dpT = tl.where(keep, dpT * keep_scale, 0.0)
        else:
            pdT = pT
        dv += tl.dot(pdT.to(do.dtype), do, input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale
    tl.store(DK + base + offs_n[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=kv_mask)
    tl.store(DV + base + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=kv_mask)


@triton.jit
def _attn_bwd_dq(Q, K, V, KPM, DO, LSE, DELTA, DQ, seed, dropout_p, qk_scale, sm_scale,
                 sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                 H, T, D,
                 HAS_KPM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
                 DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    hh = bh % H
    Q += b.to(tl.int64) * sqb + hh.to(tl.int64) * sqh
    K += b.to(tl.int64) * skb + hh.to(tl.int64) * skh
    V += b.to(tl.int64) * svb + hh.to(tl.int64) * svh
    DO += b.to(tl.int64) * sdb + hh.to(tl.int64) * sdh
    base = bh.to(tl.int64) * T * D  # DQ: contiguous [B, H, T, D]
    row_base = bh.to(tl.int64) * T
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    d_ok = offs_d < D
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + offs_m[:, None] * sqt + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(DO + offs_m[:, None] * sdt + offs_d[None, :], mask=q_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    keep_scale = 1.0 / (1.0 - dropout_p)
    hi = T
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < T
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + offs_n[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + offs_n[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        ok = n_ok
        if HAS_KPM:
            kp = tl.load(KPM + b * T + offs_n, mask=n_ok, other=0)
            ok = ok & (kp != 0)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        valid = ok[None, :] & m_ok[:, None]
        if CAUSAL:
            valid = valid & (offs_m[:, None] >= offs_n[None, :])
        p = tl.where(valid, tl.exp2(qk - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROPOUT:
            rnd = tl.rand(seed + bh, offs_m[:, None] * T + offs_n[None, :])
            dp = tl.where(rnd >= dropout_p, dp * keep_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + base + offs_m[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=q_mask)


@triton.jit
def _dropout_keep(KEEP, seed, dropout_p, T, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    bh = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rnd = tl.rand(seed + bh, offs_m[:, None] * T + offs_n[None, :])
    keep = (rnd >= dropout_p).to(tl.int8)
    tl.store(KEEP + bh.to(tl.int64) * T * T + offs_m[:, None] * T + offs_n[None, :], keep,
             mask=(offs_m[:, None] < T) & (offs_n[None, :] < T))


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def block_sizes(t: int, d: int, dtype: torch.dtype, interpret: bool) -> dict:
    """Tile sizes and launch options for a ``[*, *, t, d]`` problem.

    Under the interpreter every program costs milliseconds, so one block spans
    up to 128 rows (T <= 128 -> a single program per batch*head). On a GPU the
    tiles shrink as a row of the head dimension widens, so that every kernel
    (the backward ones are the largest) stays under ~70 KB of shared memory
    on sm_80/sm_86 (checked by the ahead-of-time compile test).
    """
    block_d = max(16, _next_pow2(d))
    t_cap = max(16, _next_pow2(t))
    if interpret:
        blk = min(128, t_cap)
        return dict(BLOCK_M=blk, BLOCK_N=blk, BLOCK_D=block_d, num_warps=4, num_stages=1)
    row_bytes = block_d * torch.empty((), dtype=dtype).element_size()
    if row_bytes <= 128:
        block_m, block_n = 64, 64
    elif row_bytes <= 256:
        block_m, block_n = 64, 32
    else:
        block_m, block_n = 32, 32
    return dict(BLOCK_M=min(block_m, t_cap), BLOCK_N=min(block_n, t_cap), BLOCK_D=block_d,
                num_warps=4 if block_d <= 128 else 8, num_stages=2)


def _config(t: int, d: int, dtype: torch.dtype, interpret: bool,
            blocks: tuple[int, int] | None) -> dict:
    cfg = block_sizes(t, d, dtype, interpret)
    cfg["enable_fp_fusion"] = True  # explicit: silences Triton 3.9's default-change warning
    if blocks is not None:  # tests: force several blocks per row / column
        cfg["BLOCK_M"], cfg["BLOCK_N"] = (int(x) for x in blocks)
    return cfg


def _tf32_allowed() -> bool:
    # PyTorch's own switch for float32 matmuls on CUDA (new and legacy spellings).
    matmul = torch.backends.cuda.matmul
    setting = str(getattr(matmul, "fp32_precision", "none")).lower()
    if setting in ("tf32", "ieee"):
        return setting == "tf32"
    return bool(matmul.allow_tf32)


def _flags(q: torch.Tensor) -> tuple[bool, str | None]:
    """(DOT_F32, PRECISION): products in float32? and ``tl.dot``'s ``input_precision``.

    ``None`` leaves Triton's default (TF32 for float32 on NVIDIA tensor cores;
    irrelevant for 16-bit inputs), so no backend sees an option it lacks.
    """
    interpret = interpreter_enabled()
    if interpret:
        return True, None
    if q.dtype == torch.float32:
        return True, (None if _tf32_allowed() else "ieee")
    return False, None


def _inner_contiguous(x: torch.Tensor) -> torch.Tensor:
    # Any batch/head/time strides are fine (e.g. q, k, v sliced out of one
    # fused qkv projection); the head dimension must be dense.
    return x if x.stride(-1) == 1 else x.contiguous()


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _kpm_arg(q: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    if key_padding_mask is None:
        return q  # never read (HAS_KPM=False)
    return key_padding_mask.to(device=q.device, dtype=torch.bool).contiguous().view(torch.uint8)


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, causal, dropout_p, scale, seed, blocks):
        b, h, t, d = q.shape
        q, k, v = _inner_contiguous(q), _inner_contiguous(k), _inner_contiguous(v)
        kpm = _kpm_arg(q, key_padding_mask)
        o = torch.empty(b, h, t, d, dtype=q.dtype, device=q.device)
        lse = torch.empty(b, h, t, dtype=torch.float32, device=q.device)
        interpret = interpreter_enabled()
        cfg = _config(t, d, q.dtype, interpret, blocks)
        dot_f32, precision = _flags(q)
        grid = (triton.cdiv(t, cfg["BLOCK_M"]), b * h)
        _attn_fwd[grid](
            q, k, v, kpm, o, lse, seed, float(dropout_p), scale * LOG2E,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), h, t, d,
            HAS_KPM=key_padding_mask is not None, CAUSAL=bool(causal),
            DROPOUT=dropout_p > 0.0, DOT_F32=dot_f32, PRECISION=precision, **cfg,
        )
        ctx.save_for_backward(q, k, v, kpm, o, lse)
        ctx.has_kpm = key_padding_mask is not None
        ctx.causal = bool(causal)
        ctx.dropout_p = float(dropout_p)
        ctx.scale = scale
        ctx.seed = seed
        ctx.blocks = blocks
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, kpm, o, lse = ctx.saved_tensors
        b, h, t, d = q.shape
        do = _inner_contiguous(do.to(q.dtype))
        delta = (do.float() * o.float()).sum(dim=-1).contiguous()  # [B, H, T]
        dq, dk, dv = (torch.empty(b, h, t, d, dtype=q.dtype, device=q.device) for _ in range(3))
        interpret = interpreter_enabled()
        cfg = _config(t, d, q.dtype, interpret, ctx.blocks)
        dot_f32, precision = _flags(q)
        common = dict(HAS_KPM=ctx.has_kpm, CAUSAL=ctx.causal, DROPOUT=ctx.dropout_p > 0.0,
                      DOT_F32=dot_f32, PRECISION=precision, **cfg)
        args = (ctx.seed, ctx.dropout_p, ctx.scale * LOG2E, ctx.scale,
                *_strides(q), *_strides(k), *_strides(v), *_strides(do), h, t, d)
        _attn_bwd_dkdv[(triton.cdiv(t, cfg["BLOCK_N"]), b * h)](
            q, k, v, kpm, do, lse, delta, dk, dv, *args, **common)
        _attn_bwd_dq[(triton.cdiv(t, cfg["BLOCK_M"]), b * h)](
            q, k, v, kpm, do, lse, delta, dq, *args, **common)
        return dq, dk, dv, None, None, None, None, None, None


def _new_seed() -> int:
    # Drawn from PyTorch's CPU generator, so torch.manual_seed makes runs repeatable.
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_padding_mask: torch.Tensor | None = None, causal: bool = True,
                     dropout_p: float = 0.0, scale: float | None = None,
                     seed: int | None = None,
                     blocks: tuple[int, int] | None = None) -> torch.Tensor:
    """Fused attention (autograd-aware); ``dropout_p`` applies as given (no ``training`` flag).

    ``seed`` fixes the dropout pattern (default: drawn from PyTorch's CPU
    generator); ``blocks = (BLOCK_M, BLOCK_N)`` overrides the tile sizes
    (powers of two >= 16), for tests.
    """
    if q.dtype not in TRITON_DTYPES:
        raise TypeError(f"Triton attention supports float32/float16/bfloat16, not {q.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"Triton attention supports head dim <= {MAX_HEAD_DIM}; got {q.shape[-1]}")
    if q.numel() == 0:  # nothing to launch; keep q, k, v in the graph
        return q * 0 + k * 0 + v * 0
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if dropout_p > 0.0 and seed is None:
        seed = _new_seed()
    return _FlashAttention.apply(q, k, v, key_padding_mask, causal, float(dropout_p), scale,
                                 int(seed or 0), blocks)


def dropout_keep_mask(b: int, h: int, t: int, dropout_p: float, seed: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The bool keep pattern ``[B, H, T, T]`` the kernels use for ``(seed, dropout_p)``."""
    keep = torch.empty(b * h, t, t, dtype=torch.int8, device=device)
    blk = min(128, max(16, _next_pow2(t)))
    _dropout_keep[(triton.cdiv(t, blk), triton.cdiv(t, blk), b * h)](
        keep, seed, float(dropout_p), t, BLOCK_M=blk, BLOCK_N=blk)
    return keep.view(b, h, t, t).bool()
