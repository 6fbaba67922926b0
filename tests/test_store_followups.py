"""Follow-ups of the store hardening (issue 19): stale save siblings cleaned,
return_scale checked at the store API, a NaN refused by the commands that
verify, and the dataset's one store-path rule."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metadt import TrajectoryStore
from metadt.cli import main
from metadt.config.world_model import WorldModelConfig
from metadt.data.dataset import Dataset
from metadt.train.world_model import train_world_model

from store_files import entry, manifest, refresh_entry, small_store
from test_train_support import make_point_dataset

MODEL_FILE = "model.safetensors"
GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8)]


# ------------------------------------------------------------------ 3. stale save siblings

KILLED_SAVE = r"""
import os, shutil, signal, sys
src, parent, name = sys.argv[1:4]
# what a save killed mid-way leaves, in save's own naming (.<name>.<pid>.<8 hex>.tmp/.old)
shutil.copytree(src, os.path.join(parent, f".{name}.{os.getpid()}.0123abcd.tmp"))
shutil.copytree(src, os.path.join(parent, f".{name}.{os.getpid()}.89ef4567.old"))
sys.stdout.write(str(os.getpid())); sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_save_cleans_what_a_killed_save_left(tmp_path):
    s = small_store()
    target = tmp_path / "st"
    s.save(target)
    src = tmp_path / "copy"
    s.save(src)
    r = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(src), str(tmp_path), "st"],
                       capture_output=True, text=True)
    assert r.returncode == -9  # killed
    dead = int(r.stdout)
    stale = {f".st.{dead}.0123abcd.tmp", f".st.{dead}.89ef4567.old"}
    assert stale <= set(os.listdir(tmp_path))
    # left alone: a save in progress of a live process (this one; a sleeping child),
    # other names, and the siblings of another target
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [f".st.{os.getpid()}.00000000.tmp", f".st.{child.pid}.11111111.old",
                ".st.backup.tmp", f".st.{dead}.0123abc.tmp", f".st.{dead}.0123abcdz.tmp",
                f".st2.{dead}.0123abcd.tmp", f".st.{dead}.0123abcd.tmp.keep", "st.0.0123abcd.tmp"]
        for k in keep:
            (tmp_path / k).mkdir()
        # a symlink in our naming is removed itself, never followed
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "precious").write_text("x")
        os.symlink(outside, tmp_path / f".st.{dead}.deadbeef.tmp")
        TrajectoryStore.load(target)  # loading cleans nothing
        assert stale <= set(os.listdir(tmp_path))
        s.add_episode(np.zeros((2, 2)), np.zeros((2, 1)), np.ones(2), task=0)
        s.save(target)
        left = set(os.listdir(tmp_path))
        assert not stale & left and f".st.{dead}.deadbeef.tmp" not in left
        assert set(keep) <= left
        assert (outside / "precious").read_text() == "x"
        assert TrajectoryStore.load(target, verify=True).num_episodes == s.num_episodes
    finally:
        child.kill()
        child.wait()


def test_a_failed_save_keeps_a_killed_saves_old_copy(tmp_path):
    """A kill between save's two renames leaves only `.old` (the target is gone): it is
    the sole copy of the store, so a save that fails does not remove it."""
    s = small_store()
    s.save(tmp_path / "copy")
    r = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "copy"), str(tmp_path), "st"],
                       capture_output=True, text=True)
    dead = int(r.stdout)
    (tmp_path / "st").write_text("a file: save refuses to replace it")
    with pytest.raises(FileExistsError):
        s.save(tmp_path / "st")
    assert (tmp_path / f".st.{dead}.89ef4567.old" / "manifest.json").is_file()


# ------------------------------------------------------------------ 4. return_scale


def _rtg_store(reward):
    s = TrajectoryStore(1, 1)
    s.add_episode(np.zeros((3, 1)), np.zeros((3, 1)), np.full(3, reward, np.float32))
    return s


@pytest.mark.parametrize("scale, match", [
    (0.0, "finite number > 0"), (-0.0, "finite number > 0"), (-2.0, "finite number > 0"),
    (float("nan"), "finite number > 0"), (float("inf"), "finite number > 0"),
    (-float("inf"), "finite number > 0"), (1e-50, "outside float32's range"),
    (1e39, "outside float32's range"), (0.5, "too small"),
])
def test_return_scale_is_checked_by_the_store(scale, match):
    s = _rtg_store(1e38)  # rtg of step 0: 3e38, finite in float32
    with pytest.raises(ValueError, match=match):
        s.sample_windows(4, window_len=2, return_scale=scale, seed=0)
    with pytest.raises(ValueError, match=match):
        s.prefetch("windows", batch=4, window_len=2, return_scale=scale, num_batches=1)


