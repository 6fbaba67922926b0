"""Time Meta-DT training steps with z precomputed as a column vs on the fly.

    python benches/bench_train.py --data DATASET --world-model WM [--preset cpu] [--steps 200]

Prints, per z source: the one-off column-attach time and steps/s of the
training step (sample + z + forward + backward + optimizer). Figures, not
assertions.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--world-model", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--method", default="meta-dt")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from metadt.config.meta_dt import MetaDTConfig
    from metadt.data.dataset import Dataset
    from metadt.train.meta_dt import train_meta_dt

    family = Dataset.open(args.data).card.family
    results: dict[str, list[dict]] = {"column": [], "on_the_fly": []}
    for _ in range(args.repeats):
        for source in results:  # interleaved, so load drift hits both alike
            cfg = MetaDTConfig.for_family(family, args.preset, args.method).replace(
                z_source=source, num_steps=args.steps, warm_train=args.steps // 2,
                log_every=args.steps, checkpoint_every=args.steps)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                s = train_meta_dt(args.data, cfg, tmp, args.world_model, progress=False)
                total = time.perf_counter() - t0
            results[source].append({"z_column_s": round(s["time_z_column_s"], 3),
                                    "steps_per_s": round(s["steps_per_s"], 2),
                                    "total_s": round(total, 2)})
    print(json.dumps(results, indent=2))
    for source, rs in results.items():
        best = max(r["steps_per_s"] for r in rs)
        print(f"{source:>11}: best {best:.1f} steps/s, column attach "
              f"{min(r['z_column_s'] for r in rs):.2f} s")


if __name__ == "__main__":
    main()
