"""Run under ``torchrun --nproc_per_node 2`` by tests/test_distributed.py (not a test module).

``python distributed_worker.py train DATA WM OUT``: with 2 ranks (gloo on CPU)

1. builds the Meta-DT trainer data-parallel, checks the ranks draw different
   batches and hold bit-identical weights after every step, and writes (rank 0)
   the initial weights, both ranks' first batches and the weights after the
   first update to ``OUT/first`` (the test repeats that update in one process);
2. runs ``train_meta_dt`` for 4 of 6 steps into ``OUT/run`` (the test resumes it on
   one rank);
3. checks world-model steps the same way and trains a world model into ``OUT/wm``.

Every check failure raises (non-zero exit).
"""
from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from metadt import distributed as dist
from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.seeding import seed_everything
from metadt.train.meta_dt import build_trainer, prepare, train_meta_dt, train_step
from metadt.train.common import open_dataset
from metadt.train.world_model import build_world_model_trainer, train_world_model, world_model_step

B = 4  # per-rank batch; the config's (global) batch is 2 * B


def meta_cfg(**kw) -> MetaDTConfig:
    base = dict(quality="medium", batch_size=2 * B, dropout=0.0, prompt_dropout=0.0,
                warm_train=0, num_threads=1, column_batch_size=64)
    return MetaDTConfig.for_family("point-robot", "smoke", "meta-dt").replace(**{**base, **kw})


def _digest(batch: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(batch):
        h.update(np.ascontiguousarray(np.asarray(batch[k])).tobytes())
    return h.hexdigest()


def check_steps(ctx: dist.DistContext, data: str, wm: str, out: Path) -> None:
    cfg = meta_cfg()
    dev = ctx.device("cpu")
    ds, store, cfg, wmod, _ = prepare(data, cfg, wm, dev, ctx)
    cols = {c: np.asarray(store.column(c)).copy() for c in (cfg.z_column, cfg.prompt_score_column)}
    seed_everything(cfg.seed)
    tr = build_trainer(ds, store, cfg, wmod, dev, ctx)
    init = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    assert dist.ranks_equal(list(init.values()), ctx), "initial weights differ across ranks"
    raw0 = tr.sample(0)
    assert len(raw0["obs"]) == B
    digests = dist.all_gather_object([_digest(tr.sample(i)) for i in range(4)], ctx)
    assert all(digests[0][i] != digests[1][i] for i in range(4)), "ranks drew the same batch"
    tr.model.train()
    for i in range(4):
        loss, gnorm = train_step(tr, i)
        assert np.isfinite(loss) and np.isfinite(gnorm)
        assert dist.ranks_equal([p.detach() for p in tr.model.parameters()], ctx), \
            f"weights differ across ranks after step {i}"
        if i == 0:
            after = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    batches = dist.all_gather_object({k: np.asarray(v).copy() for k, v in raw0.items()}, ctx)
    if ctx.is_main():
        (out / "first").mkdir(parents=True, exist_ok=True)
        torch.save({"init": init, "after": after, "batches": batches, "cfg": cfg.to_dict(),
                    "columns": cols},
                   out / "first" / "first.pt")


def check_world_model_steps(ctx: dist.DistContext, data: str) -> None:
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", batch_size=16, num_threads=1)
    ds = open_dataset(data, cfg.family, cfg.quality)
    seed_everything(cfg.seed)
    tr = build_world_model_trainer(ds, ds.store(cfg.quality, mmap=True), cfg,
                                   torch.device("cpu"), ctx=ctx)
    assert len(tr.sample(0)["obs"]) == 8
    digests = dist.all_gather_object(_digest(tr.sample(0)), ctx)
    assert digests[0] != digests[1], "ranks drew the same world-model batch"
    tr.model.train()
    for i in range(3):
        world_model_step(tr, i)
        assert dist.ranks_equal([p.detach() for p in tr.model.parameters()], ctx), \
            f"world-model weights differ across ranks after step {i}"


def main() -> None:
    what, data, wm, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    ctx = dist.init()
    assert ctx.world == 2 and ctx.backend == "gloo", ctx
    assert what == "train"
    check_steps(ctx, data, wm, out)
    check_world_model_steps(ctx, data)
    cfg = meta_cfg(num_steps=6, checkpoint_every=2, log_every=2, dropout=0.1)
    s = train_meta_dt(data, cfg, out / "run", wm, progress=False, stop_after=4)
    assert s["steps_done"] == 4
    wcfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=6, batch_size=16, log_every=2, checkpoint_every=3,
        num_threads=1)
    train_world_model(data, wcfg, out / "wm", progress=False)
    if ctx.is_main():
        (out / "ok.json").write_text(json.dumps({"world": ctx.world}))
    gc.collect()  # free the DDP wrappers (their reducers) before the process group
    dist.barrier()
    dist.shutdown()


if __name__ == "__main__":
    main()
