"""Benchmark metadt's Triton kernels against the PyTorch path (needs a CUDA device).

    python benches/bench_kernels.py            # all cases
    python benches/bench_kernels.py --quick    # fewer repetitions

Cases (the paper's configs, then a longer sequence):

* attention forward and forward+backward, causal with left padding:
  batch 128, 75 tokens (K=20 main + k=5 prompt steps, 3 tokens each), width
  128, 1 head; batch 128, 24 + 9 tokens x 3 (Hopper/Walker K=8, k=3); and
  B=16, T=1024, 4 heads of 32 (a long-sequence case);
* prompt scoring (``best_segments``, what the pipeline scores with on the
  device): 4500 candidate episodes of 200 steps (45 tasks x 100 episodes,
  MuJoCo horizon), k=5, start_min=4, per episode and per task, beside the Rust
  store's ``best_segments`` on the same errors on the host.

Each case runs the Triton kernel and the PyTorch path (``METADT_KERNELS``
forced each way through the one dispatch point) in float32 and bfloat16
(attention) and prints milliseconds per call and the speed-up. It prints
figures only; it never asserts a speed. Without CUDA it says so and exits 0
(``--cpu`` still times the PyTorch fallback on the CPU).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

import metadt.kernels as K


@contextmanager
def forced(mode: str):
    old = os.environ.get(K.ENV_VAR)
    os.environ[K.ENV_VAR] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(K.ENV_VAR, None)
        else:
            os.environ[K.ENV_VAR] = old


def timeit(fn, reps: int, warmup: int = 3) -> float:
    """Milliseconds per call (CUDA events on a GPU, wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1e3 / reps


def attention_case(b, h, t, d, dtype, device, backward):
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g).to(device=device, dtype=dtype)
               .requires_grad_(backward) for _ in range(3))
    lengths = torch.randint(t // 3, t + 1, (b,), generator=g)
    kpm = (torch.arange(t)[None, :] >= (t - lengths)[:, None]).to(device)
    go = torch.randn(b, h, t, d, generator=g).to(device=device, dtype=dtype)

    def run():
        out = K.attention(q, k, v, kpm, causal=True, dropout_p=0.1, training=backward)
        if backward:
            torch.autograd.grad(out, (q, k, v), go)
    return run


def best_case(n, t, tasks, device, per):
    g = torch.Generator(device="cpu").manual_seed(0)
    errors = torch.rand(n, t, generator=g).to(device)
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g).to(device)
    groups = (torch.arange(n) % tasks).to(device) if per == "task" else None

    def run():
        K.best_segments(errors, lengths, 5, 4, groups)
    return run


def rust_best(n, t, tasks, per, reps):
    """Milliseconds per ``store.best_segments`` call on the same kind of errors (host)."""
    from metadt.train.device_scoring import errors_store

    g = torch.Generator(device="cpu").manual_seed(0)
    errors = torch.rand(n, t, generator=g).numpy()
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g).numpy()
    store, _ = errors_store(errors, lengths, (np.arange(n) % tasks) if per == "task" else None)
    return timeit(lambda: store.best_segments("err", length=5, start_min=4, per="task",
                                              mode="argmax"), reps)


def compare(name: str, make, reps: int, modes=("torch", "triton")) -> None:
    times = {}
    for mode in modes:
        with forced(mode):
            fn = make()
            try:
                times[mode] = timeit(fn, reps)
            except Exception as exc:  # report, keep benchmarking the rest
                print(f"{name:<58} {mode}: failed ({type(exc).__name__}: {exc})")
                return
    line = "  ".join(f"{m} {times[m]:8.3f} ms" for m in modes)
    speedup = f"  speed-up x{times['torch'] / times['triton']:.2f}" if "triton" in times else ""
    print(f"{name:<58} {line}{speedup}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--cpu", action="store_true",
                    help="without CUDA, still time the PyTorch fallback on the CPU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    reps = 10 if args.quick else 50
    if args.threads:
        torch.set_num_threads(args.threads)

    if not torch.cuda.is_available():
        print("bench_kernels: skipped: no CUDA device (the Triton kernels only run on CUDA; "
              "their correctness is tested under TRITON_INTERPRET=1)")
        if args.cpu:
            print("CPU fallback timings (PyTorch path):")
            for backward in (False, True):
                tag = "fwd+bwd" if backward else "fwd"
                compare(f"attention {tag} B=128 T=75 H=1 D=128 float32",
                        lambda: attention_case(128, 1, 75, 128, torch.float32, "cpu", backward),
                        max(reps // 10, 2), modes=("torch",))
            for per in ("episode", "task"):
                compare(f"best_segments N=4500 T=200 k=5 per {per}",
                        lambda per=per: best_case(4500, 200, 45, "cpu", per),
                        max(reps // 10, 2), modes=("torch",))
                print(f"{'  the Rust store on the same errors (host)':<58} "
                      f"rust {rust_best(4500, 200, 45, per, max(reps // 10, 2)):8.3f} ms")
        return 0

    dev = "cuda"
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"triton available: {K.triton_available()}  tf32 matmul: "
          f"{torch.backends.cuda.matmul.allow_tf32}")
    att = [
        ("B=128 T=75 H=1 D=128 (paper, K=20 k=5)", (128, 1, 75, 128)),
        ("B=128 T=33 H=1 D=128 (Hopper/Walker, K=8 k=3)", (128, 1, 33, 128)),
        ("B=16 T=1024 H=4 D=32 (long sequence)", (16, 4, 1024, 32)),
    ]
    for dtype in (torch.float32, torch.bfloat16):
        for backward in (False, True):
            tag = "fwd+bwd" if backward else "fwd"
            for label, shape in att:
                compare(f"attention {tag:<7} {label} {str(dtype)[6:]}",
                        lambda shape=shape: attention_case(*shape, dtype, dev, backward), reps)
    for per in ("episode", "task"):
        compare(f"best_segments N=4500 T=200 k=5 per {per} (45 tasks)",
                lambda per=per: best_case(4500, 200, 45, dev, per), reps)
        print(f"{'  the Rust store on the same errors (host)':<58} "
              f"rust {rust_best(4500, 200, 45, per, max(reps // 5, 2)):8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
