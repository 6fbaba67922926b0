"""The one run-directory type (identity minus runtime fields, completion marker) and the
one training skeleton (exact resume, logging divisor, final files) of both trainers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metadt.config.evaluate import EvaluateConfig
from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.rundir import RunDir, RunDirMismatch, flatten
from metadt.train.checkpoint import CHECKPOINT_FILE, CHECKPOINT_KIND
from metadt.train.meta_dt import train_meta_dt
from metadt.train.world_model import train_world_model

from test_train_support import make_point_dataset

GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pr"
    make_point_dataset(path, GOALS, num_train=3, episodes=4,
                       qualities={"expert": 0.01, "medium": 0.06}, seed=3)
    return path


def _wm_cfg(**kw):
    return WorldModelConfig.for_family("point-robot", "smoke").replace(quality="medium", **kw)


def _dt_cfg(**kw):
    return MetaDTConfig.for_family("point-robot", "smoke", "dt").replace(quality="medium", **kw)


def _lines(path):
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


# ------------------------------------------------------------------ RunDir itself
def test_flatten_names_nested_fields():
    assert flatten({"a": 1, "b": {"c": [1, 2], "d": {}}, "e": {"f": {"g": None}}}) == \
        {"a": 1, "b.c": [1, 2], "b.d": {}, "e.f.g": None}


def test_identity_minus_runtime_fields_and_states(tmp_path):
    run = RunDir(tmp_path / "r", "training run", markers=("model.safetensors",),
                 runtime=frozenset({"device", "sac.threads"}))
    mine = {"lr": 0.1, "device": "cpu", "sac": {"threads": 1, "tau": 0.5}, "dims": (2, 3)}
    assert run.start(mine) == "new"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["dims"] == [2, 3]
    # how it runs may change: the same run
    again = {**mine, "device": "cuda", "sac": {"threads": 4, "tau": 0.5}}
    assert run.start(again) == "resume"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "cuda"
    # what it computes may not: every differing field is named with both values
    other = {**mine, "lr": 0.2, "sac": {"threads": 1, "tau": 0.25}}
    with pytest.raises(RunDirMismatch) as exc:
        run.start(other)
    msg = str(exc.value)
    assert "unfinished training run with a different config" in msg
    assert "different lr (0.2 here, 0.1 in config.json)" in msg
    assert "different sac.tau (0.25 here, 0.5 in config.json)" in msg
    assert "device" not in msg and "use another --out or --overwrite" in msg
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, FileExistsError)
    # the completion marker
    assert not run.finished
    (tmp_path / "r" / "model.safetensors").write_bytes(b"x")
    assert run.finished and run.marker() == tmp_path / "r" / "model.safetensors"
    assert run.start(again) == "finished"
    with pytest.raises(RunDirMismatch, match="finished training run with a different config"):
        run.start(other)
    assert run.start(other, overwrite=True) == "new" and not run.finished


def test_a_finished_run_without_identity_and_a_foreign_directory_are_refused(tmp_path):
    run = RunDir(tmp_path / "r", "collection", markers=("card.json",))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "card.json").write_text("{}")
    with pytest.raises(RunDirMismatch, match="finished collection without its config.json"):
        run.start({"a": 1})
    mine = RunDir(tmp_path / "m", "collection", identity_file=".work/config.json",
                  exclusive=True)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirMismatch, match="exists and is not a collection"):
        mine.start({"a": 1})
    assert not (tmp_path / "m" / ".work").exists()
    (tmp_path / "m" / "thesis.tex").unlink()
    assert mine.start({"a": 1}) == "new"  # an empty directory (or just .work) is fine
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(RunDirMismatch, match="not a config"):
        RunDir(tmp_path, "pipeline", identity_file="bad.json").stored()


def test_only_some_fields_and_defaults_of_older_records(tmp_path):
    run = RunDir(tmp_path, "pipeline", identity_file="p.json", only=("config.family",),
                 defaults={"config": {"family": "point-robot"}})
    (tmp_path / "p.json").write_text(json.dumps({"config": {"seeds": 1}, "all_seeds": [0]}))
    # family absent from the older record: its default then, the same as ours
    assert run.check({"config": {"family": "point-robot", "seeds": 3}})["all_seeds"] == [0]
    assert run.matches({"config": {"family": "point-robot"}})
    assert not run.matches({"config": {"family": "cheetah-vel"}})
    with pytest.raises(RunDirMismatch, match="different family"):
        run.check({"config": {"family": "cheetah-vel"}})


# ------------------------------------------------------------------ the training skeleton
def test_world_model_resumes_exactly_through_the_skeleton(dataset, tmp_path):
    """Killed after step 3 (a checkpoint, between two log lines) and resumed: the same
    batches, weights and optimizer state as the uninterrupted run, and every log line
    after the resume point averages the steps since the previous line (the skeleton's
    one divisor)."""
    cfg = _wm_cfg(num_steps=8, log_every=2, checkpoint_every=4)
    full = train_world_model(dataset, cfg, tmp_path / "a", progress=False)
    part = train_world_model(dataset, cfg, tmp_path / "b", progress=False, stop_after=3)
    assert part["steps_done"] == 3 and not (tmp_path / "b" / "model.safetensors").exists()
    rest = train_world_model(dataset, cfg, tmp_path / "b", progress=False)
    assert rest.keys() == full.keys() and rest["z_dim"] == full["z_dim"]
    from metadt import tensorfile

    a, b = (tensorfile.load(tmp_path / r / CHECKPOINT_FILE, CHECKPOINT_KIND) for r in "ab")
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    for k, v in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(v[name], b["optimizer"]["state"][k][name], rtol=0, atol=0)
    la, lb = _lines(tmp_path / "a" / "metrics.jsonl"), _lines(tmp_path / "b" / "metrics.jsonl")
    assert sorted(la) == sorted(lb) == [2, 4, 6, 8]
    for step in (2, 6, 8):  # 4 averages step 4 alone after the resume (step 3 was lost)
        for key in ("loss", "grad_norm", "test_task_loss"):
            if key in la[step]:
                assert lb[step][key] == pytest.approx(la[step][key], rel=1e-6), (step, key)


def test_meta_dt_log_lines_after_an_unaligned_resume_equal_the_uninterrupted(dataset, tmp_path):
    cfg = _dt_cfg(num_steps=8, log_every=2, checkpoint_every=4, dropout=0.1)
    full = train_meta_dt(dataset, cfg, tmp_path / "a", None, progress=False)
    part = train_meta_dt(dataset, cfg, tmp_path / "b", None, progress=False, stop_after=3)
    rest = train_meta_dt(dataset, cfg, tmp_path / "b", None, progress=False)
    assert part["losses"] + rest["losses"] == full["losses"]
    la, lb = _lines(tmp_path / "a" / "metrics.jsonl"), _lines(tmp_path / "b" / "metrics.jsonl")
    for step in (2, 6, 8):
        assert lb[step]["loss"] == pytest.approx(la[step]["loss"], rel=1e-6)
        assert lb[step]["lr"] == la[step]["lr"]
    assert lb[4]["loss"] == pytest.approx(full["losses"][3], rel=1e-6)  # step 4 alone


def test_the_model_file_is_written_last_and_marks_the_run_finished(dataset, tmp_path,
                                                                   monkeypatch):
    import metadt.train.loop as loop

    def crash(out, payload):
        raise KeyboardInterrupt("killed before the model file")

    cfg = _dt_cfg(num_steps=3, log_every=1, checkpoint_every=10)
    with monkeypatch.context() as m:
        m.setattr(loop, "save_model", crash)
        with pytest.raises(KeyboardInterrupt):
            train_meta_dt(dataset, cfg, tmp_path / "r", None, progress=False)
    out = tmp_path / "r"
    assert (out / "run.json").is_file() and (out / CHECKPOINT_FILE).is_file()
    assert not (out / "model.safetensors").exists()  # not finished: the marker is missing
    again = train_meta_dt(dataset, cfg, out, None, progress=False)  # finishes, no step redone
    assert again["start_step"] == 3 and again["losses"] == []
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "run.json").read_text())["steps_done"] == 3


# ------------------------------------------------------------------ refusals
def test_world_model_directory_of_another_config_is_refused(dataset, tmp_path):
    out = tmp_path / "wm"
    train_world_model(dataset, _wm_cfg(num_steps=4), out, progress=False, stop_after=2)
    with pytest.raises(ValueError, match=r"unfinished world-model training with a different "
                                         r"config: different lr \(0\.5 here, 0\.001 in config"):
        train_world_model(dataset, _wm_cfg(num_steps=4, lr=0.5), out, progress=False)
    # runtime fields may change on resume; the run then finishes
    train_world_model(dataset, _wm_cfg(num_steps=4, log_every=1, num_threads=2), out,
                      progress=False)
    with pytest.raises(ValueError, match="finished world-model training with a different "
                                         "config: different num_steps \\(5 here, 4 in config.json"):
        train_world_model(dataset, _wm_cfg(num_steps=5), out, progress=False)


def test_evaluation_results_of_another_config_are_refused(dataset, tmp_path):
    from metadt.evaluate.evaluator import evaluate_run, is_complete

    run = tmp_path / "run"
    train_meta_dt(dataset, _dt_cfg(num_steps=2), run, None, progress=False)
    cfg = EvaluateConfig.for_family("point-robot", "smoke").replace(episodes=1,
                                                                  num_train_tasks=1)
    first = evaluate_run(run, cfg)
    assert is_complete(run / "eval.json", cfg, "dt")
    # how it runs may change: the finished settings are kept, not redone
    again = evaluate_run(run, cfg.replace(torch_threads=2, device="cpu"))
    assert again["settings"]["zero-shot"] == first["settings"]["zero-shot"]
    assert is_complete(run / "eval.json", cfg.replace(torch_threads=2), "dt")
    other = cfg.replace(episodes=2)
    assert not is_complete(run / "eval.json", other, "dt")
    before = (run / "eval.json").read_text()
    with pytest.raises(ValueError, match=r"evaluation with a different config: different "
                                         r"episodes \(2 here, 1 in eval.json.*--fresh"):
        evaluate_run(run, other)
    assert (run / "eval.json").read_text() == before  # nothing lost
    res = evaluate_run(run, other, fresh=True)
    assert len(next(iter(res["settings"]["zero-shot"]["returns"].values()))) == 2


def test_train_cli_refuses_an_unfinished_run_of_another_config(dataset, tmp_path, capsys):
    from metadt.cli import main

    argv = ["train", "--data", str(dataset), "--method", "dt", "--preset", "smoke",
            "--quality", "medium", "--out", str(tmp_path / "r"), "--no-progress",
            "--no-verify"]
    train_meta_dt(dataset, _dt_cfg(num_steps=4), tmp_path / "r", None, progress=False,
                  stop_after=2)
    assert main(argv + ["--set", "num_steps=4", "--set", "lr=0.5"]) == 1
    err = capsys.readouterr().err
    assert "different config: different lr (0.5 here" in err and "Traceback" not in err
    assert np.isfinite(json.loads((tmp_path / "r" / "config.json").read_text())["lr"])


def test_cli_refuses_a_finished_run_of_another_config(dataset, tmp_path, capsys):
    from metadt.cli import main

    out = tmp_path / "r"
    train_meta_dt(dataset, _dt_cfg(num_steps=2), out, None, progress=False)
    config = (out / "config.json").read_text()
    argv = ["train", "--data", str(dataset), "--method", "dt", "--preset", "smoke",
            "--quality", "medium", "--out", str(out), "--no-progress", "--no-verify"]
    assert main(argv + ["--set", "num_steps=2", "--set", "num_threads=2"]) == 0
    assert "already done" in capsys.readouterr().err  # a runtime field: the same run
    assert main(argv + ["--set", "num_steps=3"]) == 1
    err = capsys.readouterr().err
    assert "finished training run with a different config: different num_steps (3 here, 2" \
        in err and "already done" not in err
    assert (out / "config.json").read_text() == config  # a finished run is left as it is
    wm = tmp_path / "wm"
    train_world_model(dataset, _wm_cfg(num_steps=2), wm, progress=False)
    assert main(["train-world-model", "--data", str(dataset), "--preset", "smoke", "--quality",
                 "medium", "--out", str(wm), "--no-progress", "--no-verify",
                 "--set", "num_steps=2", "--set", "batch_size=16"]) == 1
    assert "different batch_size (16 here, 32 in config.json)" in capsys.readouterr().err
