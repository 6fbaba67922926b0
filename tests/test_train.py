"""Training: world model separates tasks, columns match the store's contexts,
exact resume, every method trains, bad input fails early and clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metadt.config.meta_dt import METHODS, MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.evaluate.world_model_report import world_model_report
from metadt.models.meta_dt import context_windows
from metadt.train.columns import StepTable, compute_step_errors, compute_z
from metadt.train.meta_dt import train_meta_dt
from metadt.train.prompts import attach_step_errors
from metadt.train.run import RUN_FORMAT, load_run, load_world_model, read_model
from metadt.train.world_model import train_world_model

from test_train_support import interrupted_world_model_checkpoints, make_point_dataset

GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9), (0.1, -0.9)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pr"
    make_point_dataset(path, GOALS, num_train=3, episodes=6,
                       qualities={"expert": 0.01, "medium": 0.06}, seed=1)
    return path


@pytest.fixture(scope="module")
def world_model_dir(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "wm"
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=40, log_every=10, checkpoint_every=20)
    train_world_model(dataset, cfg, out, progress=False, report=world_model_report)
    return out


def test_world_model_outputs(world_model_dir):
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "report.json",
                 "curves.png", "checkpoint.safetensors"):
        assert (world_model_dir / name).is_file(), name
    rep = json.loads((world_model_dir / "report.json").read_text())
    assert rep["test_task_loss"] is not None and "r2_test" in rep["probe"]
    assert rep["behaviour_invariance"]["tasks"] == [3, 4]
    wm = load_world_model(world_model_dir)
    assert wm.family == "point-robot" and not wm.training


def test_world_model_separates_two_tasks(tmp_path):
    """A tiny two-task dataset: z of full-context steps must identify the task."""
    path = tmp_path / "two"
    make_point_dataset(path, [(0.9, 0.9), (-0.9, -0.9), (0.9, -0.9)], num_train=2, episodes=6,
                       qualities={"medium": 0.05}, seed=2)
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=250, batch_size=64, log_every=50, checkpoint_every=250)
    train_world_model(path, cfg, tmp_path / "wm", progress=False)
    wm = load_world_model(tmp_path / "wm")
    from metadt.data.dataset import Dataset

    table = StepTable.of(Dataset.open(path).store("medium"))
    idx = table.steps_of_tasks([0, 1])
    idx = idx[table.timestep[idx] >= cfg.context_len]
    z = compute_z(table, wm, idx=idx)
    task = table.task[idx]
    c0, c1 = z[task == 0].mean(0), z[task == 1].mean(0)
    spread = max(z[task == 0].std(0).mean(), z[task == 1].std(0).mean())
    assert np.linalg.norm(c0 - c1) > 3 * spread
    nearest = np.where(np.linalg.norm(z - c0, axis=1) < np.linalg.norm(z - c1, axis=1), 0, 1)
    assert (nearest == task).mean() > 0.95


def test_columns_match_store_contexts(dataset, world_model_dir):
    """The sequential pass sees exactly the contexts the store's samplers give."""
    from metadt.data.dataset import Dataset

    wm = load_world_model(world_model_dir)
    store = Dataset.open(dataset).store("medium", mmap=False)
    attach_step_errors(store, wm, column="wm_error", batch_size=37)
    col = np.asarray(store.column("wm_error")).reshape(-1)
    assert col.shape == (store.num_steps,) and (col >= 0).all()
    b = store.sample_transitions(64, context_len=wm.context_len, seed=3)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in b.items()}
    err = wm.step_errors(t["obs"], t["actions"], t["rewards"], t["next_obs"], t["ctx_obs"],
                         t["ctx_actions"], t["ctx_rewards"], t["ctx_mask"]).numpy()
    gidx = np.asarray(store.episode_offsets())[b["episodes"]] + b["timesteps"]
    np.testing.assert_allclose(col[gidx], err, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compute_step_errors(store, wm, idx=gidx), err, rtol=1e-4, atol=1e-5)
    # z precomputed as a column == z on the fly from a window's context
    store.attach_column("z", compute_z(store, wm))
    w = store.sample_windows(16, window_len=5, context_len=wm.context_len, columns=("z",), seed=4)
    tw = {k: torch.from_numpy(np.asarray(v)) for k, v in w.items()}
    o, a, r, m = context_windows(tw, 5)
    z_fly = wm.encode(o, a, r, m)
    mask = tw["mask"]
    torch.testing.assert_close(z_fly[mask], tw["z"][mask], rtol=1e-4, atol=1e-5)


