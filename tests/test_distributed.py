"""Data-parallel training and collection with torchrun (2 processes, gloo on CPU).

The multi-rank parts run in ``torchrun --nproc_per_node 2`` subprocesses
(tests/distributed_worker.py); their results are checked here, in one process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metadt import distributed as dist
from metadt import tensorfile
from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.seeding import seed_everything
from metadt.train.checkpoint import batch_seed
from metadt.train.meta_dt import build_trainer, prepare, train_meta_dt, train_step
from metadt.train.world_model import train_world_model

from test_train_support import make_point_dataset

HERE = Path(__file__).resolve().parent
GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9), (0.1, -0.9)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone``-like launch of ``args`` on this machine (CPU, gloo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


# ------------------------------------------------------------------ pure helpers
def test_single_process_is_world_one(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = dist.init()
    assert (ctx.rank, ctx.world, ctx.distributed, ctx.is_main()) == (0, 1, False, True)
    assert dist.is_main() and dist.world_size() == 1
    dist.barrier()  # no-op


def test_seeds_batches_shards():
    # one rank: exactly the single-process seeds; W ranks: iW + r
    assert all(dist.rank_batch_seed(7, i) == batch_seed(7, i) for i in range(5))
    assert dist.rank_batch_seed(7, 3, 1, 2) == batch_seed(7, 7)
    seeds = {dist.rank_batch_seed(7, i, r, 4) for i in range(10) for r in range(4)}
    assert len(seeds) == 40
    assert dist.per_rank_batch(128, 4) == 32
    with pytest.raises(ValueError, match="divisible"):
        dist.per_rank_batch(10, 4)
    for n, w in ((50, 2), (7, 3), (2, 4)):
        parts = [dist.shard(n, r, w) for r in range(w)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(dist.BACKEND_ENV, raising=False)
    assert dist.choose_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
    monkeypatch.setenv(dist.BACKEND_ENV, "gloo")
    assert dist.choose_backend() == "gloo"


# ------------------------------------------------------------------ training on 2 ranks
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Dataset + world model (1 process), then the 2-rank worker."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "pr"
    make_point_dataset(data, GOALS, num_train=3, episodes=6,
                       qualities={"expert": 0.01, "medium": 0.06}, seed=1)
    wcfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=20, log_every=10, checkpoint_every=20)
    train_world_model(data, wcfg, root / "wm0", progress=False)
    out = root / "out"
    proc = torchrun(str(HERE / "distributed_worker.py"), "train", str(data), str(root / "wm0"),
                    str(out))
    return {"data": data, "wm": root / "wm0", "out": out, "log": proc.stdout + proc.stderr}


def test_two_ranks_train_with_identical_models_and_different_batches(trained):
    # the worker asserts per step: weights bit-identical across ranks, batches differ
    assert json.loads((trained["out"] / "ok.json").read_text()) == {"world": 2}
    first = torch.load(trained["out"] / "first" / "first.pt", weights_only=False)
    b0, b1 = first["batches"]
    assert len(b0["obs"]) == len(b1["obs"]) == 4
    assert not np.array_equal(b0["obs"], b1["obs"])


def test_two_ranks_of_b_equal_one_process_of_2b(trained):
    """The first DDP update (2 ranks x B) equals one process's update on the 2B batch
    made of both ranks' batches."""
    first = torch.load(trained["out"] / "first" / "first.pt", weights_only=False)
    cfg = MetaDTConfig.from_dict(first["cfg"])
    dev = torch.device("cpu")
    ds, store, cfg, wm, _ = prepare(trained["data"], cfg, trained["wm"], dev)
    seed_everything(cfg.seed)
    tr = build_trainer(ds, store, cfg, wm, dev)
    tr.model.load_state_dict(first["init"])
    b0, b1 = first["batches"]
    both = {k: np.concatenate([b0[k], b1[k]]) for k in b0}
    assert len(both["obs"]) == cfg.batch_size
    # the z / error columns the ranks computed sharded (chunks of 64 rows split across
    # ranks, all-gathered) equal the single process's
    assert len(first["columns"][cfg.z_column]) > 4 * cfg.column_batch_size
    for name, col in first["columns"].items():
        np.testing.assert_array_equal(np.asarray(store.column(name)), col, err_msg=name)
    tr.model.train()
    train_step(tr, 0, next_batch=lambda i: both)
    after = tr.model.state_dict()
    moved = 0.0
    for k, v in first["after"].items():
        torch.testing.assert_close(after[k], v, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((v - first["init"][k]).abs().max()))
    assert moved > 1e-4  # the update did something


