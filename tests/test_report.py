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
    rep = build_report([tmp_path / "runA"], tmp_path / "out", reps=200)
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
    c = checks["Meta-DT few-shot >= Prompt-DT (own trajectories)"]
    assert c["lhs"] == pytest.approx(test[("meta-dt", "few-shot")]["return_mean"])
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
    build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp", reps=200)
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "Side by side" in md and "| method, setting | a | b |" in md
    assert (tmp_path / "cmp" / "a-returns.png").is_file()


def test_report_cli(tmp_path, capsys):
    from metadt.cli import main

    write_group(tmp_path / "r", np.random.default_rng(2))
    assert main(["report", str(tmp_path / "r"), "--reps", "100"]) == 0
    assert (tmp_path / "r" / "report" / "results.md").is_file()
    assert "Meta-DT" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 1


def test_report_of_a_missing_input_writes_nothing(tmp_path, monkeypatch):
    from metadt.cli import main

    monkeypatch.chdir(tmp_path)
    write_group(tmp_path / "r", np.random.default_rng(3))
    # a typo among the inputs: refused before the output directory exists
    assert main(["report", str(tmp_path / "r"), str(tmp_path / "typo"), "--out", "cmp"]) == 1
    assert main(["report", str(tmp_path / "typo")]) == 1
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "report").exists()


# ---------------------------------------------------------------- statistics
def _rows(table, method="a", setting="few-shot", split="test"):
    """rows of task_rows' shape from {seed: {task: normalized}}."""
    return [{"method": method, "setting": setting, "seed": s, "task": t, "split": split,
             "normalized": v} for s, tv in table.items() for t, v in tv.items()]


def test_statistics_against_hand_computed_values():
    from metadt.report import stats

    a = {0: {1: 0.0, 2: 1.0}, 1: {1: 0.5, 2: 2.0}, 2: {1: 0.25, 2: 4.0}}
    b = {0: {1: 0.1, 2: 1.0}, 1: {1: 0.2, 2: 0.5}, 2: {1: 0.3, 2: 3.0, 9: 7.0}}  # task 9: one seed only
    rows = _rows(a) + _rows(b, method="b")
    mat, seeds, tasks = stats.score_matrix(rows, "b", "few-shot", ["test"])
    assert seeds == [0, 1, 2] and tasks == [1, 2]  # tasks every seed has
    np.testing.assert_array_equal(mat, [[0.1, 1.0], [0.2, 0.5], [0.3, 3.0]])
    (ea,) = stats.interval_estimates(rows, [("a", "few-shot")], ["test"], reps=500)
    # IQM of the 6 values {0, .25, .5, 1, 2, 4}: scipy trims int(0.25 * 6) = 1 from each end
    assert ea["iqm"] == pytest.approx(np.mean([0.25, 0.5, 1.0, 2.0]))
    assert ea["mean"] == pytest.approx(np.mean([0.0, 1.0, 0.5, 2.0, 0.25, 4.0]))
    assert ea["iqm_ci"][0] <= ea["iqm"] <= ea["iqm_ci"][1] and ea["tasks"] == 2
    p = stats.improvement(rows, ("a", "few-shot"), ("b", "few-shot"), ["test"], reps=500)
    # task 1: a = {0, .5, .25} vs b = {.1, .2, .3}: pairs a > b: 0 + 3 + 2 = 5 of 9
    # task 2: a = {1, 2, 4} vs b = {1, .5, 3}: 1 > .5 (+ tie with 1 = .5), 2 > 1, .5; 4 > all
    t2 = (1 + 0.5 + 2 + 3) / 9
    assert p["probability"] == pytest.approx((5 / 9 + t2) / 2)
    assert p["ci"][0] <= p["probability"] <= p["ci"][1] and p["tasks"] == 2
    d = stats.drop(rows, ("a", "few-shot"), ("b", "few-shot"), ["test"], reps=500)
    assert d["drop"] == pytest.approx(np.mean([0.0, 1.0, 0.5, 2.0, 0.25, 4.0])
                                      - np.mean([0.1, 1.0, 0.2, 0.5, 0.3, 3.0]))
    x = np.random.default_rng(0).random((3, 7))
    y = np.round(x * 1.5, 1)
    _, metrics = stats.load_rliable()
    assert stats.poi_pairs(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))


def test_report_rows_carry_method_training_flags_and_setting(tmp_path):
    from metadt.evaluate.metrics import task_rows

    rng = np.random.default_rng(3)
    train = {"method": "meta-dt-no-prompt", "use_z": True, "use_prompt": False,
             "prompt_dropout": 0.0, "window_anchor": "start"}
    for seed in (0, 1, 2):
        for method, setting, tr in (("meta-dt-no-prompt", "zero-shot", train),
                                    ("dt", "zero-shot", {**train, "method": "dt", "use_z": False})):
            rets = {setting: {t: rng.uniform(-20, -4, size=2).tolist() for t in ("7", "8", "0")}}
            ev = fake_eval(method, seed, rets, (setting,))
            ev["training"] = tr
            atomic_write_json(tmp_path / "g" / f"seed-{seed}" / method / "eval.json", ev)
    rep = build_report([tmp_path / "g"], tmp_path / "out", reps=200)
    g = rep["groups"][0]
    row = next(e for e in g["summary"]["test"] if e["method"] == "meta-dt-no-prompt")
    assert row["label"] == "Meta-DT zero-shot (never prompted)" and row["setting"] == "zero-shot"
    assert row["training"]["use_prompt"] is False and "never prompted" in row["trained"]
    assert "start-anchored windows" in row["trained"] and row["evaluated"] == "zero-shot"
    rows = task_rows([json.loads((tmp_path / "g" / "seed-0" / "dt" / "eval.json").read_text())])
    assert all(r["training"]["use_z"] is False and r["method"] == "dt" for r in rows)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| Meta-DT zero-shot (never prompted) | `meta-dt-no-prompt` (z, never prompted" in md
    poi = g["statistics"]["improvement"]
    assert [tuple(p["x"]) + tuple(p["y"]) for p in poi] == [
        ("meta-dt-no-prompt", "zero-shot", "dt", "zero-shot")]
    assert any("P(improvement) >= 0.6" in b["check"] for b in g["statistics"]["bars"])
    assert (tmp_path / "out" / "intervals.png").stat().st_size > 1000
