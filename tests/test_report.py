"""The report's numbers equal the raw episode returns it was built from."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metadt.fileio import append_jsonl, atomic_write_json
from metadt.report.build import build_report


def fake_eval(method, seed, returns, settings=("zero-shot",)):
    """An eval.json dict: returns[setting][task] = raw episode returns."""
    tasks = {"7": {"split": "test", "target": -4.0, "dataset_max": -4.0, "dataset_mean": -8.0,
                   "random": -20.0},
             "8": {"split": "test", "target": -6.0, "dataset_max": -6.0, "dataset_mean": -9.0,
                   "random": -22.0},
             "0": {"split": "train", "target": -3.0, "dataset_max": -3.0, "dataset_mean": -5.0,
                   "random": -19.0}}
    return {"format": "metadt-eval", "version": 1, "method": method, "seed": seed,
            "family": "point-robot", "config": {}, "tasks": tasks,
            "settings": {s: {"returns": returns[s], "seconds": 0.1} for s in settings}}


def write_group(root, rng):
    raw = {}
    for seed in (0, 1, 2):
        for method, settings in (("meta-dt", ("zero-shot", "few-shot")), ("dt", ("zero-shot",)),
                                 ("prompt-dt", ("expert-prompt", "few-shot"))):
            rets = {s: {t: rng.uniform(-20, -4, size=2).round(3).tolist() for t in ("7", "8", "0")}
                    for s in settings}
            raw[(method, seed)] = rets
            run = root / f"seed-{seed}" / method
            atomic_write_json(run / "eval.json", fake_eval(method, seed, rets, settings))
            for step in (0, 10, 20):
                append_jsonl(run / "metrics.jsonl", {"step": step, "loss": 1.0 / (step + 1)})
    return raw


def test_report_numbers_equal_raw_returns(tmp_path):
    rng = np.random.default_rng(0)
    raw = write_group(tmp_path / "runA", rng)
    rep = build_report([tmp_path / "runA"], tmp_path / "out")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rep["groups"][0]["name"] == "runA" and len(data["groups"]) == 1
    g = data["groups"][0]
    test = {(e["method"], e["setting"]): e for e in g["summary"]["test"]}
    for (method, setting) in [("meta-dt", "few-shot"), ("dt", "zero-shot"),
                              ("prompt-dt", "expert-prompt")]:
        per = [np.mean(raw[(method, s)][setting][t]) for s in (0, 1, 2) for t in ("7", "8")]
        e = test[(method, setting)]
        assert e["return_mean"] == pytest.approx(np.mean(per))
        assert e["return_std"] == pytest.approx(np.std(per))
        norm = [(np.mean(raw[(method, s)][setting][t]) - r) / (m - r)
                for s in (0, 1, 2) for t, r, m in (("7", -20.0, -4.0), ("8", -22.0, -6.0))]
        assert e["normalized_mean"] == pytest.approx(np.mean(norm))
        assert e["dataset_max"] == pytest.approx(-5.0) and e["dataset_mean"] == pytest.approx(-8.5)
        assert e["n"] == 6 and e["episodes"] == 12
    train = {(e["method"], e["setting"]): e for e in g["summary"]["train"]}
    per = [np.mean(raw[("dt", s)]["zero-shot"]["0"]) for s in (0, 1, 2)]
    assert train[("dt", "zero-shot")]["return_mean"] == pytest.approx(np.mean(per))
    checks = {c["check"]: c for c in g["quality_bar"]}
    c = checks["Meta-DT zero-shot >= DT"]
    assert c["lhs"] == pytest.approx(test[("meta-dt", "zero-shot")]["return_mean"])
    assert c["holds"] == (c["lhs"] >= c["rhs"])
    md = (tmp_path / "out" / "results.md").read_text()
    fs = test[("meta-dt", "few-shot")]
    assert f"{fs['return_mean']:.2f} ± {fs['return_std']:.2f}" in md
    assert (tmp_path / "out" / "returns.png").stat().st_size > 1000
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 1000


def test_report_compares_runs_side_by_side(tmp_path):
    rng = np.random.default_rng(1)
    write_group(tmp_path / "a", rng)
    write_group(tmp_path / "b", rng)
    build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "Side by side" in md and "| method, setting | a | b |" in md
    assert (tmp_path / "cmp" / "a-returns.png").is_file()


def test_report_cli(tmp_path, capsys):
    from metadt.cli import main

    write_group(tmp_path / "r", np.random.default_rng(2))
    assert main(["report", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report" / "results.md").is_file()
    assert "Meta-DT" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 1
