"""`metadt collect`: train SAC agents per task and write the offline datasets."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from metadt.cli._common import add_common_flags, flag_overrides, remove_output

ORDER = 20

HELP = ("train SAC (one agent per task, batched, or one task-conditioned agent) and write "
        "expert/medium/mixed/random datasets")

DESCRIPTION = """\
Train one Soft Actor-Critic agent per task of a family -- all tasks at once, as
one batched ensemble (CUDA when present, CPU otherwise) -- save policy
checkpoints, and write the offline datasets of protocol section 2 to --out.
With --set sac_mode=task-conditioned (the cpu preset of the MuJoCo families and
Meta-World) ONE agent, whose input is the observation and the task parameter,
learns every task at once: one agent's compute instead of one per task; the
stored observations are the env's only (docs/collect.md):

  OUT/card.json   the dataset card (tasks, split, SAC config and budget, the
                  checkpoint chosen per task and quality, returns, random returns)
  OUT/expert      TrajectoryStore: the final checkpoint's stochastic policy
  OUT/medium      TrajectoryStore: per task, the checkpoint whose evaluation
                  return is closest to the midpoint of random and final returns
  OUT/mixed       TrajectoryStore: 70% medium + 30% expert episodes per task
  OUT/random      TrajectoryStore: a uniform-random policy (behaviour-free data)
  OUT/.work       checkpoints, evaluations and resume state

Interrupting is safe: every file is written atomically, and running the same
command again resumes where it stopped (finished work is not redone). A
finished OUT is left untouched.
"""

EPILOG = """\
presets:
  paper  the protocol's budgets (point-robot 2k env steps per task, MuJoCo 500k,
         Meta-World 50k), all tasks -- for a GPU
  cpu    a 2-core CPU: point-robot all 50 tasks in minutes (per-task agents);
         MuJoCo all 50 tasks (cheetah-dir 2) and Meta-World all 20 with one
         task-conditioned agent (cheetah-vel: ~34 min estimated)
  smoke  seconds, for tests

examples:
  metadt collect --family point-robot --preset cpu --out data/point-robot
  metadt collect --family cheetah-vel --preset cpu --out data/cheetah-vel \\
      --set steps_per_task=20000 --set sac.lr=1e-3
  metadt collect --family point-robot --preset cpu --out d --print-config
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("collect", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, help="task family (see `metadt envs`)")
    p.add_argument("--preset", default="cpu", choices=("paper", "cpu", "smoke"),
                   help="budget preset (default: cpu)")
    p.add_argument("--out", required=True, help="dataset directory to create (or resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. steps_per_task=5000, sac.lr=1e-3, "
                        "device=cpu (repeatable; see --print-config for the fields)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON and exit")
    p.add_argument("--quiet", dest="no_progress", action="store_true",
                   help="same as --no-progress")
    add_common_flags(p, seed_help="seed of the agents, rollouts and evaluation (default: 0); "
                                  "the tasks come from the config field family_seed",
                     overwrite_help="start over: delete the dataset (or the unfinished "
                                    "collection) in --out first")
    p.set_defaults(func=run)


class _Bars:
    """tqdm bars for the collector's progress events."""

    def __init__(self, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.tqdm = tqdm
        self.disable = disable
        self.bars: dict[str, Any] = {}

    def _bar(self, key: str, total: int, desc: str, unit: str):
        bar = self.bars.get(key)
        if bar is None:
            bar = self.tqdm(total=total, desc=desc, unit=unit, disable=self.disable,
                            dynamic_ncols=True, leave=True)
            self.bars[key] = bar
        return bar

    def __call__(self, ev: dict[str, Any]) -> None:
        phase = ev.get("phase")
        if phase == "train":
            label = (f"SAC x{ev['tasks']} tasks" if ev.get("agents", ev["tasks"]) != 1
                     else f"1 task-conditioned SAC, {ev['tasks']} tasks")
            bar = self._bar("train", ev["total"], label, "step")
            bar.n = ev["step"]
            post = {"updates": ev.get("updates", 0)}
            if ev.get("recent_return") is not None:
                post["return"] = f"{ev['recent_return']:.3g}"
            if "q1_loss" in ev:
                post["q_loss"] = f"{ev['q1_loss']:.3g}"
            bar.set_postfix(post, refresh=False)
            bar.refresh()
        elif phase == "evaluate":
            bar = self._bar("evaluate", ev["total"], "evaluate checkpoints", "ckpt")
            bar.n = ev["done"]
            if "mean_return" in ev:
                bar.set_postfix({"last": ev.get("what"), "return": f"{ev['mean_return']:.3g}"},
                                refresh=False)
            bar.refresh()
        elif phase == "rollout":
            q = ev["quality"]
            bar = self._bar(f"rollout-{q}", ev["total"], f"rollout {q}", "ep")
            bar.n = ev["episodes"]
            bar.refresh()
        elif phase in ("write", "done"):
            self.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def run(args: argparse.Namespace) -> int:
    import json

    from metadt.config.collect import CollectConfig

    overrides = flag_overrides(args, CollectConfig, skip=("seed",)) + list(args.overrides)
    cfg = CollectConfig.for_family(args.family, args.preset).with_overrides(overrides)
    cfg.validate()
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    seed = 0 if args.seed is None else args.seed
    from metadt.collect.collector import collect
    from metadt.cli.info import format_card
    from metadt.distributed import is_main

    main = is_main()  # under torchrun: rank 0 alone shows progress and prints
    if args.overwrite and main:
        remove_output(args.out, ("card.json", ".work"), "dataset")
    bars = _Bars(disable=args.no_progress or not main)
    t0 = time.perf_counter()
    try:
        ds = collect(cfg, args.out, seed=seed, progress=bars)
    finally:
        bars.close()
    took = time.perf_counter() - t0
    if not main:
        return 0
    print(format_card(ds), file=sys.stdout)
    print(f"\nwrote {args.out} in {took:.1f}s", file=sys.stderr)
    return 0
