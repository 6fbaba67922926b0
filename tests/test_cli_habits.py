"""One CLI habit (shared flags, --version) and what a newcomer met (issue 18, items 6-7)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from metadt.cli import build_parser, main
from metadt.cli._common import COMMON_FLAGS, flag_overrides

#: every long command, with the arguments it requires
LONG = {
    "run": [],
    "collect": ["--family", "point-robot", "--out", "d"],
    "train-world-model": ["--data", "d"],
    "train": ["--data", "d"],
    "evaluate": ["--run", "r"],
    "profile": ["--data", "d"],
}
#: flags a command does not take, and why: profile writes no output directory
NOT_MEANINGFUL = {("profile", "--overwrite")}
VALUES = {"--seed": "7", "--device": "cpu", "--threads": "1"}


def _subparser(name):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[name]


@pytest.mark.parametrize("flag", COMMON_FLAGS)
@pytest.mark.parametrize("command", sorted(LONG))
def test_every_long_command_takes_the_shared_flags(command, flag):
    if (command, flag) in NOT_MEANINGFUL:
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, *LONG[command], flag])
        return
    argv = [command, *LONG[command], flag] + ([VALUES[flag]] if flag in VALUES else [])
    args = build_parser().parse_args(argv)
    dest = flag.lstrip("-").replace("-", "_")
    want = {"--seed": 7, "--device": "cpu", "--threads": 1}.get(flag, True)
    assert getattr(args, dest) == want
    # documented in --help, under the one shared group, with one meaning
    text = _subparser(command).format_help()
    assert "common flags (the same in every long command)" in text
    assert flag in text


def test_shared_flags_set_the_same_config_fields():
    from metadt.config.collect import CollectConfig
    from metadt.config.evaluate import EvaluateConfig
    from metadt.config.meta_dt import MetaDTConfig

    args = build_parser().parse_args(["train", "--data", "d", "--seed", "3", "--device", "cpu",
                                      "--threads", "2"])
    assert flag_overrides(args, MetaDTConfig) == ["seed=3", "device=cpu", "num_threads=2"]
    assert flag_overrides(args, EvaluateConfig) == ["seed=3", "device=cpu", "torch_threads=2"]
    # collect's seed is an argument of collect(), not a config field
    assert flag_overrides(args, CollectConfig, skip=("seed",)) == ["device=cpu", "torch_threads=2"]
    bad = build_parser().parse_args(["train", "--data", "d", "--threads", "-1"])
    with pytest.raises(ValueError, match="--threads"):
        flag_overrides(bad, MetaDTConfig)


def test_collect_flags_reach_the_printed_config(capsys):
    assert main(["collect", "--family", "point-robot", "--preset", "smoke", "--out", "x",
                 "--device", "cpu", "--threads", "1", "--no-progress", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["device"] == "cpu" and cfg["torch_threads"] == 1
    # --set wins over the flag
    assert main(["collect", "--family", "point-robot", "--preset", "smoke", "--out", "x",
                 "--threads", "1", "--set", "torch_threads=2", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["torch_threads"] == 2


def test_version_prints_the_provenance(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    from importlib.metadata import version

    assert out.startswith(f"metadt {version('metadt')}")
    for name in ("torch", "numpy", "gymnasium", "mujoco", "metaworld", "triton"):
        assert name in out
    assert version("torch") in out and version("numpy") in out


# ------------------------------------------------------------------ item 6


def test_run_set_applies_to_every_stage_that_has_the_field(tmp_path):
    from metadt.config.pipeline import PipelineConfig
    from metadt.pipeline.runner import Pipeline

    cfg = PipelineConfig(preset="smoke", data=str(tmp_path / "d"), device="cpu",
                         overrides=("num_steps=7",), train_overrides=("num_steps=9",))
    pipe = Pipeline(cfg, tmp_path / "out")
    assert pipe.world_model_config(0).num_steps == 7
    assert pipe.train_config("dt", 0).num_steps == 9  # --set-train wins over --set
    assert pipe.collect_config().device == "cpu" and pipe.evaluate_config().device == "cpu"
    assert not (tmp_path / "out").exists()
    # `--set` is an option of its own, not an ambiguous prefix of --set-train
    args = build_parser().parse_args(["run", "--set", "num_steps=5"])
    assert args.overrides == ["num_steps=5"]


@pytest.mark.parametrize("argv, message", [
    (["--set-train", "num_stepz=3"], "did you mean 'num_steps'"),
    (["--set", "batch_sise=3"], "did you mean 'batch_size'"),
    (["--family", "pointrobot"], "did you mean 'point-robot'"),
    (["--set-evaluate", "episodes=x"], "episodes"),
])
def test_run_validates_everything_before_any_stage(tmp_path, capsys, argv, message):
    out, data = tmp_path / "out", tmp_path / "data"
    rc = main(["run", "--preset", "smoke", "--out", str(out), "--data", str(data), *argv])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not out.exists() and not data.exists(), "nothing written for an invalid config"


def test_unknown_field_says_did_you_mean():
    from metadt.config.meta_dt import MetaDTConfig

    with pytest.raises(ValueError, match=r"no field 'lr_' \(did you mean 'lr'\?\)"):
        MetaDTConfig().with_overrides(["lr_=1"])
    with pytest.raises(ValueError) as exc:
        MetaDTConfig().with_overrides(["zzzzzz=1"])
    assert "did you mean" not in str(exc.value) and "fields:" in str(exc.value)


def test_print_config_into_a_closed_pipe_is_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "metadt", "envs", "--family", "point-robot",
                             "--num-tasks", "20000", "--num-train", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"point-robot")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    from metadt.fileio import atomic_directory, atomic_write_json

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "plain", "w") as f:  # what open() (and matplotlib) do
            f.write("x")
        with atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("x")
        os.mkdir(tmp_path / "plain-dir")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "plain") == 0o666 & ~umask
    assert mode(tmp_path / "d") == mode(tmp_path / "plain-dir") == 0o777 & ~umask


def test_rerunning_a_finished_training_says_it_is_done(tmp_path, capsys):
    from test_train_support import make_point_dataset

    data = tmp_path / "pr"
    make_point_dataset(data, [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8)], num_train=2, episodes=4,
                       qualities={"medium": 0.06}, seed=1)
    argv = ["train", "--data", str(data), "--method", "dt", "--preset", "smoke", "--quality",
            "medium", "--out", str(tmp_path / "r"), "--no-progress", "--set", "num_steps=3"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert '"final_loss": null' not in first.out
    before = (tmp_path / "r" / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    again = capsys.readouterr()
    assert "already done" in again.err
    assert '"final_loss": null' not in again.out and '"steps_per_s": 0.0' not in again.out
    assert json.loads(again.out)["steps_done"] == 3
    assert (tmp_path / "r" / "model.safetensors").stat().st_mtime_ns == before
    assert main(argv + ["--overwrite"]) == 0  # --overwrite trains again
    assert "already done" not in capsys.readouterr().err


def test_overwrite_refuses_a_directory_metadt_did_not_write(tmp_path):
    from metadt.cli._common import remove_output

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not deleting"):
        remove_output(mine, ("pipeline.json",), "pipeline output")
    assert (mine / "thesis.tex").read_text() == "precious"
    (mine / "pipeline.json").write_text("{}")
    assert remove_output(mine, ("pipeline.json",), "pipeline output") is True
    assert not mine.exists()


@pytest.mark.parametrize("no_progress", [False, True])
def test_run_shows_the_collection_phases_as_bars(tmp_path, capsys, monkeypatch, no_progress):
    from metadt.collect import collector

    def fake_collect(cfg, out, seed=0, progress=None):
        progress({"phase": "train", "step": 50, "total": 100, "tasks": 3, "updates": 7})
        progress({"phase": "evaluate", "done": 1, "total": 4, "mean_return": -3.0, "what": "s"})
        progress({"phase": "rollout", "quality": "expert", "episodes": 2, "total": 6})
        raise KeyboardInterrupt  # stop before training: only the bars matter here

    monkeypatch.setattr(collector, "collect", fake_collect)
    argv = ["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--data",
            str(tmp_path / "d"), "--jobs", "1"] + (["--no-progress"] if no_progress else [])
    assert main(argv) == 130
    err = capsys.readouterr().err
    for label in ("SAC x3 tasks", "evaluate checkpoints", "rollout expert"):
        assert (label in err) != no_progress, (label, err)


def test_a_pipeline_written_before_shared_set_still_resumes(tmp_path):
    from metadt.config.pipeline import PipelineConfig
    from metadt.pipeline.runner import PIPELINE_FILE, Pipeline

    cfg = PipelineConfig(preset="smoke", data=str(tmp_path / "d"))
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["overrides"], old["device"]  # fields an older metadt did not write
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / PIPELINE_FILE).write_text(json.dumps({"format": "metadt-pipeline",
                                                            "version": 1, "config": old}))
    Pipeline(cfg, tmp_path / "o")._check_out()  # no "different overrides" refusal
    with pytest.raises(ValueError, match="different overrides"):
        Pipeline(cfg.replace(overrides=("num_steps=3",)), tmp_path / "o")._check_out()
