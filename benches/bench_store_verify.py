"""Cost of the checksum/content policy: `TrajectoryStore.load()` vs `load(verify=True)`.

For each store it times (median of --repeats):

- ``load()``                  memory-mapped, structure checks only (the default);
- ``load(verify=True)``       memory-mapped + CRC-32 of every file, finite values, rtg/returns vs rewards;
- ``load(mmap=False)``        read into memory (verify defaults to True there);

each from the page cache ("warm") and after dropping this store's own pages
from the cache with posix_fadvise(DONTNEED) ("cold": read from the disk; no
other file's cache is touched).

    python benches/bench_store_verify.py --dataset data/point-robot-cpu     # every quality of a dataset
    python benches/bench_store_verify.py --synth                                 # 900k steps, obs 20, act 6
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from metadt import TrajectoryStore


def drop_cache(d: Path) -> None:
    for p in d.rglob("*.npy"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def size_of(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def time_load(d: Path, repeats: int, cold: bool, **kw) -> float:
    ts = []
    for _ in range(repeats):
        if cold:
            drop_cache(d)
        t0 = time.perf_counter()
        s = TrajectoryStore.load(d, **kw)
        ts.append(time.perf_counter() - t0)
        del s
    return statistics.median(ts)


def synth(path: Path, episodes: int = 4500, T: int = 200, od: int = 20, ad: int = 6) -> Path:
    rng = np.random.default_rng(0)
    s = TrajectoryStore(od, ad)
    for i in range(episodes):
        s.add_episode(rng.normal(size=(T, od)).astype(np.float32), rng.uniform(-1, 1, (T, ad)).astype(np.float32),
                      rng.normal(size=T).astype(np.float32), task=i % 45)
    s.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", default=[], help="a dataset directory (every quality) or a store")
    ap.add_argument("--synth", action="store_true", help="also a synthetic 900k-step store (45 x 100 x 200)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    stores: list[tuple[str, Path]] = []
    for d in map(Path, args.dataset):
        if (d / "manifest.json").exists():
            stores.append((d.name, d))
        else:
            stores += [(f"{d.name}/{q.name}", q) for q in sorted(d.iterdir()) if (q / "manifest.json").exists()]
    tmp = None
    if args.synth:
        tmp = Path(tempfile.mkdtemp())
        t0 = time.perf_counter()
        stores.append(("synthetic 900k steps", synth(tmp / "s900k")))
        print(f"built the synthetic store in {time.perf_counter() - t0:.1f} s")
    rows = []
    print(f"{'store':34s} {'steps':>9s} {'MB':>7s} | {'cache':5s} {'load()':>9s} {'verify=True':>12s} "
          f"{'mmap=False':>11s}")
    try:
        for name, d in stores:
            n = TrajectoryStore.load(d).num_steps
            mb = size_of(d) / 1e6
            for cold in (False, True):
                r = dict(store=name, steps=n, mb=round(mb, 2), cache="cold" if cold else "warm",
                         load_s=time_load(d, args.repeats, cold),
                         verify_s=time_load(d, args.repeats, cold, verify=True),
                         full_s=time_load(d, args.repeats, cold, mmap=False))
                rows.append(r)
                print(f"{name:34s} {n:9d} {mb:7.1f} | {r['cache']:5s} {r['load_s'] * 1e3:7.2f}ms "
                      f"{r['verify_s'] * 1e3:10.2f}ms {r['full_s'] * 1e3:9.2f}ms   "
                      f"(verify: {r['verify_s'] / (mb / 1e3):.3f} s/GB)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
