"""Compare two `metadt run` outputs of the same seed made by two versions of metadt:
the datasets (byte equality of every store array), the trained models' weights and
loss lines, and every number of each evaluation (issue 16 item 5; README.md here).

    python compare.py RUN_A DATA_A RUN_B DATA_B [--methods meta-dt,dt]
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("run_a", type=Path)
ap.add_argument("data_a", type=Path)
ap.add_argument("run_b", type=Path)
ap.add_argument("data_b", type=Path)
ap.add_argument("--methods", default="meta-dt,dt")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
A, DA, B, DB = args.run_a, args.data_a, args.run_b, args.data_b

def store_arrays(d):
    out = {}
    for q in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(q.rglob("*")):
            if f.is_file() and f.suffix == ".npy":
                out[f"{q.name}/{f.relative_to(q)}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out

sa, sb = store_arrays(DA), store_arrays(DB)
same = [k for k in sa if sb.get(k) == sa[k]]
print(f"data: {len(same)}/{len(sa)} store files byte-identical; differing: {[k for k in sa if sb.get(k) != sa[k]][:8]}")
ca, cb = json.loads((DA/"card.json").read_text()), json.loads((DB/"card.json").read_text())
print("card random_returns equal:", ca["random_returns"] == cb["random_returns"])

def weights(p):
    return load_file(str(p))

for sub in ["world-model", *args.methods.split(",")]:
    pa, pb = A/f"seed-{args.seed}"/sub/"model.safetensors", B/f"seed-{args.seed}"/sub/"model.safetensors"
    if not (pa.exists() and pb.exists()):
        print(sub, "missing"); continue
    wa, wb = weights(pa), weights(pb)
    keys = sorted(wa)
    eq = all(k in wb and np.array_equal(wa[k], wb[k]) for k in keys)
    mx = max(float(np.max(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64)))) for k in keys if k in wb)
    print(f"{sub}: weights identical={eq} (tensors {len(keys)} vs {len(wb)}), max |diff| {mx:.3g}")
    la = [json.loads(l) for l in (A/f"seed-{args.seed}"/sub/"metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (B/f"seed-{args.seed}"/sub/"metrics.jsonl").read_text().splitlines()]
    ka = [{k: v for k, v in r.items() if "loss" in k} for r in la]
    kb = [{k: v for k, v in r.items() if "loss" in k} for r in lb]
    print(f"   losses logged: {len(ka)} vs {len(kb)}; identical: {ka == kb}")
    ea, eb = A/f"seed-{args.seed}"/sub/"eval.json", B/f"seed-{args.seed}"/sub/"eval.json"
    if ea.exists() and eb.exists():
        ja, jb = json.loads(ea.read_text()), json.loads(eb.read_text())
        def rets(j):
            out = {}
            def walk(x, path):
                if isinstance(x, dict):
                    for k, v in x.items():
                        if k in ("provenance", "created", "config", "seconds", "time"): continue
                        walk(v, path + (k,))
                elif isinstance(x, list):
                    for i, v in enumerate(x): walk(v, path + (i,))
                elif isinstance(x, (int, float)) and not isinstance(x, bool):
                    out[path] = float(x)
            walk(j, ()); return out
        ra, rb = rets(ja), rets(jb)
        common = [k for k in ra if k in rb]
        diff = [k for k in common if ra[k] != rb[k]]
        rel = [abs(ra[k]-rb[k]) / max(abs(ra[k]), 1e-12) for k in diff]
        print(f"   eval floats: {len(common)} common ({len(ra)} vs {len(rb)}), differing {len(diff)}, max rel diff {max(rel) if rel else 0:.3g}")
        for k in diff[:6]: print("     ", "/".join(map(str, k)), ra[k], rb[k])