def test_return_scale_boundary_against_numpy():
    s = _rtg_store(1e38)
    rtg_max = np.float32(3e38)
    # the smallest scale whose rtg / scale stays finite in float32, found with NumPy
    scale = np.float32(rtg_max / np.finfo(np.float32).max)
    with np.errstate(over="ignore"):
        while not np.isfinite(rtg_max / scale):
            scale = np.nextafter(scale, np.float32(np.inf))
        below = np.nextafter(scale, np.float32(0))
        assert not np.isfinite(rtg_max / below)
    b = s.sample_windows(64, window_len=3, return_scale=float(scale), seed=0)
    assert np.isfinite(b["rtg"]).all()
    np.testing.assert_array_equal(b["rtg"][b["mask"]].max(), rtg_max / scale)
    with pytest.raises(ValueError, match=f"use return_scale >= {re.escape(str(scale))}"):
        s.sample_windows(4, window_len=2, return_scale=float(below), seed=0)
    # ordinary stores and scales are untouched (scales below 1 are fine when rtg is small)
    t = _rtg_store(-2.0)
    b = t.sample_windows(8, window_len=3, return_scale=1e-30, seed=1)
    assert np.isfinite(b["rtg"]).all() and b["rtg"].min() == np.float32(-6.0) / np.float32(1e-30)


# ------------------------------------------------------------------ 5. NaN in a dataset


@pytest.fixture(scope="module")
def nan_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nan")
    clean = root / "clean"
    make_point_dataset(clean, GOALS, num_train=2, episodes=3, qualities={"medium": 0.06}, seed=3)
    wm = root / "wm"
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="medium", num_steps=2, log_every=1, checkpoint_every=2)
    train_world_model(clean, cfg, wm, progress=False)
    import shutil

    bad = root / "bad"
    shutil.copytree(clean, bad)
    m = manifest(bad / "medium")
    e = entry(m, "obs")
    arr = np.load(bad / "medium" / e["file"])
    raw = bytearray((bad / "medium" / e["file"]).read_bytes())
    off = len(raw) - arr.nbytes + (5 * arr.shape[1] + 1) * 4  # row 5, column 1
    raw[off:off + 4] = np.float32(np.nan).tobytes()
    (bad / "medium" / e["file"]).write_bytes(bytes(raw))
    refresh_entry(bad / "medium", "obs")  # the CRC matches: only the finiteness check can tell
    assert np.isnan(np.load(bad / "medium" / e["file"])[5, 1])
    return bad, wm


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_a_nan_in_a_dataset_is_refused_where_verification_runs(nan_dataset, tmp_path, capsys):
    bad, wm = nan_dataset
    # the cheap checks (files, sizes, headers, tables) cannot see a value: info without --verify
    rc, out = _cli(capsys, "info", bad, "--no-tasks")
    assert rc == 0
    rc, out = _cli(capsys, "info", bad, "--no-tasks", "--verify")
    assert rc == 1 and "Traceback" not in out
    assert "quality 'medium' is damaged" in out and "obs.npy" in out and "non-finite value NaN at row 5, column 1" in out
    train = ["train", "--data", bad, "--world-model", wm, "--preset", "smoke", "--quality", "medium",
             "--no-progress", "--set", "num_steps=2", "--set", "log_every=1", "--set", "checkpoint_every=2"]
    rc, out = _cli(capsys, *train, "--out", tmp_path / "r")
    assert rc == 1 and "Traceback" not in out
    assert "non-finite value NaN at row 5, column 1" in out and "damaged" in out
    assert not (tmp_path / "r" / MODEL_FILE).exists()
    # --no-verify is documented to skip the full read: the command goes past the check
    # (and says it did not verify); the NaN is then the user's responsibility
    rc, out = _cli(capsys, *train, "--out", tmp_path / "r2", "--no-verify")
    assert "--no-verify" in out and "at row 5, column 1" not in out and "Traceback" not in out
    # (here the NaN still stops training later: the store refuses the world model's NaN
    # embeddings of that step when they are attached; nothing is written as a model)
    assert rc == 1 and 'column "wm_z" contains a non-finite value' in out
    assert not (tmp_path / "r2" / MODEL_FILE).exists()


# ------------------------------------------------------------------ 6. one store-path rule


def test_check_stores_verifies_the_path_store_path_gives(tmp_path, monkeypatch):
    make_point_dataset(tmp_path / "d", GOALS, num_train=2, episodes=2, qualities={"medium": 0.06}, seed=1)
    ds = Dataset.open(tmp_path / "d")
    seen = []
    loads = []
    real_path, real_load = Dataset.store_path, TrajectoryStore.load

    def spy_path(self, quality):
        seen.append(quality)
        return real_path(self, quality)

    def spy_load(path, *a, **kw):
        loads.append((Path(path), kw.get("verify")))
        return real_load(path, *a, **kw)

    monkeypatch.setattr(Dataset, "store_path", spy_path)
    monkeypatch.setattr(TrajectoryStore, "load", staticmethod(spy_load))
    ds.check_stores(verify=True)
    assert seen.count("medium") == 2  # the cheap load and the verifying one
    assert (tmp_path / "d" / "medium", True) in loads
    # a card whose store escapes the dataset is refused on the verify path too
    card = json.loads((tmp_path / "d" / "card.json").read_text())
    card["qualities"]["medium"]["store"] = "../elsewhere"
    (tmp_path / "d" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="must be the name of a directory inside the dataset"):
        Dataset.open(tmp_path / "d").check_stores(verify=True)
