"""Environment steps per second for every task family: single env vs vectorized.

    python benches/bench_envs.py                       # all families, 8 tasks per vector env
    python benches/bench_envs.py --families point-robot cheetah-vel --num-envs 45 --seconds 2

Columns: one env (`make_env`), the vectorized forms across tasks
(`make_vector_env`: "sync" = one process looping over the envs, "async" =
gymnasium AsyncVectorEnv, one worker process per task; point-robot's default
is the pure-NumPy vector env), all in env steps per second (a vector step of
N envs counts N). Episodes are reset at the horizon and resets are timed
too. Random actions. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from metadt.envs import FAMILIES, make_family


def _single(fam, seconds: float) -> float:
    env = fam.make_env(fam.tasks[0])
    rng = np.random.default_rng(0)
    acts = rng.uniform(fam.action_low, fam.action_high, size=(fam.horizon, fam.act_dim))
    env.reset(seed=0)
    steps, t, start = 0, 0, time.perf_counter()
    while True:
        _, _, _, trunc, _ = env.step(acts[t])
        steps += 1
        t += 1
        if trunc:
            env.reset()
            t = 0
            if time.perf_counter() - start > seconds:
                break
        elif steps % 256 == 0 and time.perf_counter() - start > 4 * seconds:
            break
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def _vector(fam, n: int, backend: str | None, seconds: float) -> float:
    tasks = [fam.tasks[i % fam.num_tasks] for i in range(n)]
    venv = fam.make_vector_env(tasks, seed=0, backend=backend)
    rng = np.random.default_rng(0)
    acts = rng.uniform(fam.action_low, fam.action_high, size=(fam.horizon, n, fam.act_dim))
    venv.reset(seed=0)
    steps, t, start = 0, 0, time.perf_counter()
    while True:
        _, _, _, trunc, _ = venv.step(acts[t])
        steps += n
        t += 1
        if trunc.all():
            venv.reset()
            t = 0
            if time.perf_counter() - start > seconds:
                break
        elif t % 16 == 0 and time.perf_counter() - start > 4 * seconds:
            break
    elapsed = time.perf_counter() - start
    venv.close()
    return steps / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=list(FAMILIES), metavar="NAME")
    p.add_argument("--num-envs", type=int, default=8, help="tasks per vector env (default 8)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum time per figure")
    p.add_argument("--no-async", action="store_true", help="skip the async backend")
    args = p.parse_args(argv)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load {load[0]:.2f}; {args.num_envs} tasks per vector env; env steps/s")
    head = ["family", "single", f"sync x{args.num_envs}"]
    if not args.no_async:
        head.append(f"async x{args.num_envs}")
    head.append(f"default x{args.num_envs}")
    rows = []
    for name in args.families:
        fam = make_family(name, seed=0)
        row = [name, f"{_single(fam, args.seconds):,.0f}",
               f"{_vector(fam, args.num_envs, 'sync', args.seconds):,.0f}"]
        if not args.no_async:
            row.append(f"{_vector(fam, args.num_envs, 'async', args.seconds):,.0f}")
        default = "numpy" if name == "point-robot" else fam.vector_backend
        row.append(f"{_vector(fam, args.num_envs, None, args.seconds):,.0f} ({default})")
        rows.append(row)
        print("  ".join(rows[-1]), flush=True)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                for i, (c, w) in enumerate(zip(r, widths))) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