def _cfg(method, **kw):
    return MetaDTConfig.for_family("point-robot", "smoke", method).replace(
        quality="medium", **kw)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains(method, dataset, world_model_dir, tmp_path):
    cfg = _cfg(method, warm_train=2 if METHODS[method].get("warm_train", 1) else 0)
    summary = train_meta_dt(dataset, cfg, tmp_path / "run", world_model_dir, progress=False)
    assert len(summary["losses"]) == cfg.num_steps and np.isfinite(summary["losses"]).all()
    for name in ("config.json", "checkpoint.safetensors", "metrics.jsonl", "model.safetensors",
                 "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    run = load_run(tmp_path / "run")
    assert run.config.method == method and run.return_scale == 10.0
    assert (run.world_model is not None) == cfg.needs_world_model
    assert not run.model.training
    from metadt.data.dataset import Dataset

    store = Dataset.open(dataset).store("medium")
    w = store.sample_windows(3, window_len=cfg.window_len, context_len=4, return_scale=10.0, seed=0)
    batch = {k: torch.from_numpy(np.asarray(v)) for k, v in w.items()}
    act = run.model.predict_action(batch, run.world_model)
    assert act.shape == (3, 2) and act.abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("z_source", ["column", "on_the_fly"])
def test_resume_gives_the_same_losses(z_source, dataset, world_model_dir, tmp_path):
    cfg = _cfg("meta-dt", num_steps=8, warm_train=3, checkpoint_every=2, log_every=2,
               dropout=0.1, z_source=z_source)
    full = train_meta_dt(dataset, cfg, tmp_path / "a", world_model_dir, progress=False)
    part = train_meta_dt(dataset, cfg, tmp_path / "b", world_model_dir, progress=False,
                         stop_after=5)
    assert part["steps_done"] == 5 and not (tmp_path / "b" / "model.safetensors").exists()
    rest = train_meta_dt(dataset, cfg, tmp_path / "b", world_model_dir, progress=False)
    assert rest["start_step"] == 5
    assert part["losses"] + rest["losses"] == full["losses"]
    a = read_model(tmp_path / "a" / "model.safetensors", RUN_FORMAT)["state_dict"]
    b = read_model(tmp_path / "b" / "model.safetensors", RUN_FORMAT)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_world_model_resume(dataset, tmp_path):
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=12, checkpoint_every=4, log_every=4)
    ck, cb = interrupted_world_model_checkpoints(dataset, cfg, 8, tmp_path)
    assert ck["step"] == cb["step"] == 12
    for k in ck["model"]:
        torch.testing.assert_close(ck["model"][k], cb["model"][k], rtol=0, atol=0)


# ----------------------------------------------------------------- bad input
def test_needs_world_model(dataset, tmp_path):
    with pytest.raises(ValueError, match="needs a world model"):
        train_meta_dt(dataset, _cfg("meta-dt"), tmp_path / "r", None, progress=False)


def test_dataset_of_another_family(dataset, tmp_path, world_model_dir):
    cfg = _cfg("dt").replace(family="cheetah-vel")
    with pytest.raises(ValueError, match="family 'point-robot'.*'cheetah-vel'"):
        train_meta_dt(dataset, cfg, tmp_path / "r", None, progress=False)
    wcfg = WorldModelConfig.for_family("cheetah-vel", "smoke").replace(quality="medium")
    with pytest.raises(ValueError, match="family"):
        train_world_model(dataset, wcfg, tmp_path / "w", progress=False)


def test_world_model_of_another_family_or_dims(dataset, world_model_dir, tmp_path):
    wm = load_world_model(world_model_dir)
    wm.family = "cheetah-vel"
    with pytest.raises(ValueError, match="world model was trained on family 'cheetah-vel'"):
        train_meta_dt(dataset, _cfg("meta-dt"), tmp_path / "r", wm, progress=False)
    from metadt.models import WorldModel

    other = WorldModel(3, 2, wm.cfg)
    other.family = "point-robot"
    with pytest.raises(ValueError, match="dims"):
        train_meta_dt(dataset, _cfg("meta-dt"), tmp_path / "r", other, progress=False)
    assert not (tmp_path / "r").exists()  # nothing written before the checks pass


def test_missing_quality_and_config_change(dataset, world_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no quality 'mixed'"):
        train_meta_dt(dataset, _cfg("dt").replace(quality="mixed"), tmp_path / "r", None,
                      progress=False)
    cfg = _cfg("dt", num_steps=4)
    train_meta_dt(dataset, cfg, tmp_path / "r", None, progress=False, stop_after=2)
    with pytest.raises(ValueError, match="different config"):
        train_meta_dt(dataset, cfg.replace(lr=0.5), tmp_path / "r", None, progress=False)
    # how a run executes (threads, logging, checkpoint cadence) may change on resume
    train_meta_dt(dataset, cfg.replace(num_threads=2, log_every=1, checkpoint_every=3),
                  tmp_path / "r", None, progress=False)
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_missing_column(dataset, world_model_dir, tmp_path, monkeypatch):
    import metadt.train.meta_dt as tm

    real = tm._has_column
    monkeypatch.setattr(tm, "_has_column", lambda store, name: name != "next_obs" and real(store, name))
    with pytest.raises(ValueError, match="lacks column.*next_obs"):
        train_meta_dt(dataset, _cfg("dt"), tmp_path / "r", None, progress=False)


def test_cli_smoke(dataset, world_model_dir, tmp_path, capsys):
    from metadt.cli import main

    assert main(["train", "--data", str(dataset), "--world-model", str(world_model_dir),
                 "--preset", "smoke", "--quality", "medium", "--out", str(tmp_path / "r"),
                 "--no-progress", "--set", "num_steps=3"]) == 0
    assert (tmp_path / "r" / "model.safetensors").is_file()
    assert main(["train", "--data", str(dataset), "--preset", "smoke", "--quality", "medium",
                 "--out", str(tmp_path / "r2"), "--no-progress"]) == 1
    assert "needs a world model" in capsys.readouterr().err


def test_training_windows_follow_the_configured_anchor():
    """The trainer's sampler asks the store for the config's window rule (default: the
    official start-anchored one) for every method; a bad anchor is a config error."""
    from metadt.train.meta_dt import sampler_kwargs

    for method in METHODS:
        cfg = MetaDTConfig.for_family("point-robot", "cpu", method)
        assert cfg.window_anchor == "start" and cfg.prompt_dropout == 0.0
        kw = sampler_kwargs(cfg.replace(use_z=False), None, [0, 1], with_prompt=False)
        assert kw["anchor"] == "start"
        kw = sampler_kwargs(cfg.replace(use_z=False, window_anchor="end"), None, [0], with_prompt=False)
        assert kw["anchor"] == "end"
    with pytest.raises(ValueError, match="window_anchor"):
        MetaDTConfig().replace(window_anchor="middle").validate()
