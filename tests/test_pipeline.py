"""The `smoke` pipeline end to end, interrupted once and resumed."""
from __future__ import annotations

import json

import pytest

from metadt.config.meta_dt import METHODS
from metadt import tensorfile
from metadt.config.pipeline import PipelineConfig
from metadt.pipeline import runner


def _stages(out):
    return [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]


def test_smoke_pipeline_end_to_end_and_resume(tmp_path, monkeypatch):
    out, data = tmp_path / "run", tmp_path / "data"
    cfg = PipelineConfig(preset="smoke", data=str(data), report_reps=100)
    real_train = runner.Pipeline.stage_train

    def interrupted(self, method, seed, have_wm):
        if method == "prompt-dt":
            raise KeyboardInterrupt
        return real_train(self, method, seed, have_wm)

    monkeypatch.setattr(runner.Pipeline, "stage_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_pipeline(cfg, out)
    done = _stages(out)
    assert [s["stage"] for s in done][:2] == ["collect", "world-model"]
    assert (out / "seed-0" / "meta-dt" / "eval.json").is_file()
    assert not (out / "seed-0" / "prompt-dt" / "model.safetensors").exists()

    monkeypatch.setattr(runner.Pipeline, "stage_train", real_train)
    messages = []
    rep = runner.run_pipeline(cfg, out, progress=messages.append)
    again = _stages(out)[len(done):]
    # resumed: nothing finished before is redone
    assert not any(s["stage"] in ("collect", "world-model") for s in again)
    assert not any(s.get("method") in ("meta-dt", "dt") and s["stage"] != "report" for s in again)
    assert any("meta-dt seed 0: done, skipped" in m for m in messages)
    trained = {s["method"] for s in _stages(out) if s["stage"] == "train"}
    assert trained == set(METHODS)

    g = rep["groups"][0]
    got = {(e["method"], e["setting"]) for e in g["summary"]["test"]}
    assert {("meta-dt", "few-shot"), ("meta-dt", "few-shot-z-shuffled"),
            ("meta-dt", "few-shot-prompt-swapped"), ("dt", "zero-shot"),
            ("prompt-dt", "expert-prompt"), ("prompt-dt", "few-shot"),
            ("meta-dt-no-z", "few-shot"), ("meta-dt-no-prompt", "zero-shot"),
            ("meta-dt-no-prompt", "zero-shot-z-shuffled"),
            ("meta-dt-random-prompt", "few-shot")} <= got
    assert "z-probe" in json.loads((out / "seed-0" / "meta-dt-no-prompt" / "eval.json")
                                   .read_text())["settings"]
    ev = json.loads((out / "seed-0" / "meta-dt" / "eval.json").read_text())
    card = json.loads((data / "card.json").read_text())
    for t, info in ev["tasks"].items():
        assert info["target"] == pytest.approx(card["qualities"][ev["quality"]]["returns"][t]["max"])
    assert {int(t) for t, i in ev["tasks"].items() if i["split"] == "test"} == set(card["test_ids"])
    assert all(p["source"] == "own" for p in ev["settings"]["few-shot"]["prompts"].values())
    pdt = json.loads((out / "seed-0" / "prompt-dt" / "eval.json").read_text())
    assert all(p["source"] == "dataset:expert"
               for p in pdt["settings"]["expert-prompt"]["prompts"].values())
    for name in ("results.json", "results.md", "returns.png", "learning_curves.png"):
        assert (out / "report" / name).is_file(), name

    # a third run does nothing but rebuild the report
    n = len(_stages(out))
    runner.run_pipeline(cfg, out)
    assert [s["stage"] for s in _stages(out)[n:]] == ["report"]

    # the commands on the finished runs
    from metadt.cli import main

    assert main(["evaluate", "--run", str(out / "seed-0" / "dt"), "--out",
                 str(tmp_path / "dt-eval.json"), "--quiet"]) == 0
    again = json.loads((tmp_path / "dt-eval.json").read_text())
    first = json.loads((out / "seed-0" / "dt" / "eval.json").read_text())
    assert again["settings"]["zero-shot"]["returns"] == first["settings"]["zero-shot"]["returns"]
    assert main(["report", str(out), str(out), "--out", str(tmp_path / "cmp"),
                 "--name", "a", "--name", "b"]) == 0
    assert "| method, setting | a | b |" in (tmp_path / "cmp" / "results.md").read_text()

    # a different family/preset for the same OUT is refused
    with pytest.raises(ValueError, match="different"):
        runner.run_pipeline(cfg.replace(preset="cpu"), out)


def test_jobs_two_equals_jobs_one(tmp_path):
    """``--jobs 2``: the world model and the methods that need none run in separate
    processes, a method that needs the world model after it; every trained model and
    evaluation equals the one-process run's."""
    import torch

    data = tmp_path / "data"
    base = PipelineConfig(preset="smoke", data=str(data), methods=("meta-dt", "dt"))
    one, two = tmp_path / "one", tmp_path / "two"
    runner.run_pipeline(base, one)
    messages = []
    runner.run_pipeline(base.replace(jobs=2), two, progress=messages.append)
    assert any(m.startswith("[jobs] start world-model seed 0") for m in messages)
    stages = _stages(two)
    assert {(s["stage"], s.get("method")) for s in stages} == {
        ("world-model", None), ("train", "meta-dt"), ("train", "dt"),
        ("evaluate", "meta-dt"), ("evaluate", "dt"), ("report", None)}
    # meta-dt needs the world model: its training started after the world model ended
    # (stage times are end times to the second, hence the 1 s slack)
    import datetime

    def end(rec):
        return datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%SZ").timestamp()

    wm = next(s for s in stages if s["stage"] == "world-model")
    mdt = next(s for s in stages if s["stage"] == "train" and s["method"] == "meta-dt")
    assert end(mdt) - mdt["seconds"] >= end(wm) - 1.0
    for method in ("meta-dt", "dt"):
        a = json.loads((one / "seed-0" / method / "eval.json").read_text())
        b = json.loads((two / "seed-0" / method / "eval.json").read_text())
        assert a["settings"].keys() == b["settings"].keys()
        for name in a["settings"]:
            assert a["settings"][name]["returns"] == b["settings"][name]["returns"], name
        wa = tensorfile.load(one / "seed-0" / method / "model.safetensors", None)
        wb = tensorfile.load(two / "seed-0" / method / "model.safetensors", None)
        flat_a, flat_b = _tensors(wa), _tensors(wb)
        assert flat_a.keys() == flat_b.keys() and flat_a
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), k
    ra = json.loads((one / "report" / "results.json").read_text())
    rb = json.loads((two / "report" / "results.json").read_text())
    assert ra["groups"][0]["summary"] == rb["groups"][0]["summary"]
    assert all(s.get("jobs") == 2 for s in stages if s["stage"] != "report")
    assert "up to 2 ran at once" in (two / "report" / "results.md").read_text()
    assert "Pipeline wall time" in (one / "report" / "results.md").read_text()
    with pytest.raises(ValueError, match="jobs"):
        base.replace(jobs=0).validate()


def _tensors(obj, prefix=""):
    """Every tensor of a nested checkpoint, by path."""
    import torch

    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out
