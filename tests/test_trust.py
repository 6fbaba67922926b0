"""Files are data, never code; damage is refused, not resumed from (issues 18 and 19).

Hostile inputs: pickled payloads, flipped bytes, truncations, crafted JSON, huge,
negative and non-finite numbers, kills between the steps of a commit.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metadt import tensorfile
from metadt.cli import main
from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.data.dataset import Dataset
from metadt.fileio import atomic_directory, atomic_write_bytes, clean_stale_temps, recover_directory
from metadt.seeding import seed_everything
from metadt.train.checkpoint import CHECKPOINT_FILE, CHECKPOINT_KIND, CheckpointError
from metadt.train.meta_dt import train_meta_dt
from metadt.train.run import MODEL_FILE, RUN_FORMAT, load_run, read_model
from metadt.train.world_model import train_world_model

from test_train_support import make_point_dataset

GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pr"
    make_point_dataset(path, GOALS, num_train=3, episodes=3, qualities={"medium": 0.06}, seed=3)
    return path


def _wm_cfg(**kw) -> WorldModelConfig:
    return WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=6, log_every=3, checkpoint_every=3, **kw)


@pytest.fixture(scope="module")
def world_model_dir(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "wm"
    train_world_model(dataset, _wm_cfg(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(dataset, world_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = MetaDTConfig.for_family("point-robot", "smoke", "meta-dt").replace(quality="medium")
    train_meta_dt(dataset, cfg, out, world_model_dir, progress=False)
    return out


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


# ------------------------------------------------------------------ tensor files


def _sample_state() -> dict:
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3)
    lin(torch.ones(4, 3)).sum().backward()
    opt.step()
    return {"step": 7, "model": lin.state_dict(), "optimizer": opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False),
                    "python": random.getstate()},
            "odd": {"nan": float("nan"), "inf": float("-inf"), "big": 2**100, "none": None,
                    "$key": (1, "a"), 3: [True, np.float32(1.5)], "u": np.arange(5, dtype=np.uint64),
                    "half": torch.arange(4, dtype=torch.bfloat16), "empty": torch.zeros(0, 3)}}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def test_tensor_file_round_trip_keeps_every_type():
    state = _sample_state()
    state["odd"][3][1] = 1.5  # NumPy scalars come back as Python numbers
    back = tensorfile.loads(tensorfile.dumps(state, "k"), "k")
    assert _equal(state, back)
    random.setstate(back["rng"]["python"])  # usable as RNG states
    np.random.set_state(back["rng"]["numpy"])
    torch.set_rng_state(back["rng"]["torch"])


def test_tensor_file_refuses_every_flipped_byte_and_truncation():
    data = tensorfile.dumps(_sample_state(), "k")
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(tensorfile.TensorFileError):
            tensorfile.loads(bytes(flipped), "k")
    for n in (0, 7, 8, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(tensorfile.TensorFileError):
            tensorfile.loads(data[:n], "k")
    with pytest.raises(tensorfile.TensorFileError, match="expected a 'other'"):
        tensorfile.loads(data, "other")


def test_tensor_file_refuses_non_data_and_crafted_headers():
    class Thing:
        pass

    with pytest.raises(TypeError, match="cannot store"):
        tensorfile.dumps({"x": Thing()}, "k")
    with pytest.raises(TypeError, match="dtype object"):
        tensorfile.dumps({"x": np.array([None])}, "k")
    from safetensors.torch import save

    def crafted(tree: str) -> bytes:  # a valid checksum over a hostile tree
        meta = {tensorfile.KIND: "k", tensorfile.VERSION: "1", tensorfile.TREE: tree}
        header, body = tensorfile._split(save({"t": torch.zeros(1)}, metadata=meta))
        return save({"t": torch.zeros(1)},
                    metadata={**meta, tensorfile.DIGEST: tensorfile._digest(header, body)})

    assert tensorfile.loads(crafted('{"a": {"$t": "t"}}'), "k")["a"].shape == (1,)
    for tree in ('{"a": {"$t": "missing"}}', '{"a": {"$obj": 1}}', "[" * 100000 + "]" * 100000,
                 '{"a": {"$np": "t", "dtype": "|O", "shape": [1]}}', '{"a": {"$float": "1.0"}}',
                 '{"a": {"$np": "t", "dtype": "<f8", "shape": [1000000000]}}'):
        with pytest.raises(tensorfile.TensorFileError):
            tensorfile.loads(crafted(tree), "k")
    huge = struct.pack("<Q", 2**63) + b"{}"
    with pytest.raises(tensorfile.TensorFileError, match="truncated"):
        tensorfile.loads(huge, "k")


# ------------------------------------------------------------------ runs: no code execution


class _Payload:
    """Unpickling this creates a file (what a crafted model.pt would do)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_crafted_model_pt_is_refused_and_runs_nothing(run_dir, tmp_path, capsys):
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "pwned"
    payload = read_model(run_dir / MODEL_FILE, RUN_FORMAT)
    payload["config"] = {"x": _Payload(marker)}
    torch.save(payload, evil / "model.pt")
    rc, out = _cli(capsys, "evaluate", "--run", str(evil), "--quiet")
    assert rc == 1 and "refused" in out and "never unpickles" in out
    assert "Traceback" not in out
    assert not marker.exists()
    # the same through a subprocess: nothing is created by the real command line either
    proc = subprocess.run([sys.executable, "-m", "metadt", "evaluate", "--run", str(evil)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    # a plain pickle (the oldest torch.save format) with the payload: refused too
    with open(evil / "model.pt", "wb") as f:
        pickle.dump({"format": RUN_FORMAT, "x": _Payload(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        load_run(evil)
    assert not marker.exists()


def test_old_model_pt_of_plain_data_still_loads(run_dir, tmp_path):
    """Migration: a run of an older metadt (torch.save of tensors and plain data) loads
    with weights_only=True and gives the same model."""
    old = tmp_path / "old"
    old.mkdir()
    payload = read_model(run_dir / MODEL_FILE, RUN_FORMAT)
    torch.save(payload, old / "model.pt")
    a, b = load_run(run_dir), load_run(old)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.world_model is not None and b.dataset_path == a.dataset_path


def test_model_file_flipped_truncated_or_malformed_is_a_clear_error(run_dir, tmp_path, capsys):
    good = (run_dir / MODEL_FILE).read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {"flipped": bytearray(good), "truncated": good[: len(good) // 2], "empty": b"",
             "text": b"hello"}
    cases["flipped"][len(good) - 5] ^= 0x10
    for name, data in cases.items():
        (bad / MODEL_FILE).write_bytes(bytes(data))
        rc, out = _cli(capsys, "evaluate", "--run", str(bad), "--quiet")
        assert rc == 1 and "metadt: error" in out and "Traceback" not in out, (name, out)
    # a well-formed file whose content is wrong (types, dims, config)
    payload = read_model(run_dir / MODEL_FILE, RUN_FORMAT)
    for change in ({"obs_dim": -3}, {"obs_dim": "2"}, {"config": {"num_steps": "x"}},
                   {"config": [1]}, {"state_dict": {}}, {"dataset": 5}):
        tensorfile.save(bad / MODEL_FILE, {**payload, **change}, RUN_FORMAT)
        with pytest.raises(ValueError, match="malformed|wrong type|expected"):
            load_run(bad)


# ------------------------------------------------------------------ training checkpoints


def test_flipped_or_truncated_training_checkpoint_is_refused_on_resume(dataset, tmp_path,
                                                                       capsys):
    out = tmp_path / "wm"
    train_world_model(dataset, _wm_cfg().replace(num_steps=3), out, progress=False)
    (out / MODEL_FILE).unlink()  # unfinished: the next run resumes from the checkpoint
    (out / "config.json").write_text(json.dumps(_wm_cfg().to_dict()))
    ckpt = out / CHECKPOINT_FILE
    good = ckpt.read_bytes()
    for how in ("flip-data", "flip-header", "truncate"):
        if how == "truncate":
            ckpt.write_bytes(good[:-100])
        else:
            ckpt.write_bytes(good)
            _flip(ckpt, -50 if how == "flip-data" else 40)
        with pytest.raises(CheckpointError, match="delete it to restart"):
            train_world_model(dataset, _wm_cfg(), out, progress=False)
        assert not (out / MODEL_FILE).exists()
    rc, msg = _cli(capsys, "train-world-model", "--data", str(dataset), "--preset", "smoke",
                   "--out", str(out), "--quality", "medium", "--no-progress",
                   "--set", "num_steps=6", "--set", "log_every=3", "--set", "checkpoint_every=3")
    assert rc == 1 and "delete it to restart" in msg and "Traceback" not in msg
    ckpt.unlink()  # what the message says: training restarts and finishes
    train_world_model(dataset, _wm_cfg(), out, progress=False)
    assert (out / MODEL_FILE).is_file()


def test_old_pickle_checkpoint_is_refused_with_what_to_do(dataset, tmp_path):
    out = tmp_path / "wm"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(_wm_cfg().to_dict()))
    torch.save({"step": 3}, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="old pickle format.*delete it"):
        train_world_model(dataset, _wm_cfg(), out, progress=False)


def test_checkpoint_of_another_model_is_a_clear_error(dataset, world_model_dir, tmp_path):
    out = tmp_path / "wm"
    train_world_model(dataset, _wm_cfg().replace(num_steps=3), out, progress=False)
    (out / MODEL_FILE).unlink()
    (out / "config.json").write_text(json.dumps(_wm_cfg().to_dict()))
    state = tensorfile.load(out / CHECKPOINT_FILE, CHECKPOINT_KIND)
    state["model"] = {"nope": torch.zeros(1)}
    tensorfile.save(out / CHECKPOINT_FILE, state, CHECKPOINT_KIND)
    with pytest.raises(CheckpointError, match="does not fit"):
        train_world_model(dataset, _wm_cfg(), out, progress=False)


# ------------------------------------------------------------------ datasets: verification


def _copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _column_file(ds_path: Path, quality: str = "medium") -> Path:
    manifest = json.loads((ds_path / quality / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["name"] == "obs")
    return ds_path / quality / entry["file"]


def test_info_reports_a_missing_or_truncated_store(dataset, tmp_path, capsys):
    rc, out = _cli(capsys, "info", str(dataset))
    assert rc == 0 and "intact" in out
    d = _copy_dataset(dataset, tmp_path / "trunc")
    col = _column_file(d)
    col.write_bytes(col.read_bytes()[:-8])
    rc, out = _cli(capsys, "info", str(d))
    assert rc == 1 and "medium" in out and "Traceback" not in out
    d2 = _copy_dataset(dataset, tmp_path / "gone")
    import shutil

    shutil.rmtree(d2 / "medium")
    rc, out = _cli(capsys, "info", str(d2))
    assert rc == 1 and "medium" in out


def test_flipped_byte_in_a_dataset_is_refused_unless_no_verify(dataset, tmp_path, capsys):
    d = _copy_dataset(dataset, tmp_path / "flip")
    col = _column_file(d)
    _flip(col, col.stat().st_size - 3)  # inside the data, same size
    rc, out = _cli(capsys, "info", str(d))
    assert rc == 0  # sizes intact: only reading every byte finds it
    rc, out = _cli(capsys, "info", str(d), "--verify")
    assert rc == 1 and "medium" in out and "Traceback" not in out
    common = ["--data", str(d), "--preset", "smoke", "--quality", "medium", "--no-progress",
              "--set", "num_steps=2", "--set", "log_every=1", "--set", "checkpoint_every=2"]
    rc, out = _cli(capsys, "train-world-model", "--out", str(tmp_path / "a"), *common)
    assert rc == 1 and "damaged" in out and not (tmp_path / "a" / MODEL_FILE).exists()
    rc, out = _cli(capsys, "train-world-model", "--out", str(tmp_path / "b"), "--no-verify",
                   *common)
    assert rc == 0 and "--no-verify" in out  # the user's choice, said in the output


def test_card_store_counts_must_match(dataset, tmp_path, capsys):
    d = _copy_dataset(dataset, tmp_path / "counts")
    card = json.loads((d / "card.json").read_text())
    first = next(iter(card["qualities"]["medium"]["returns"].values()))
    first["episodes"] += 1
    (d / "card.json").write_text(json.dumps(card))
    rc, out = _cli(capsys, "info", str(d))
    assert rc == 1 and "the card says" in out


@pytest.mark.parametrize("edit", [
    lambda c: c.update(tasks=5), lambda c: c.update(train_ids=["a"]),
    lambda c: c.update(train_ids=[0, 99]), lambda c: c.update(obs_dim=2**40),
    lambda c: c.update(qualities=[]), lambda c: c["qualities"]["medium"].update(returns=[1]),
    lambda c: c["qualities"]["medium"]["returns"].update({"0": {"min": "x"}}),
    lambda c: c.update(random_returns={"0": None}), lambda c: c.update(family=None),
    lambda c: c.pop("tasks"), "deep", "not-object", "not-utf8", "empty",
])
def test_malformed_card_is_one_clear_error(dataset, tmp_path, capsys, edit):
    d = _copy_dataset(dataset, tmp_path / "card")
    card = json.loads((d / "card.json").read_text())
    if edit == "deep":
        (d / "card.json").write_text("[" * 200000 + "]" * 200000)
    elif edit == "not-object":
        (d / "card.json").write_text("[1, 2]")
    elif edit == "not-utf8":
        (d / "card.json").write_bytes(b"\xff\xfe{}")
    elif edit == "empty":
        (d / "card.json").write_bytes(b"")
    else:
        edit(card)
        (d / "card.json").write_text(json.dumps(card))
    rc, out = _cli(capsys, "info", str(d))
    assert rc == 1 and "metadt: error" in out and "Traceback" not in out


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("seed", [2**64, 2**64 + 5, -1])
def test_out_of_range_seeds_are_refused_not_reduced(seed, dataset, tmp_path, capsys):
    with pytest.raises(ValueError, match="seed must be in"):
        seed_everything(seed)
    rc, out = _cli(capsys, "train-world-model", "--data", str(dataset), "--preset", "smoke",
                   "--quality", "medium", "--out", str(tmp_path / "s"), "--seed", str(seed))
    assert rc == 1 and "seed must be in" in out and not (tmp_path / "s").exists()


def test_largest_seed_is_accepted():
    a = seed_everything(2**64 - 1).random()
    assert a == np.random.default_rng(2**64 - 1).random()


@pytest.mark.parametrize("value, match", [("nan", "finite"), ("inf", "finite"),
                                          ("-1", "> 0"), ("0", "> 0"),
                                          ("1e-300", "too small")])
def test_return_scale_must_keep_rtg_finite(value, match, dataset, world_model_dir, tmp_path,
                                           capsys):
    rc, out = _cli(capsys, "train", "--data", str(dataset), "--world-model", str(world_model_dir),
                   "--preset", "smoke", "--quality", "medium", "--out", str(tmp_path / "r"),
                   "--no-progress", "--no-verify", "--set", f"return_scale={value}")
    assert rc == 1 and match in out and "Traceback" not in out
    assert not (tmp_path / "r" / MODEL_FILE).exists()


# ------------------------------------------------------------------ atomic writes


class Killed(BaseException):
    """A kill: nothing after it runs (no cleanup handler catches BaseException here)."""


def _kill_at_replace(monkeypatch, n: int) -> None:
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed(f"killed before rename {n}")
        return real(src, dst)

    monkeypatch.setattr("metadt.fileio.os.replace", replace)


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_directory_commit_survives_a_kill_between_its_renames(tmp_path, monkeypatch, kill_at):
    target = tmp_path / "state"
    with atomic_directory(target) as tmp:
        (tmp / "v").write_text("1")
    _kill_at_replace(monkeypatch, kill_at)
    with pytest.raises(Killed):
        with atomic_directory(target) as tmp:
            (tmp / "v").write_text("2")
    monkeypatch.undo()
    recover_directory(target)
    # killed before the new version was complete: the old one; after: the new one
    assert (target / "v").read_text() == ("1" if kill_at == 1 else "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_directory_left_by_the_old_two_rename_commit_is_restored(tmp_path):
    target = tmp_path / "state"
    old = tmp_path / ".state.old"
    old.mkdir()
    (old / "v").write_text("1")
    (tmp_path / ".state.abcd1234.tmp").mkdir()  # its temporary, complete or not
    os.utime(tmp_path / ".state.abcd1234.tmp", (0, 0))
    recover_directory(target)
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_cleaned_on_the_next_write(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "f.json"
    stale = [tmp_path / f".f.json.{dead}.abcdefgh.tmp", tmp_path / ".f.json.zyxw9876.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    os.utime(stale[1], (time.time() - 7200,) * 2)
    live = [tmp_path / f".f.json.{os.getpid()}.abcdefgh.tmp",  # a write in progress
            tmp_path / ".f.json.qwer5678.tmp",                   # recent, old naming
            tmp_path / f".g.json.{dead}.abcdefgh.tmp",           # another file's
            tmp_path / "f.json.notes.tmp"]                       # not ours
    for p in live:
        p.write_bytes(b"keep")
    atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in live)
    d = tmp_path / f".dir.{dead}.abcdefgh.tmp"
    d.mkdir()
    (d / "x").write_text("x")
    assert clean_stale_temps(tmp_path / "dir") == [d] and not d.exists()


# ------------------------------------------------------------------ collection state


def _smoke_collect():
    from metadt.config.collect import CollectConfig

    return CollectConfig.for_family("point-robot", "smoke").replace(device="cpu")


def test_collection_killed_between_renames_resumes_instead_of_restarting(tmp_path,
                                                                        monkeypatch):
    from metadt.collect.collector import collect

    out = tmp_path / "d"
    real = os.replace

    def replace(src, dst):  # kill right after the live state was moved aside
        real(src, dst)
        if Path(dst).name == ".train.old":
            raise Killed("killed between the renames")

    monkeypatch.setattr("metadt.fileio.os.replace", replace)
    with pytest.raises(Killed):
        collect(_smoke_collect(), out, seed=0)
    monkeypatch.undo()
    assert not (out / ".work" / "train").exists()  # the state the old code restarted from
    events: list = []
    collect(_smoke_collect(), out, seed=0, progress=events.append)
    assert not any(ev["phase"] == "train" for ev in events)  # the SAC phase was complete
    assert Dataset.open(out).check_stores(verify=True)


def test_damaged_collection_state_is_refused_with_what_to_delete(tmp_path):
    from metadt.collect.collector import collect

    class Stop(Exception):
        pass

    def stop(ev):
        if ev.get("phase") == "evaluate":
            raise Stop

    cfg = _smoke_collect().replace(keep_replay=True)
    out = tmp_path / "d"
    with pytest.raises(Stop):
        collect(cfg, out, seed=0, progress=stop)
    state = out / ".work" / "train" / "state.safetensors"
    good = state.read_bytes()
    _flip(state, len(good) - 20)
    with pytest.raises(ValueError, match=r"checksum mismatch.*delete .*train"):
        collect(cfg, out, seed=0)
    state.write_bytes(good)
    ckpt = sorted((out / ".work" / "checkpoints").iterdir())[0]
    _flip(ckpt, -10)
    with pytest.raises(ValueError, match=r"checksum mismatch.*delete .*\.work"):
        collect(cfg, out, seed=0)
    ckpt.unlink()
    torch.save({"params": []}, ckpt.with_suffix(".pt"))
    with pytest.raises(ValueError, match="old pickle format"):
        collect(cfg, out, seed=0)
    state.unlink()
    torch.save({}, state.with_suffix(".pt"))
    with pytest.raises(ValueError, match="old pickle format"):
        collect(cfg, out, seed=0)


def test_damaged_evaluations_and_rollouts_are_refused(tmp_path):
    from metadt.collect.collector import collect

    class Stop(Exception):
        pass

    def stop(ev):
        if ev.get("phase") == "rollout" and ev.get("quality") == "medium":
            raise Stop

    out = tmp_path / "d"
    with pytest.raises(Stop):
        collect(_smoke_collect(), out, seed=0, progress=stop)
    ev = out / ".work" / "eval" / "random.json"
    good = ev.read_text()
    data = json.loads(good)
    data["returns"][0] += 1.0  # a plausible number, silently wrong without the checksum
    ev.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"checksum mismatch.*recomputed"):
        collect(_smoke_collect(), out, seed=0)
    ev.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a checksummed"):
        collect(_smoke_collect(), out, seed=0)
    ev.write_text(good)
    npz = out / ".work" / "rollouts" / "expert.npz"
    _flip(npz, npz.stat().st_size // 2)
    with pytest.raises(ValueError, match="damaged rollouts.*delete it"):
        collect(_smoke_collect(), out, seed=0)
    npz.unlink()  # what the message says: redone, and the collection finishes
    collect(_smoke_collect(), out, seed=0)
    assert Dataset.open(out).check_stores(verify=True)


def test_malformed_run_config_is_a_clear_error(dataset, tmp_path, capsys):
    out = tmp_path / "wm"
    train_world_model(dataset, _wm_cfg().replace(num_steps=3), out, progress=False)
    (out / MODEL_FILE).unlink()
    (out / "config.json").write_text("[1, 2, 3]")
    rc, msg = _cli(capsys, "train-world-model", "--data", str(dataset), "--preset", "smoke",
                   "--quality", "medium", "--out", str(out), "--no-progress")
    assert rc == 1 and "not a config" in msg and "Traceback" not in msg


@pytest.mark.parametrize("argv", [
    ["collect", "--family", "point-robot", "--preset", "smoke", "--seed", str(2**64)],
    ["run", "--preset", "smoke", "--first-seed", str(2**64 - 1), "--seeds", "2"],
])
def test_out_of_range_seeds_are_refused_by_every_command(argv, tmp_path, capsys):
    rc, out = _cli(capsys, *argv, "--out", str(tmp_path / "o"))
    assert rc == 1 and "must be in [0, 2**64 - 1]" in out
    assert not (tmp_path / "o").exists()


def test_large_seeds_are_not_reduced():
    """Seeds 2**32 apart (and 2**63 apart) give different streams everywhere."""
    draws = {}
    for seed in (5, 5 + 2**32, 5 + 2**63):
        g = seed_everything(seed)
        draws[seed] = (np.random.random(), random.random(), float(torch.rand(1)), g.random())
    a, b, c = draws.values()
    for x, y in ((a, b), (a, c), (b, c)):
        assert all(u != v for u, v in zip(x, y))
    seed_everything(5)
    assert np.random.random() == a[0]  # seeds < 2**32 seed NumPy's global as before


def test_sac_initial_weights_differ_for_seeds_2_to_the_32_apart():
    from metadt.collect.sac import SACEnsemble
    from metadt.config.collect import SACConfig

    cfg = SACConfig(hidden_dim=8, batch_size=4)
    a, b = (SACEnsemble(1, 2, 2, [-1, -1], [1, 1], cfg, device="cpu", seed=s)
            for s in (7, 7 + 2**32))
    assert not torch.equal(a.policy.params[0], b.policy.params[0])


@pytest.mark.parametrize("tasks", ["[1, 2]", '{"tasks": [[0.1, 0.2]]}', '{"tasks": 3}', "nul"])
def test_import_official_malformed_tasks_file(tasks, tmp_path, capsys):
    (tmp_path / "t.json").write_text(tasks)
    (tmp_path / "in").mkdir()
    rc, out = _cli(capsys, "import-official", str(tmp_path / "in"), "--family", "point-robot",
                   "--out", str(tmp_path / "o"), "--tasks", str(tmp_path / "t.json"),
                   "--trust-pickle")
    assert rc == 1 and "metadt: error" in out and "Traceback" not in out


@pytest.mark.parametrize("argv", [
    ["train", "--data", "D"], ["train-world-model", "--data", "D"], ["evaluate", "--run", "R"],
    ["profile", "--data", "D"], ["run"],
])
def test_every_command_reading_a_dataset_takes_no_verify(argv):
    from metadt.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(argv).no_verify is False
    assert parser.parse_args(argv + ["--no-verify"]).no_verify is True
    assert parser.parse_args(["info", "D", "--verify"]).verify is True