def test_only_rank_zero_wrote_and_resume_on_one_rank(trained):
    run = trained["out"] / "run"
    ckpt = tensorfile.load(run / "checkpoint.safetensors", "metadt-train-checkpoint")
    assert ckpt["step"] == 4
    assert not any(k.startswith("module.") for k in ckpt["model"])  # unwrapped state
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # one line per log step: rank 0 alone logs
    cfg = MetaDTConfig.from_dict(json.loads((run / "config.json").read_text()))
    rest = train_meta_dt(trained["data"], cfg, run, trained["wm"], progress=False)
    assert rest["start_step"] == 4 and rest["steps_done"] == 6
    assert len(rest["losses"]) == 2 and np.isfinite(rest["losses"]).all()
    assert (run / "model.safetensors").is_file()


def test_world_model_on_two_ranks(trained):
    wm = trained["out"] / "wm"
    for name in ("model.safetensors", "report.json", "checkpoint.safetensors", "metrics.jsonl"):
        assert (wm / name).is_file(), name
    steps = [json.loads(x)["step"] for x in (wm / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_torchrun_cli_train(trained, tmp_path):
    """``torchrun --nproc_per_node 2 -m metadt train ...``: rank 0 alone prints and writes."""
    out = tmp_path / "cli"
    proc = torchrun("-m", "metadt", "train", "--data", str(trained["data"]), "--world-model",
                    str(trained["wm"]), "--preset", "smoke", "--out", str(out), "--no-progress",
                    "--set", "num_steps=4", "--set", "batch_size=8", "--set", "num_threads=1")
    assert proc.stdout.count('"steps_done": 4') == 1, proc.stdout
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.safetensors").is_file()


# ------------------------------------------------------------------ collection on 2 ranks
@pytest.mark.parametrize("mode", ["per-task", "task-conditioned"])
def test_collect_split_across_two_ranks_equals_one_process(tmp_path, mode):
    """``torchrun --nproc_per_node 2 -m metadt collect`` (tasks split 3 + 3, smoke preset)
    writes the same dataset as one process with the same seed. A task-conditioned agent is
    trained by rank 0; evaluations and rollouts are split."""
    from metadt.collect.collector import collect
    from metadt.config.collect import CollectConfig
    from metadt.data.dataset import QUALITIES, Dataset

    two, one = tmp_path / "two", tmp_path / "one"
    proc = torchrun("-m", "metadt", "collect", "--family", "point-robot", "--preset", "smoke",
                    "--out", str(two), "--seed", "3", "--set", "device=cpu", "--quiet",
                    "--set", f"sac_mode={mode}")
    assert proc.stdout.count("point-robot") >= 1
    parts = sorted(p.name for p in (two / ".work").iterdir() if p.name.startswith("rank-"))
    assert parts == ["rank-0-of-2", "rank-1-of-2"]
    cfg = CollectConfig.for_family("point-robot", "smoke").replace(device="cpu", sac_mode=mode)
    collect(cfg, one, seed=3)
    a, b = Dataset.open(one), Dataset.open(two)
    assert a.card.qualities == b.card.qualities
    assert a.card.random_returns == b.card.random_returns
    assert a.card.collection["checkpoint_evals"] == b.card.collection["checkpoint_evals"]
    assert a.card.collection["config"] == b.card.collection["config"]
    for q in QUALITIES:
        sa, sb = a.store(q, mmap=False), b.store(q, mmap=False)
        assert sa.num_episodes == sb.num_episodes
        for name in ("obs", "actions", "rewards", "next_obs", "terminals"):
            np.testing.assert_array_equal(np.asarray(sa.column(name)),
                                          np.asarray(sb.column(name)), err_msg=f"{q}/{name}")


# ------------------------------------------------------------------ the pipeline on 2 ranks
def test_torchrun_pipeline_rank_zero_evaluates_reports_and_logs_once(tmp_path):
    """``torchrun --nproc_per_node 2 -m metadt run``: collection and training split across
    the ranks, evaluation/report/logging by rank 0 alone, the report printed once."""
    out, data = tmp_path / "run", tmp_path / "data"
    proc = torchrun("-m", "metadt", "run", "--preset", "smoke", "--methods", "meta-dt,dt",
                    "--out", str(out), "--data", str(data), "--no-progress",
                    "--set-collect", "device=cpu", timeout=600)
    assert proc.stdout.count("# metadt: point-robot") == 1, proc.stdout
    assert proc.stderr.count("pipeline finished") == 1, proc.stderr
    stages = [json.loads(x) for x in (out / "stages.jsonl").read_text().splitlines()]
    keys = [(s["stage"], s.get("seed"), s.get("method")) for s in stages]
    assert keys == [("collect", None, None), ("world-model", 0, None),
                    ("train", 0, "meta-dt"), ("evaluate", 0, "meta-dt"),
                    ("train", 0, "dt"), ("evaluate", 0, "dt"), ("report", None, None)], keys
    parts = sorted(p.name for p in (data / ".work").iterdir() if p.name.startswith("rank-"))
    assert parts == ["rank-0-of-2", "rank-1-of-2"]
    for m in ("meta-dt", "dt"):
        ev = json.loads((out / "seed-0" / m / "eval.json").read_text())
        assert ev["method"] == m
    res = json.loads((out / "report" / "results.json").read_text())
    assert res  # written, parseable
