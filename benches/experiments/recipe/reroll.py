"""Re-run the rollout phase of a finished cpu point-robot collection with rollout_noise
(the SAC phase does not depend on it, so the checkpoints are the ones a fresh
`metadt collect --preset cpu --set rollout_noise=X` trains from the same seed)."""
import json, shutil, sys
from pathlib import Path
import numpy as np
from metadt.collect.collector import (WorkDir, build_family, evaluate, choose_medium, rollouts,
                                      _write, _Timer)
from metadt.config.collect import CollectConfig
from metadt.collect.sac import resolve_device
from metadt.fileio import atomic_write_json

src, out, noise = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
cfg = CollectConfig.for_family("point-robot", "cpu").replace(rollout_noise=noise).validate()
out.mkdir(parents=True)
shutil.copytree(src / ".work", out / ".work")
for q in ("expert", "medium"):
    for p in (out / ".work" / "rollouts").glob(f"{q}*"):
        p.unlink()
family = build_family(cfg)
work = WorkDir(out)
atomic_write_json(work.config, {"config": cfg.to_dict(), "seed": 0, "family": family.to_json()})
dev = resolve_device("cpu")
evals, rr = evaluate(cfg, family, work, 0, dev, None)
final = cfg.steps_per_task
med, mid = choose_medium(evals, rr, final)
chosen = {"expert": np.full(family.num_tasks, final, dtype=np.int64), "medium": med}
eps = rollouts(cfg, family, work, 0, dev, chosen, None)
_write(cfg, out, 0, family, work, dev, _Timer(work), {}, evals, rr, chosen, mid, eps, None)
print("done", out)
