"""Cost of one task-conditioned SAC collection step (``sac_mode=task-conditioned``).

Steps all tasks of a family together with the one conditioned agent acting
(what a training loop step does: one policy forward, one vector-env step, one
replay ``add`` per task), then times pooled updates at the preset's batch size.
Prints milliseconds per loop step (acting / env / replay) and per update
(sampling / update): the rates of the budget arithmetic in docs/collect.md.

    python benches/bench_conditioned.py                          # cheetah-vel, 50 tasks
    python benches/bench_conditioned.py --family ant-dir --steps 200 --updates 100
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metadt.collect.collector import task_conditioning
from metadt.collect.replay import Replay
from metadt.collect.sac import TaskConditionedSAC
from metadt.config.collect import CollectConfig
from metadt.envs import make_family


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="cheetah-vel")
    ap.add_argument("--tasks", type=int, default=None, help="default: the family's")
    ap.add_argument("--steps", type=int, default=400, help="loop steps (all tasks each)")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = make_family(args.family, seed=0, num_tasks=args.tasks)
    cfg = CollectConfig.for_family(args.family, "cpu")
    features, mean, scale = task_conditioning(fam)
    agent = TaskConditionedSAC(features, mean, scale, fam.obs_dim, fam.act_dim, fam.action_low,
                               fam.action_high, cfg.sac, device="cpu", seed=0)
    replay = Replay(fam.num_tasks, fam.obs_dim, fam.act_dim, None, "shared")
    env = fam.make_vector_env()
    gen = torch.Generator().manual_seed(0)
    obs, _ = env.reset(seed=0)
    t_act = t_env = t_add = 0.0
    for t in range(args.steps):
        end = (t + 1) % fam.horizon == 0
        t0 = time.perf_counter()
        a = agent.act(torch.as_tensor(obs, dtype=torch.float32), generator=gen).numpy()
        t1 = time.perf_counter()
        nobs, rew, term, _, _ = env.step(a.astype(np.float64))
        t2 = time.perf_counter()
        replay.add(obs, a, rew, nobs, term, end)
        t3 = time.perf_counter()
        obs = env.reset(seed=t)[0] if end else nobs
        t_act, t_env, t_add = t_act + t1 - t0, t_env + t2 - t1, t_add + t3 - t2
    env.close()
    n = fam.num_tasks
    print(f"{args.family}, {n} tasks, {args.threads} thread(s); per loop step: "
          f"act {1e3 * t_act / args.steps:.2f} ms, env {1e3 * t_env / args.steps:.2f} ms "
          f"({n * args.steps / t_env:,.0f} env steps/s), replay add "
          f"{1e3 * t_add / args.steps:.2f} ms")
    t_s = t_u = 0.0
    for u in range(args.updates):
        t0 = time.perf_counter()
        batch = replay.sample_pooled(cfg.sac.batch_size, 1, u, torch.device("cpu"))
        t1 = time.perf_counter()
        agent.update(batch, generator=gen)
        t2 = time.perf_counter()
        t_s, t_u = t_s + t1 - t0, t_u + t2 - t1
    print(f"per update (batch {cfg.sac.batch_size}, hidden {cfg.sac.hidden_dim}): sample "
          f"{1e3 * t_s / args.updates:.2f} ms, update {1e3 * t_u / args.updates:.2f} ms")


if __name__ == "__main__":
    main()
