"""Return during training (issue 18 item 6): logged, equal to an evaluation of the model at
that step, and without any effect on training."""
from __future__ import annotations

import json

import pytest


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_eval_return_is_logged_and_training_is_unchanged(tmp_path):
    from test_train_support import make_point_dataset

    from metadt.cli import main
    from metadt.evaluate.evaluator import training_return_probe
    from metadt.train.run import load_run

    data = tmp_path / "pr"
    make_point_dataset(data, [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9)], num_train=2,
                       episodes=4, qualities={"medium": 0.06}, seed=1)
    base = ["train", "--data", str(data), "--method", "dt", "--preset", "smoke", "--quality",
            "medium", "--no-progress", "--set", "num_steps=4", "--set", "log_every=2"]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    assert main(base + ["--out", str(tmp_path / "ev"), "--set", "train_eval_every=2",
                        "--set", "train_eval_tasks=2"]) == 0
    plain, ev = _lines(tmp_path / "plain" / "metrics.jsonl"), _lines(tmp_path / "ev" / "metrics.jsonl")
    assert not any("eval_return" in r for r in plain)
    rets = [(r["step"], r["eval_return"]) for r in ev if "eval_return" in r]
    assert [s for s, _ in rets] == [2, 4]
    # the training itself is the same with and without the evaluations
    assert [r["loss"] for r in ev if "loss" in r] == [r["loss"] for r in plain]
    # the last value is an evaluation of the final model, recomputed independently
    run = load_run(tmp_path / "ev", device="cpu")
    again = training_return_probe(data)(run.model.eval(), None, run.config)
    assert rets[-1][1] == pytest.approx(again, rel=1e-5)
    assert "eval_return" in (tmp_path / "ev" / "metrics.csv").read_text().splitlines()[0]
