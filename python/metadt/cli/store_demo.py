"""`metadt store-demo`: a tour of the Rust trajectory store on synthetic data."""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ORDER = 90

HELP = "demo of the trajectory store: build, sample windows with contexts and prompts, save/load (with timings)"

DESCRIPTION = """\
Build a synthetic dataset shaped like Cheetah-Vel (tasks x episodes x 200
steps, obs 20, act 6) in a `metadt.TrajectoryStore`, then show and time:
adding episodes, attaching a per-step score column, sampling transitions with
their h-step context, Decision-Transformer windows with the context of every
step and a complementary prompt, segment enumeration, prefetching, and a save
/ memory-mapped load round trip. Nothing is written outside a temporary
directory unless --out is given.
"""

EPILOG = """\
examples:
  metadt store-demo                       # 45 tasks x 100 episodes (900k steps)
  metadt store-demo --tasks 5 --episodes 20
  metadt store-demo --out /tmp/demo-store # keep the saved store
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("store-demo", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=45, help="number of tasks (default 45)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per task (default 100)")
    p.add_argument("--horizon", type=int, default=200, help="steps per episode (default 200)")
    p.add_argument("--batch", type=int, default=128, help="batch size B (default 128)")
    p.add_argument("--window-len", type=int, default=None, help="window length K (default 20)")
    p.add_argument("--context-len", type=int, default=None, help="context length h (default 4)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt length k (default 5)")
    for old in DEPRECATED_FLAGS:  # the names before window_len/context_len/prompt_len: hidden
        p.add_argument(old, type=int, default=None, dest=_old_dest(old), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="save the store here (default: a temporary directory)")
    p.set_defaults(func=run)


#: deprecated flag -> its name now (accepted with a DeprecationWarning; both given is an error)
DEPRECATED_FLAGS = {"--length": "--window-len", "--context": "--context-len", "--prompt-length": "--prompt-len"}
DEFAULTS = {"window_len": 20, "context_len": 4, "prompt_len": 5}


def _old_dest(flag: str) -> str:
    return "deprecated_" + flag.lstrip("-").replace("-", "_")


def _resolve_lengths(args: argparse.Namespace) -> None:
    """Fill ``args.window_len`` / ``context_len`` / ``prompt_len`` from the new flags, else
    the deprecated ones (warned), else the defaults; an old and a new flag together is an
    error."""
    import warnings

    for old, new in DEPRECATED_FLAGS.items():
        dest = new.lstrip("-").replace("-", "_")
        value, old_value = getattr(args, dest), getattr(args, _old_dest(old), None)
        if old_value is not None:
            if value is not None:
                raise ValueError(f"{old} is a deprecated alias of {new}: give only {new}")
            warnings.warn(f"store-demo {old} is deprecated: use {new}", DeprecationWarning,
                          stacklevel=2)
            value = old_value
        setattr(args, dest, DEFAULTS[dest] if value is None else value)


def _ms(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def _timed(fn, n: int = 20):
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    return out, (time.perf_counter() - t0) / n


def _shapes(batch: dict) -> str:
    return "\n".join(f"    {k:<18} {str(v.shape):<16} {v.dtype}" for k, v in batch.items())


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from metadt import PromptSpec, TrajectoryStore

    _resolve_lengths(args)
    for name in ("tasks", "episodes", "horizon", "batch", "window_len", "prompt_len"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.context_len < 0:
        raise ValueError("--context-len must be >= 0")
    rng = np.random.default_rng(args.seed)
    od, ad, T = 20, 6, args.horizon
    window_len, context_len, prompt_len, B = args.window_len, args.context_len, args.prompt_len, args.batch

    print(f"1. build: {args.tasks} tasks x {args.episodes} episodes x {T} steps (obs {od}, act {ad})")
    store = TrajectoryStore(od, ad)
    obs = rng.normal(size=(args.episodes * T, od)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(args.episodes * T, ad)).astype(np.float32)
    t0 = time.perf_counter()
    for task in range(args.tasks):
        vel = task / max(1, args.tasks - 1) * 3.0
        for e in range(args.episodes):
            sl = slice(e * T, (e + 1) * T)
            rew = -np.abs(obs[sl, 0] - vel) - 0.05 * (act[sl] ** 2).sum(1)
            store.add_episode(obs[sl], act[sl], rew, task=task)
    dt = time.perf_counter() - t0
    store.set_metadata({"family": "synthetic-cheetah-vel", "seed": args.seed})
    print(f"   {store}")
    print(f"   add_episode x {store.num_episodes}: {dt:.2f} s ({store.num_steps / dt / 1e6:.1f} M steps/s); "
          f"memory {store.memory_bytes() / 2**20:.0f} MiB for {store.raw_bytes() / 2**20:.0f} MiB of raw columns")
    top = store.top_episodes(0, 3)
    print(f"   task 0: {len(store.episodes_of_task(0))} episodes, best returns "
          f"{np.round(store.episode_returns()[top], 1).tolist()} (episodes {top.tolist()})")

    print("2. attach a per-step score column (e.g. world-model prediction errors)")
    err = np.abs(rng.normal(size=(store.num_steps, 1))).astype(np.float32)
    store.attach_column("wm_error", err)
    view = store.column("wm_error")
    print(f"   column('wm_error'): {view.shape} {view.dtype}, zero-copy, writeable={view.flags.writeable}")

    print(f"3. sample_transitions(B={B}, context_len={context_len}) -- world-model batches")
    tb, dt = _timed(lambda: store.sample_transitions(B, context_len=context_len, seed=None))
    print(_shapes(tb))
    print(f"   {_ms(dt)} per batch")

    prompt = PromptSpec(length=prompt_len, score="wm_error", strategy="argmax", start_min=context_len)
    print(f"4. sample_windows(B={B}, window_len={window_len}, context_len={context_len}, columns=['wm_error'], "
          f"prompt={prompt})")
    wb, dt = _timed(lambda: store.sample_windows(B, window_len=window_len, context_len=context_len,
                                                 return_scale=500.0, columns=["wm_error"],
                                                 prompt=prompt))
    print(_shapes(wb))
    print(f"   {_ms(dt)} per batch; the h-step context of window position j is ctx_*[:, j:j+{context_len}]")
    plain, dt = _timed(lambda: store.sample_windows(B, window_len=window_len, return_scale=500.0))
    print(f"   plain windows (no context, no prompt): {_ms(dt)} per batch")
    i = 0
    print(f"   sample 0: task {wb['tasks'][i]}, episode {wb['episodes'][i]}, timesteps {wb['timesteps'][i].tolist()}")
    print(f"             prompt from episode {wb['prompt_episodes'][i]} at step {wb['prompt_starts'][i]}")

    print(f"5. segments of length {prompt_len} starting at >= {context_len}, scored by wm_error")
    seg, dt = _timed(lambda: store.segment_scores("wm_error", length=prompt_len, start_min=context_len), n=3)
    best = store.best_segments("wm_error", length=prompt_len, start_min=context_len, per="task", mode="argmax")
    print(f"   segment_scores: {len(seg['scores']):,} segments in {_ms(dt)}; best_segments per task: "
          f"{len(best['keys'])} (task 0 -> episode {best['episodes'][0]}, start {best['starts'][0]}, "
          f"score {best['scores'][0]:.2f})")

    print("6. prefetch: batches prepared on a Rust thread while Python works")
    with store.prefetch("windows", depth=2, num_batches=50, seed=args.seed, batch=B,
                        window_len=window_len, context_len=context_len,
                        return_scale=500.0) as it:
        t0 = time.perf_counter()
        n = sum(1 for _ in it)
        dt = (time.perf_counter() - t0) / n
    print(f"   {n} batches, {_ms(dt)} per batch as consumed")

    print("7. save / load")
    tmp = None
    path = args.out
    if path is None:
        tmp = tempfile.mkdtemp(prefix="metadt-store-demo-")
        path = Path(tmp) / "store"
    try:
        t0 = time.perf_counter()
        store.save(path)
        dt_save = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        t0 = time.perf_counter()
        loaded = TrajectoryStore.load(path, mmap=True)
        dt_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        TrajectoryStore.load(path, mmap=False)
        dt_full = time.perf_counter() - t0
        same = np.array_equal(loaded.sample_windows(8, window_len=window_len, seed=1)["obs"],
                              store.sample_windows(8, window_len=window_len, seed=1)["obs"])
        print(f"   save {size / 1e6:.0f} MB to {path}: {dt_save:.2f} s")
        print(f"   load (mmap): {_ms(dt_load)}; load (read + verify CRC-32): {_ms(dt_full)}; same batches: {same}")
        print(f"   metadata: {loaded.metadata}")
        del loaded
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0
