"""Benchmark of the trajectory store's batching (prints figures; not a test).

Dataset shaped like Cheetah-Vel: 45 tasks x 100 episodes x 200 steps = 900k
transitions, obs 20, act 6. For Decision-Transformer windows (K = 20,
B = 128 and 1024), without and with the h = 4 context of every step, and with
prompts (k = 5), it prints the time per batch and the output MB/s of:

- metadt (Rust, `TrajectoryStore.sample_windows`),
- a vectorized NumPy gather (fancy indexing on the flat columns; with
  contexts it gathers the [B, K, h, .] per-step context blocks, which is what
  a NumPy pipeline feeding a context encoder does),
- a per-sample Python loop (how most Decision Transformer code builds batches),
- a plain copy of the same number of output bytes (the ceiling), twice: from a
  source in the cache, and from a source in DRAM (the dataset does not fit in
  the cache, so the DRAM copy is the realistic ceiling; the ~20 us for 0.3 MB
  quoted in the issue matches it).

Also: store memory vs the raw column bytes, save time, and load time (mmap,
and full read with checksum verification).

    python benches/bench_store.py            # full size
    python benches/bench_store.py --quick    # 1/9 of the tasks, fewer repeats
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from metadt import PromptSpec, TrajectoryStore

K, H, KP = 20, 4, 5
SCALE = 500.0


def timeit(fn, min_time=0.3, repeats=5):
    """Best-of-`repeats` mean seconds per call, each repeat running >= min_time/repeats."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > min_time / repeats:
            break
        n *= 2
    best = dt / n
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def nbytes(batch: dict) -> int:
    return sum(v.nbytes for v in batch.values())


def fmt_t(s: float) -> str:
    return f"{s * 1e6:9.1f} us" if s < 1e-3 else f"{s * 1e3:9.2f} ms"


class NumpyGather:
    """Vectorized NumPy baseline over flat columns (episode starts/lengths per step)."""

    def __init__(self, store: TrajectoryStore):
        self.obs = np.array(store.column("obs"))
        self.act = np.array(store.column("actions"))
        self.rew = np.array(store.column("rewards"))
        self.rtg = np.array(store.column("rtg"))
        self.err = np.array(store.column("err"))[:, 0]
        off = store.episode_offsets()
        lens = store.episode_lengths()
        self.ep_of_step = np.repeat(np.arange(len(lens)), lens)
        self.start_of_step = np.repeat(off, lens)
        self.off, self.lens = off, lens
        self.task = store.episode_tasks()
        tasks = store.tasks()
        groups = [store.episodes_of_task(int(t)) for t in tasks]
        self.task_pos = {int(t): i for i, t in enumerate(tasks)}
        self.task_count = np.array([len(g) for g in groups])
        self.task_table = np.zeros((len(groups), self.task_count.max()), np.int64)
        for i, g in enumerate(groups):
            self.task_table[i, :len(g)] = g
        self.task_index = np.zeros(int(tasks.max()) + 1, np.int64)
        self.task_index[tasks] = np.arange(len(tasks))
        self.cs = np.concatenate([[0.0], np.cumsum(self.err, dtype=np.float64)])
        self.rng = np.random.default_rng(0)
        self.N = len(self.rew)

    def windows(self, B, context_len=0, prompt=False):
        end = self.rng.integers(0, self.N, B)
        start = self.start_of_step[end]
        idx = end[:, None] + np.arange(-K + 1, 1)[None, :]
        valid = idx >= start[:, None]
        idc = np.where(valid, idx, 0)
        obs = self.obs[idc] * valid[..., None]
        act = np.where(valid[..., None], self.act[idc], -10.0).astype(np.float32)
        rew = self.rew[idc] * valid
        rtg = self.rtg[idc] * valid / np.float32(SCALE)
        ts = (idx - start[:, None]) * valid
        out = {"obs": obs, "actions": act, "rewards": rew, "rtg": rtg, "timesteps": ts, "mask": valid,
               "tasks": self.task[self.ep_of_step[end]], "episodes": self.ep_of_step[end]}
        if context_len:
            cidx = idx[:, :, None] + np.arange(-context_len, 0)[None, None, :]  # [B, K, h]
            cval = cidx >= start[:, None, None]
            cidc = np.where(cval, cidx, 0)
            out["ctx_obs"] = self.obs[cidc] * cval[..., None]
            out["ctx_actions"] = self.act[cidc] * cval[..., None]
            out["ctx_rewards"] = self.rew[cidc] * cval
            out["ctx_mask"] = cval
        if prompt:
            ti = self.task_index[out["tasks"]]
            pe = self.task_table[ti, (self.rng.random(B) * self.task_count[ti]).astype(np.int64)]
            T = self.lens[pe]
            o = self.off[pe]
            # argmax over starts in [H, T-KP] of the summed score, vectorized with a cumulative sum
            cs = self.cs
            starts = np.arange(H, T.max() - KP + 1)
            seg = cs[o[:, None] + starts[None, :] + KP] - cs[o[:, None] + starts[None, :]]
            seg = np.where(starts[None, :] <= (T - KP)[:, None], seg, -np.inf)
            st = starts[np.argmax(seg, axis=1)]
            pidx = (o + st)[:, None] + np.arange(KP)[None, :]
            out.update(prompt_obs=self.obs[pidx], prompt_actions=self.act[pidx], prompt_rewards=self.rew[pidx],
                       prompt_rtg=self.rtg[pidx] / np.float32(SCALE), prompt_timesteps=st[:, None] + np.arange(KP),
                       prompt_mask=np.ones((B, KP), bool), prompt_episodes=pe, prompt_starts=st)
        return out


