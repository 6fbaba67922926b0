import sys, glob, torch, numpy as np
from metadt.collect.collector import _load_policy
for path in sys.argv[1:]:
    pol = _load_policy(__import__("pathlib").Path(path), torch.device("cpu"))
    n = pol.num_agents if hasattr(pol, "num_agents") else None
    g = torch.Generator().manual_seed(0)
    obs = torch.zeros((pol.action_high.shape[0] if pol.action_high.dim() > 1 else 50, 2000, 2))
    try:
        a = pol.act(obs, deterministic=False, generator=g)
    except Exception as e:
        print("err", e); raise
    a = a.numpy()
    print(path.split("/")[-1], a.shape, "median per-task first-action std", float(np.median(a.std(1).mean(-1))))
