"""Fixed score references (issue 18 item 4)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metadt.envs import make_family
from metadt.envs.base import FAMILIES

from metadt.evaluate.metrics import summarize, task_rows
from metadt.evaluate.references import (REFERENCES_FILE, fixed_score, measure, missing_families,
                                        reference)
from metadt.report.build import score_reference_note
from metadt.report.tables import summary_table


def _result(family, returns, random=-20.0, dataset_max=-5.0):
    return {"method": "dt", "seed": 0, "family": family, "training": {},
            "tasks": {"3": {"split": "test", "target": dataset_max, "dataset_max": dataset_max,
                            "dataset_mean": -9.0, "random": random}},
            "settings": {"zero-shot": {"returns": {"3": returns}}}}


MEASURED = ("point-robot", "cheetah-vel", "cheetah-dir", "ant-dir", "hopper-param", "walker-param", "reach",
            "sweep", "door-lock")


def test_shipped_references_are_the_measured_ones():
    doc = json.loads(REFERENCES_FILE.read_text())
    assert set(doc["families"]) == set(MEASURED)
    for fam in MEASURED:
        ref = reference(fam)
        assert ref["random"] < ref["expert"] and ref["tasks"] == make_family(fam, seed=0).num_tasks
        assert f"metadt collect --family {fam} --preset cpu" in ref["measured_with"]["command"]
        assert fam not in missing_families()
    # every other family is reported missing, never given a number
    assert set(missing_families()) == {f for f in FAMILIES if f not in MEASURED}
    assert all(reference(f) is None for f in missing_families())


@pytest.fixture
def no_ant_reference(monkeypatch):
    """The shipped table without ant-dir's entry (a family with no measured reference)."""
    from metadt.evaluate import references

    table = {k: v for k, v in references._table().items() if k != "ant-dir"}
    monkeypatch.setattr(references, "_table", lambda: table)
    assert references.reference("ant-dir") is None and "ant-dir" in references.missing_families()


def test_fixed_score_d4rl_convention_beside_the_per_dataset_one():
    ref = reference("point-robot")
    rets = [-10.0, -6.0]
    rows = task_rows([_result("point-robot", rets)])
    want = 100 * (np.mean(rets) - ref["random"]) / (ref["expert"] - ref["random"])
    assert rows[0]["score"] == pytest.approx(want)
    assert rows[0]["normalized"] == pytest.approx((-8.0 + 20.0) / 15.0)  # per dataset, kept
    assert fixed_score(ref["random"], ref) == pytest.approx(0.0)
    assert fixed_score(ref["expert"], ref) == pytest.approx(100.0)
    s = summarize(rows)[0]
    assert s["score_mean"] == pytest.approx(want)
    assert f"{want:.1f} ± 0.0" in summary_table([s])


def test_family_without_reference_says_so_and_shows_no_score(no_ant_reference):
    rows = task_rows([_result("ant-dir", [-50.0])])
    assert math.isnan(rows[0]["score"])
    s = summarize(rows)[0]
    assert math.isnan(s["score_mean"])
    line = summary_table([s]).splitlines()[-1]
    assert line.split("|")[6].strip() == "–"
    note = score_reference_note(["ant-dir"])
    assert "no fixed score reference has been measured for ant-dir" in note
    assert "point-robot: random" in score_reference_note(["point-robot"])


def test_measure_takes_the_card_means(tmp_path):
    from test_train_support import make_point_dataset

    from metadt.data.dataset import Dataset, write_card

    ds = make_point_dataset(tmp_path / "pr", [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8)],
                            num_train=2, episodes=4, seed=1)
    card = ds.card
    card.random_returns = {"0": -10.0, "1": -12.0, "2": -14.0}
    write_card(tmp_path / "pr", card)
    got = measure(tmp_path / "pr")
    exp = Dataset.open(tmp_path / "pr").card.returns("expert")
    assert got["random"] == pytest.approx(-12.0)
    assert got["expert"] == pytest.approx(np.mean([exp[i]["mean"] for i in range(3)]))
    assert got["expert_episodes"] == 12
