"""Metric sinks (issue 18 item 5): CSV beside the JSON lines always; TensorBoard when asked."""
from __future__ import annotations

import csv
import json

import pytest

from metadt.train.metrics import MetricsLogger, read_metrics


def test_csv_mirrors_the_json_lines_including_a_resume(tmp_path):
    log = MetricsLogger(tmp_path / "metrics.jsonl")
    log.log(1, {"loss": 2.5, "lr": 0.1})
    log.log(2, {"loss": 1.5, "lr": 0.1, "test_task_loss": 3.0})
    log.log(3, {"loss": 0.5, "lr": 0.05})
    log.close()
    log = MetricsLogger(tmp_path / "metrics.jsonl", resume_step=2)  # line 3 is dropped
    log.log(3, {"loss": 0.25, "lr": 0.05})
    log.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(rows[0]) == ["step", "loss", "lr", "test_task_loss"]
    assert [(r["step"], r["loss"], r["test_task_loss"]) for r in rows] == \
        [("1", "2.5", ""), ("2", "1.5", "3.0"), ("3", "0.25", "")]
    assert [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2.5, 1.5, 0.25]


def test_no_tensorboard_unless_asked(tmp_path):
    log = MetricsLogger(tmp_path / "m.jsonl", tmp_path / "tb")
    log.log(1, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "tb").exists()


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLogger(tmp_path / "m.jsonl", tmp_path / "tb", loggers="tensorboard")
    for step, loss in ((10, 3.0), (20, 2.0), (30, 1.0)):
        log.log(step, {"loss": loss, "prompt": 1})
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert got == [(10, 3.0), (20, 2.0), (30, 1.0)]


def test_unknown_or_missing_sink_is_refused_before_training():
    import importlib.util

    from metadt.config.meta_dt import MetaDTConfig

    with pytest.raises(ValueError, match="did you mean 'tensorboard'"):
        MetaDTConfig().with_overrides(["loggers=tensorbord"]).validate()
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValueError, match="wandb asked for but 'wandb' is not installed"):
            MetaDTConfig().with_overrides(["loggers=wandb"]).validate()


def test_training_writes_csv_and_tensorboard_when_asked(tmp_path):
    from test_train_support import make_point_dataset

    from metadt.cli import main

    data = tmp_path / "pr"
    make_point_dataset(data, [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8)], num_train=2, episodes=4,
                       qualities={"medium": 0.06}, seed=1)
    out = tmp_path / "r"
    assert main(["train", "--data", str(data), "--method", "dt", "--preset", "smoke",
                 "--quality", "medium", "--out", str(out), "--no-progress", "--set",
                 "num_steps=4", "--set", "log_every=2", "--set", "loggers=tensorboard"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in rows] == [r["step"] for r in lines] == [2, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in lines])
    assert list((out / "tb").glob("events.out.tfevents.*"))
