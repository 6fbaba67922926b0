import sys, numpy as np, torch
torch.set_num_threads(1)
from metadt.data.dataset import Dataset
from metadt.train.run import load_world_model
from metadt.evaluate.world_model_report import fit_probe
from metadt.evaluate.rollout import random_rollout
from metadt.evaluate.probe import probe_score
from metadt.evaluate.evaluator import add_unseen_tasks, targets_from_card
from metadt.config.evaluate import EvaluateConfig
ds = Dataset.open(sys.argv[1]); wm = load_world_model(sys.argv[2])
wm = wm[0] if isinstance(wm, tuple) else wm
cfg = EvaluateConfig(eval_tasks=25, num_train_tasks=0)
tg = targets_from_card(ds.card, "medium", cfg)
fam, tg = add_unseen_tasks(ds.family, ds.card, "medium", cfg, tg)
ids = np.repeat(tg.ids, 3)
rnd = random_rollout(fam, ids, seed=7)
for q in sys.argv[3:]:
    w = fit_probe(wm, ds, q)
    print(q, "random-action contexts (5 test + 25 unseen):", probe_score(w, rnd, wm, fam))
