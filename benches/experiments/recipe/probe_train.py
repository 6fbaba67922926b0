"""Selection evidence on TRAINING tasks only: the report's probe (fit on the training tasks'
mixed contexts) scored on uniformly-random-action contexts of the 45 training tasks."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from metadt.data.dataset import Dataset
from metadt.train.run import load_world_model
from metadt.evaluate.world_model_report import fit_probe
from metadt.evaluate.rollout import random_rollout
from metadt.evaluate.probe import probe_score
ds = Dataset.open(sys.argv[1])
rnd = random_rollout(ds.family, np.repeat(ds.card.train_ids, 3), seed=11)
for p in sys.argv[2:]:
    wm = load_world_model(p)
    print(p, "train tasks, random actions:", round(probe_score(fit_probe(wm, ds, "mixed"), rnd, wm, ds.family)["r2"], 3))