class PythonLoop:
    """Per-sample Python loop, the usual Decision Transformer get_batch."""

    def __init__(self, store: TrajectoryStore):
        obs, act, rew, rtg = (np.array(store.column(n)) for n in ("obs", "actions", "rewards", "rtg"))
        self.eps = []
        for o, n in zip(store.episode_offsets(), store.episode_lengths()):
            self.eps.append((obs[o:o + n], act[o:o + n], rew[o:o + n], rtg[o:o + n]))
        self.lens = store.episode_lengths()
        self.p = self.lens / self.lens.sum()
        self.rng = np.random.default_rng(0)
        self.od, self.ad = obs.shape[1], act.shape[1]
        err = np.array(store.column("err"))[:, 0]
        self.err = [err[o:o + n] for o, n in zip(store.episode_offsets(), store.episode_lengths())]
        self.task = store.episode_tasks()
        self.eps_of_task = {int(t): store.episodes_of_task(int(t)) for t in store.tasks()}

    def windows(self, B, context_len=0, prompt=False):
        s, a, r, g, ts, m = [], [], [], [], [], []
        cs, ca, cr = [], [], []
        ps, pa, pr, pg, pt, pe_, pst = [], [], [], [], [], [], []
        for e in self.rng.choice(len(self.eps), size=B, p=self.p):
            if prompt:
                cands = self.eps_of_task[int(self.task[e])]
                q = cands[self.rng.integers(len(cands))]
                qo, qa, qr, qg = self.eps[q]
                qe = self.err[q]
                best, start = -1.0, H
                for st in range(H, len(qr) - KP + 1):
                    sc = float(qe[st:st + KP].sum())
                    if sc > best:
                        best, start = sc, st
                ps.append(qo[start:start + KP])
                pa.append(qa[start:start + KP])
                pr.append(qr[start:start + KP])
                pg.append(qg[start:start + KP] / SCALE)
                pt.append(np.arange(start, start + KP))
                pe_.append(q)
                pst.append(start)
            o, ac, rw, rt = self.eps[e]
            end = self.rng.integers(0, len(rw))
            si = max(0, end - K + 1)
            n = end + 1 - si
            pad = K - n
            s.append(np.concatenate([np.zeros((pad, self.od), np.float32), o[si:end + 1]]))
            a.append(np.concatenate([np.full((pad, self.ad), -10.0, np.float32), ac[si:end + 1]]))
            r.append(np.concatenate([np.zeros(pad, np.float32), rw[si:end + 1]]))
            g.append(np.concatenate([np.zeros(pad, np.float32), rt[si:end + 1] / SCALE]))
            ts.append(np.concatenate([np.zeros(pad, np.int64), np.arange(si, end + 1)]))
            m.append(np.concatenate([np.zeros(pad, bool), np.ones(n, bool)]))
            if context_len:
                for t in range(end - K + 1, end + 1):
                    c0 = max(0, t - context_len)
                    cp = context_len - (max(t, 0) - c0)
                    cs.append(np.concatenate([np.zeros((cp, self.od), np.float32), o[c0:max(t, 0)]]))
                    ca.append(np.concatenate([np.zeros((cp, self.ad), np.float32), ac[c0:max(t, 0)]]))
                    cr.append(np.concatenate([np.zeros(cp, np.float32), rw[c0:max(t, 0)]]))
        out = {"obs": np.stack(s), "actions": np.stack(a), "rewards": np.stack(r), "rtg": np.stack(g),
               "timesteps": np.stack(ts), "mask": np.stack(m)}
        if context_len:
            out["ctx_obs"] = np.stack(cs).reshape(B, K, context_len, -1)
            out["ctx_actions"] = np.stack(ca).reshape(B, K, context_len, -1)
            out["ctx_rewards"] = np.stack(cr).reshape(B, K, context_len)
        if prompt:
            out.update(prompt_obs=np.stack(ps), prompt_actions=np.stack(pa), prompt_rewards=np.stack(pr),
                       prompt_rtg=np.stack(pg), prompt_timesteps=np.stack(pt), prompt_mask=np.ones((B, KP), bool),
                       prompt_episodes=np.array(pe_), prompt_starts=np.array(pst))
        return out


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 0


