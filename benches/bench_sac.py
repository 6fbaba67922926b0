"""SAC updates per second: one batched ensemble vs the same agents one after the other.

For N tasks, "batched" is one `SACEnsemble` of N agents (one batched
forward/backward per update); "sequential" is N single-agent ensembles
updated in turn. Each agent update uses its own batch (256 by default)
sampled from the replay memory (`TrajectoryStore`, online mode), so the
figures include sampling. Prints agent-updates per second (N x rounds/s).

    python benches/bench_sac.py                      # 1, 10, 50 tasks
    python benches/bench_sac.py --tasks 1 10 --seconds 2 --threads 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metadt.collect.replay import LAYOUTS, Replay
from metadt.collect.sac import SACEnsemble
from metadt.config.collect import SACConfig


def filled_replay(n: int, obs_dim: int, act_dim: int, steps: int, layout: str) -> Replay:
    rng = np.random.default_rng(0)
    replay = Replay(n, obs_dim, act_dim, None, layout)
    obs = rng.uniform(-1, 1, (n, obs_dim))
    for t in range(steps):
        act = rng.uniform(-1, 1, (n, act_dim))
        nxt = obs + 0.1 * act[:, :obs_dim] if act_dim >= obs_dim else obs
        replay.add(obs, act, -np.abs(nxt).sum(1), nxt, np.zeros(n, bool), (t + 1) % 20 == 0)
        obs = nxt
    return replay


def timed(fn, seconds: float) -> float:
    """Calls per second of `fn` over about `seconds` (after one warm-up call)."""
    fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return calls / dt


def bench(n: int, args: argparse.Namespace) -> dict[str, float]:
    cfg = SACConfig(hidden_dim=args.hidden, batch_size=args.batch)
    device = torch.device(args.device)
    od, ad = args.obs_dim, args.act_dim
    low, high = -np.ones(ad), np.ones(ad)
    replay = filled_replay(n, od, ad, args.fill, args.layout)
    counter = {"u": 0}

    ens = SACEnsemble(n, od, ad, low, high, cfg, device=device, seed=0)

    def batched():
        batch = replay.sample(cfg.batch_size, 0, counter["u"], device)
        counter["u"] += 1
        ens.update(batch)

    singles = [SACEnsemble(1, od, ad, low, high, cfg, device=device, seed=i) for i in range(n)]

    def sequential():
        batch = replay.sample(cfg.batch_size, 0, counter["u"], device)
        counter["u"] += 1
        for i, agent in enumerate(singles):
            agent.update({k: v[i:i + 1] for k, v in batch.items()})

    def sample_only():
        replay.sample(cfg.batch_size, 0, counter["u"], device)
        counter["u"] += 1

    rb = timed(batched, args.seconds)
    rs = timed(sequential, args.seconds)
    rsample = timed(sample_only, min(args.seconds, 1.0))
    return {"batched": rb * n, "sequential": rs * n, "speedup": rb / rs,
            "sample_ms": 1000.0 / rsample}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--obs-dim", type=int, default=2, help="2 = point-robot, 20 = cheetah")
    p.add_argument("--act-dim", type=int, default=2)
    p.add_argument("--fill", type=int, default=1000, help="replay steps per task")
    p.add_argument("--layout", choices=LAYOUTS, default="per-task")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"hidden {args.hidden}, obs {args.obs_dim}, act {args.act_dim}, replay {args.layout}")
    print(f"{'tasks':>5} {'batched upd/s':>14} {'sequential upd/s':>17} {'speedup':>8} "
          f"{'sampling ms':>12}")
    for n in args.tasks:
        r = bench(n, args)
        print(f"{n:5d} {r['batched']:14.1f} {r['sequential']:17.1f} {r['speedup']:7.2f}x "
              f"{r['sample_ms']:12.2f}", flush=True)
    print("(upd/s = agent updates per second: tasks x update rounds per second)")


if __name__ == "__main__":
    main()
