"""Old-vs-new effect of one recipe change: the same rows of two run groups (seed 0), mean
and IQM of the normalized score over the 30 tasks unseen in training, P(new > old)."""
import sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from metadt.report.build import find_eval_files, load_results
from metadt.evaluate.metrics import task_rows, label
from metadt.report import stats

new_dir, old_dir = sys.argv[1], sys.argv[2]
keys = [tuple(k.split(":")) for k in sys.argv[3:]]
rn = task_rows(load_results(find_eval_files(new_dir)))
ro = task_rows(load_results(find_eval_files(old_dir)))
for r in ro:
    r["method"] = r["method"] + "@old"
rows = rn + ro
sp = ["test", "unseen"]
for m, s in keys:
    a, _, ta = stats.score_matrix(rows, m, s, sp)
    b, _, tb = stats.score_matrix(rows, m + "@old", s, sp)
    if a.size == 0 or b.size == 0:
        print(f"{label(m, s)}: missing"); continue
    iv = {e["method"]: e for e in stats.interval_estimates(rows, [(m, s), (m + "@old", s)], sp, reps=2000)}
    p = stats.improvement(rows, (m, s), (m + "@old", s), sp, reps=2000)
    t5 = [r["normalized"] for r in rn if (r["method"], r["setting"]) == (m, s) and r["split"] == "test"]
    o5 = [r["normalized"] for r in ro if (r["method"], r["setting"]) == (m + "@old", s) and r["split"] == "test"]
    rawn = np.mean([r["return"] for r in rn if (r["method"], r["setting"]) == (m, s) and r["split"] in sp])
    rawo = np.mean([r["return"] for r in ro if (r["method"], r["setting"]) == (m + "@old", s) and r["split"] in sp])
    print(f"| {label(m, s)} | raw {rawn:.2f} vs {rawo:.2f} | {iv[m]['mean']:.2f} [{iv[m]['mean_ci'][0]:.2f}, {iv[m]['mean_ci'][1]:.2f}] "
          f"| {iv[m+'@old']['mean']:.2f} [{iv[m+'@old']['mean_ci'][0]:.2f}, {iv[m+'@old']['mean_ci'][1]:.2f}] "
          f"| {iv[m]['iqm']:.2f} vs {iv[m+'@old']['iqm']:.2f} | {p['probability']:.2f} | {np.mean(t5):.2f} vs {np.mean(o5):.2f} | {p['tasks']} |")