def build(tasks: int, eps: int, T: int, od: int, ad: int) -> tuple[TrajectoryStore, float]:
    rng = np.random.default_rng(0)
    store = TrajectoryStore(od, ad)
    obs = rng.normal(size=(eps * T, od)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(eps * T, ad)).astype(np.float32)
    rew = rng.normal(size=eps * T).astype(np.float32)
    t0 = time.perf_counter()
    for task in range(tasks):
        for e in range(eps):
            sl = slice(e * T, (e + 1) * T)
            store.add_episode(obs[sl], act[sl], rew[sl] + task, task=task)
    build_s = time.perf_counter() - t0
    store.attach_column("err", np.abs(rng.normal(size=(store.num_steps, 1))).astype(np.float32))
    return store, build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 tasks instead of 45, shorter timings")
    ap.add_argument("--no-loop", action="store_true", help="skip the (slow) per-sample Python loop")
    args = ap.parse_args()
    tasks = 5 if args.quick else 45
    min_time = 0.1 if args.quick else 0.3

    rss0 = rss_bytes()
    store, build_s = build(tasks, 100, 200, 20, 6)
    rss_store = rss_bytes() - rss0
    n = store.num_steps
    print(f"dataset: {tasks} tasks x 100 episodes x 200 steps = {n:,} transitions, obs 20, act 6 "
          f"(threads: {os.environ.get('RAYON_NUM_THREADS', os.cpu_count())})")
    print(f"build (add_episode x {store.num_episodes}): {build_s:.2f} s")
    raw = store.raw_bytes()
    print(f"memory: {store.memory_bytes() / 2**20:.1f} MiB held vs {raw / 2**20:.1f} MiB raw columns "
          f"({store.memory_bytes() / raw:.3f}x); process RSS grew by {rss_store / 2**20:.1f} MiB "
          f"({rss_store / raw:.3f}x, includes the generator's temporaries)")

    cold = np.ones(128 << 20, np.uint8)  # 128 MiB: larger than the last-level cache
    crng = np.random.default_rng(1)
    npg = NumpyGather(store)
    loop = PythonLoop(store)
    cases = [
        ("windows", dict(window_len=K, return_scale=SCALE), dict()),
        ("windows + h=4 context", dict(window_len=K, context_len=H, return_scale=SCALE), dict(context_len=H)),
        ("windows + prompt k=5", dict(window_len=K, return_scale=SCALE, prompt=PromptSpec(KP, "err", "argmax", start_min=H)),
         dict(prompt=True)),
        ("windows + context + prompt", dict(window_len=K, context_len=H, return_scale=SCALE,
                                            prompt=PromptSpec(KP, "err", "argmax", start_min=H)), dict(context_len=H, prompt=True)),
    ]
    print()
    print(f"{'case':<28} {'B':>5} {'impl':<14} {'time/batch':>12} {'MB/s':>9} {'out MB':>7}  note")
    for B in (128, 1024):
        for name, kw, np_kw in cases:
            ours = store.sample_windows(B, seed=0, **kw)
            ob = nbytes(ours)
            t_ours = timeit(lambda: store.sample_windows(B, **kw), min_time)
            src = np.ones(ob, np.uint8)
            dst = np.empty_like(src)
            t_copy = timeit(lambda: np.copyto(dst, src), min_time)
            # the same copy from a source that is not in the cache (as the dataset is):
            # a random 64-byte aligned offset into a buffer 4x larger than a typical L3
            t_cold = timeit(lambda: np.copyto(dst, cold[(o := int(crng.integers(0, cold.size - ob)) // 64 * 64):o + ob]),
                            min_time)
            nb = npg.windows(B, **np_kw)
            t_np = timeit(lambda: npg.windows(B, **np_kw), min_time)
            rows = [("metadt", t_ours, ob, ""), ("numpy gather", t_np, nbytes(nb),
                    "[B,K,h,.] contexts" if np_kw.get("context_len") else "")]
            if not args.no_loop:
                lb = loop.windows(B, **np_kw)
                t_loop = timeit(lambda: loop.windows(B, **np_kw), min_time, repeats=2)
                rows.append(("python loop", t_loop, nbytes(lb), ""))
            rows.append(("copy (cached)", t_copy, ob, "np.copyto of metadt's output bytes, source in cache"))
            rows.append(("copy (DRAM)", t_cold, ob, "the same copy from a source not in the cache"))
            for impl, t, b, note in rows:
                print(f"{name:<28} {B:>5} {impl:<14} {fmt_t(t):>12} {b / t / 1e6:9.0f} {b / 1e6:7.2f}  {note}")
            print(f"{'':<28} {'':>5} {'-> metadt vs numpy':<14}: {t_np / t_ours:5.1f}x faster; "
                  f"{100 * t_cold / t_ours:5.1f}% of the DRAM copy ceiling, {100 * t_copy / t_ours:5.1f}% of the cached one")
        print()

    # transitions (world-model batches)
    for B in (128, 1024):
        ob = nbytes(store.sample_transitions(B, context_len=H, seed=0))
        t = timeit(lambda: store.sample_transitions(B, context_len=H), min_time)
        print(f"{'transitions + h=4 context':<28} {B:>5} {'metadt':<14} {fmt_t(t):>12} {ob / t / 1e6:9.0f} {ob / 1e6:7.2f}")

    # prefetch: batches prepared on a Rust thread
    it = store.prefetch("windows", depth=4, batch=1024, window_len=K, context_len=H, return_scale=SCALE, seed=0)
    next(it)
    t0 = time.perf_counter()
    nb = 50
    for _ in range(nb):
        next(it)
    it.close()
    print(f"{'prefetch windows + context':<28} {1024:>5} {'metadt':<14} {fmt_t((time.perf_counter() - t0) / nb):>12}"
          "  (per batch as consumed)")

    # save / load
    tmp = tempfile.mkdtemp(prefix="metadt-bench-")
    try:
        path = os.path.join(tmp, "store")
        t0 = time.perf_counter()
        store.save(path)
        t_save = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)
        gb = size / 1e9
        print()
        print(f"save: {t_save:.2f} s for {size / 1e6:.0f} MB ({size / 1e6 / t_save:.0f} MB/s)")
        loaded = []
        for label, kw in [("load mmap=True", dict(mmap=True)),
                          ("load mmap=True verify=True", dict(mmap=True, verify=True)),
                          ("load mmap=False (verifies)", dict(mmap=False))]:
            t0 = time.perf_counter()
            s2 = TrajectoryStore.load(path, **kw)
            dt = time.perf_counter() - t0
            loaded.append(s2)
            print(f"{label:<28}: {dt * 1e3:8.1f} ms  ({dt / gb:.3f} s/GB)")
        s2 = loaded[0]
        t0 = time.perf_counter()
        s2.sample_windows(1024, window_len=K, context_len=H, seed=1)
        print(f"first batch from the mmap-loaded store: {(time.perf_counter() - t0) * 1e3:.2f} ms; "
              f"held memory {s2.memory_bytes() / 2**20:.2f} MiB, mapped {s2.mapped_bytes() / 2**20:.0f} MiB")
        del loaded, s2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
