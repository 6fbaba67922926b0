"""Unit tests of metadt.TrajectoryStore: API, errors, online mode, save/load, prefetch, fork."""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import zlib

import numpy as np
import pytest

import metadt
from metadt import PromptSpec, TrajectoryStore
from metadt.data import derive_seed

OD, AD = 3, 2


def make(n_eps=6, lengths=None, tasks=2, seed=0, capacity=None):
    rng = np.random.default_rng(seed)
    s = TrajectoryStore(OD, AD, capacity=capacity)
    lengths = lengths or [5 + 7 * i for i in range(n_eps)]
    for i, T in enumerate(lengths):
        s.add_episode(rng.normal(size=(T, OD)).astype(np.float32), rng.normal(size=(T, AD)).astype(np.float32),
                      rng.normal(size=T).astype(np.float32), task=i % tasks)
    return s


def snapshot(s):
    cols = {n: np.array(s.column(n)) for n in ("obs", "actions", "rewards", "next_obs", "terminals", "rtg", *s.columns())}
    return (s.num_episodes, s.num_steps, s.episode_returns().tolist(), s.episode_lengths().tolist(),
            s.tasks().tolist(), cols, s.columns(), s.metadata)


def same(a, b):
    assert a[:5] == b[:5] and a[6:] == b[6:]
    assert a[5].keys() == b[5].keys()
    for k in a[5]:
        np.testing.assert_array_equal(a[5][k], b[5][k])


def test_top_level_import_and_basic_queries():
    assert metadt.TrajectoryStore is TrajectoryStore
    s = make()
    assert s.num_episodes == 6 and s.num_steps == sum(5 + 7 * i for i in range(6))
    assert s.obs_dim == OD and s.act_dim == AD
    assert s.episodes_of_task(1).tolist() == [1, 3, 5]
    assert s.episodes_of_task(99).tolist() == []
    assert s.episode_returns().dtype == np.float64
    assert s.episode_offsets().dtype == np.int64
    r = s.episode_returns()
    top = s.top_episodes(0, 2)
    assert list(top) == sorted([0, 2, 4], key=lambda i: -r[i])[:2]
    assert len(s) == s.num_steps and "TrajectoryStore" in repr(s)


def test_next_obs_default_and_rtg():
    s = TrajectoryStore(1, 1)
    obs = np.arange(4, dtype=np.float32)[:, None]
    s.add_episode(obs, np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(s.column("next_obs")[:, 0], [1, 2, 3, 3])
    np.testing.assert_array_equal(s.column("rtg"), [10, 9, 7, 4])
    np.testing.assert_array_equal(s.column("terminals"), [0, 0, 0, 0])
    assert s.episode_returns()[0] == 10.0
    # [T, 1] rewards accepted
    s.add_episode(obs, np.zeros((4, 1)), np.ones((4, 1)), terminals=np.array([0, 0, 0, 1], bool))
    np.testing.assert_array_equal(s.column("terminals")[4:], [0, 0, 0, 1])


def test_column_is_zero_copy_read_only_snapshot():
    s = make()
    z = np.arange(s.num_steps * 2, dtype=np.float32).reshape(-1, 2)
    s.attach_column("z", z)
    c1 = s.column("z")
    c2 = s.column("z")
    assert not c1.flags.writeable
    assert c1.__array_interface__["data"][0] == c2.__array_interface__["data"][0]  # same memory, no copy
    with pytest.raises(ValueError):
        c1[0, 0] = 5
    for v in (c1, s.column("rewards"), s.column("rewards").base):  # nor through a base array
        with pytest.raises(ValueError):
            v.flags.writeable = True
    np.testing.assert_array_equal(c1, z)
    # appending after taking a view: the view is an unchanged snapshot
    n = s.num_steps
    s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.zeros(3))
    assert c1.shape == (n, 2) and s.column("z").shape == (n + 3, 2)
    np.testing.assert_array_equal(s.column("z")[n:], 0)
    del s
    gc.collect()
    np.testing.assert_array_equal(c1, z)  # still valid after the store is gone
    # 1-D values accepted -> [N, 1]
    s = make()
    s.attach_column("e", np.ones(s.num_steps))
    assert s.column("e").shape == (s.num_steps, 1)
    assert s.columns() == ["e"]
    b = s.sample_windows(3, window_len=2, columns="e", seed=0)  # a single name is accepted
    assert b["e"].shape == (3, 2, 1)


@pytest.mark.parametrize("bad", [
    lambda s: s.sample_windows(0),
    lambda s: s.sample_windows(4, window_len=0),
    lambda s: s.sample_windows(4, tasks=[42]),
    lambda s: s.sample_windows(4, tasks=[]),
    lambda s: s.sample_windows(4, columns=["nope"]),
    lambda s: s.sample_windows(4, columns=[1, 2]),
    lambda s: s.sample_windows(4, columns=["neg", "neg"]),
    lambda s: s.sample_windows(4, return_scale=0.0),
    lambda s: s.sample_windows(4, return_scale=float("nan")),
    lambda s: s.sample_windows(4, prompt=PromptSpec(3, "nope")),
    lambda s: s.sample_windows(4, prompt=PromptSpec(3, "neg")),
    lambda s: s.sample_windows(4, prompt={"length": 0}),
    lambda s: s.sample_windows(4, prompt=(3, None, "bogus")),
    lambda s: s.sample_windows(4, prompt=PromptSpec(3, pool=[10**6])),
    lambda s: s.sample_windows(4, seed=-1),
    lambda s: s.sample_windows(4, anchor="middle"),
    lambda s: s.prefetch("windows", batch=4, anchor="begin"),
    lambda s: s.sample_transitions(0),
    lambda s: s.sample_transitions(4, tasks=[7]),
    lambda s: s.segment_scores("nope", 3),
    lambda s: s.segment_scores("obs", 0),
    lambda s: s.best_segments("neg", 2, mode="proportional"),
    lambda s: s.best_segments("obs", 2, per="bogus"),
    lambda s: s.best_segments("obs", 2, mode="last"),
    lambda s: s.segment_scores("obs", 2, episodes=[999]),
    lambda s: s.episode_task(999),
    lambda s: s.episode_task(-1),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.array([0, np.nan, 0])),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.array([0, np.inf, 0])),
    lambda s: s.add_episode(np.full((3, OD), np.nan), np.zeros((3, AD)), np.zeros(3)),
    lambda s: s.add_episode(np.zeros((3, OD + 1)), np.zeros((3, AD)), np.zeros(3)),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD + 1)), np.zeros(3)),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((4, AD)), np.zeros(3)),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.zeros(3), next_obs=np.zeros((2, OD))),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.zeros(3), terminals=np.zeros(2)),
    lambda s: s.add_episode(np.zeros((3, OD), np.int64), np.zeros((3, AD)), np.zeros(3)),
    lambda s: s.add_episode(np.zeros((0, OD)), np.zeros((0, AD)), np.zeros(0)),
    lambda s: s.add_episode(np.zeros((3, OD)), np.zeros((3, AD)), np.full(3, 1e300)),
    lambda s: s.attach_column("x", np.zeros(5)),
    lambda s: s.attach_column("x", np.full(s.num_steps, np.nan)),
    lambda s: s.attach_column("obs", np.zeros(s.num_steps)),
    lambda s: s.attach_column("", np.zeros(s.num_steps)),
    lambda s: s.attach_column("a/b", np.zeros(s.num_steps)),
    lambda s: s.column("nope"),
    lambda s: s.add_step(np.zeros(OD + 1), np.zeros(AD), 0.0, np.zeros(OD), False),
    lambda s: s.add_step(np.zeros(OD), np.zeros(AD), float("nan"), np.zeros(OD), False),
    lambda s: s.set_metadata({"x": object()}),
    lambda s: s.set_metadata([1, 2]),
    lambda s: s.prefetch("bogus", batch=4),
    lambda s: s.prefetch("windows", batch=4, bogus=1),
    lambda s: s.prefetch("windows", batch=0),
])
def test_invalid_input_raises_value_error_and_leaves_store_intact(bad):
    s = make()
    s.attach_column("neg", -np.ones(s.num_steps, np.float32))
    s.set_metadata({"a": 1})
    before = snapshot(s)
    with pytest.raises(ValueError) as info:
        bad(s)
    assert str(info.value)  # a message
    same(before, snapshot(s))
    assert s.num_open_steps == 0


def test_empty_store_errors():
    s = TrajectoryStore(2, 1)
    with pytest.raises(ValueError, match="empty|no complete"):
        s.sample_windows(4)
    with pytest.raises(ValueError, match="empty"):
        s.sample_transitions(4)
    with pytest.raises(ValueError):
        TrajectoryStore(0, 1)
    with pytest.raises(ValueError):
        TrajectoryStore(1, 1, capacity=0)
    assert s.tasks().tolist() == [] and s.num_steps == 0


def test_seed_reproducible_and_thread_independent():
    s = make(n_eps=30, lengths=[200] * 30)
    a = s.sample_windows(4096, window_len=20, context_len=4, seed=7)  # large: parallel path
    b = s.sample_windows(16, window_len=20, context_len=4, seed=7)  # small: serial path
    for k in b:
        if a[k].ndim and a[k].shape[0] == 4096:
            np.testing.assert_array_equal(a[k][:16], b[k], err_msg=k)
    c = s.sample_windows(4096, window_len=20, context_len=4, seed=7)
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])
    d1 = s.sample_windows(64, seed=None)
    d2 = s.sample_windows(64, seed=None)
    assert not np.array_equal(d1["episodes"], d2["episodes"]) or not np.array_equal(d1["timesteps"], d2["timesteps"])
    s.reseed(5)
    e1 = s.sample_windows(64)
    s.reseed(5)
    e2 = s.sample_windows(64)
    np.testing.assert_array_equal(e1["timesteps"], e2["timesteps"])


def test_uniform_over_steps():
    s = TrajectoryStore(1, 1)
    for T, task in [(10, 0), (30, 0), (60, 1)]:
        s.add_episode(np.zeros((T, 1)), np.zeros((T, 1)), np.zeros(T), task=task)
    n = 200_000
    b = s.sample_windows(n, window_len=3, seed=1)
    counts = np.bincount(b["episodes"], minlength=3) / n
    np.testing.assert_allclose(counts, [0.1, 0.3, 0.6], atol=0.01)
    ends = b["timesteps"][b["episodes"] == 2, -1]
    hist = np.bincount(ends, minlength=60) / len(ends)
    assert np.abs(hist - 1 / 60).max() < 0.004
    # anchor="start": the first real step is uniform over the episode's steps, the window
    # holds min(K, T - start) real steps (the official rule: short windows near the end)
    b = s.sample_windows(n, window_len=3, seed=3, anchor="start")
    np.testing.assert_allclose(np.bincount(b["episodes"], minlength=3) / n, [0.1, 0.3, 0.6], atol=0.01)
    sel = b["episodes"] == 2
    real = b["mask"][sel].sum(1)
    starts = b["timesteps"][sel][np.arange(sel.sum()), 3 - real]
    assert np.abs(np.bincount(starts, minlength=60) / len(starts) - 1 / 60).max() < 0.004
    np.testing.assert_array_equal(real, np.minimum(3, 60 - starts))
    t = s.sample_transitions(n, context_len=0, tasks=[0], seed=2)
    assert set(np.unique(t["episodes"])) == {0, 1}
    np.testing.assert_allclose(np.bincount(t["episodes"], minlength=2)[:2] / n, [0.25, 0.75], atol=0.01)


def test_prompt_forms_and_fallbacks():
    s = TrajectoryStore(1, 1)
    s.add_episode(np.zeros((2, 1)), np.zeros((2, 1)), np.ones(2), task=0)  # shorter than k
    s.add_episode(np.arange(6.0)[:, None], np.zeros((6, 1)), np.ones(6), task=1)  # T < start_min + k
    err = np.zeros(s.num_steps, np.float32)
    err[2 + 1] = 5.0  # episode 1 step 1
    s.attach_column("err", err)
    for p in (PromptSpec(4, "err", "argmax", start_min=4), {"length": 4, "score": "err", "start_min": 4}, (4, "err", "argmax", 4)):
        b = s.sample_windows(32, window_len=3, prompt=p, seed=0)
        m0 = b["tasks"] == 0
        assert (b["prompt_episodes"][m0] == 0).all() and (b["prompt_starts"][m0] == 0).all()
        np.testing.assert_array_equal(b["prompt_mask"][m0][0], [False, False, True, True])
        np.testing.assert_array_equal(b["prompt_actions"][m0][0], [[-10], [-10], [0], [0]])
        m1 = b["tasks"] == 1
        # fallback range [0, 2]: argmax = start 0 (covers step 1; ties earliest)
        assert (b["prompt_starts"][m1] == 0).all()
        np.testing.assert_array_equal(b["prompt_timesteps"][m1][0], [0, 1, 2, 3])
    b = s.sample_windows(8, window_len=3, prompt=PromptSpec(2, None, "last"), seed=0)
    m1 = b["tasks"] == 1
    assert (b["prompt_starts"][m1] == 4).all()
    # default start_min = context
    b = s.sample_windows(64, window_len=3, context_len=3, prompt=PromptSpec(2, None, "random"), seed=0)
    assert (b["prompt_starts"][b["tasks"] == 1] >= 3).all()


def test_online_add_step_and_capacity():
    s = TrajectoryStore(2, 1, capacity=25)
    rng = np.random.default_rng(0)
    closed = []
    # two interleaved streams (tasks 0 and 1), episodes of 10 steps
    for t in range(10 * 6):
        for task in (0, 1):
            o = rng.normal(size=2)
            done = (t % 10) == 9
            r = s.add_step(o, rng.normal(size=1), float(task), o + 1, done, task=task)
            if done:
                closed.append(r)
            else:
                assert r is None
            if t == 3:
                assert s.num_open_steps == 7 + task
                b = s.sample_transitions(200, context_len=2, seed=1)
                assert (b["episodes"] == -1).all() and set(np.unique(b["tasks"])) == {0, 1}
                with pytest.raises(ValueError):
                    s.sample_windows(2)  # no complete episode yet
    # capacity: at most 25 steps (closed + open), whole episodes evicted, oldest first
    assert s.num_steps + s.num_open_steps <= 25 + 10
    assert s.num_steps <= 25
    assert s.num_evicted == 12 - s.num_episodes
    assert (s.episode_lengths() == 10).all()
    b = s.sample_transitions(256, context_len=3, seed=3)
    assert b["obs"].shape == (256, 2)
    np.testing.assert_array_equal(b["rewards"], b["tasks"].astype(np.float32))
    assert s.column("obs").shape == (s.num_steps, 2)
    # terminal defaults to done
    assert s.column("terminals")[9] == 1.0
    # mismatched task on an open stream
    s.add_step(np.zeros(2), np.zeros(1), 0.0, np.zeros(2), False, task=0)
    with pytest.raises(ValueError, match="stream"):
        s.add_step(np.zeros(2), np.zeros(1), 0.0, np.zeros(2), False, task=1, stream=0)
    i = s.close_episode(0)
    assert s.episode_lengths()[i] == 1


def test_capacity_with_add_episode_and_attached_columns():
    s = TrajectoryStore(1, 1, capacity=50)
    for i in range(20):
        s.add_episode(np.full((10, 1), float(i)), np.zeros((10, 1)), np.ones(10), task=i % 3)
        if i == 2:
            s.attach_column("z", np.arange(30, dtype=np.float32))
    assert s.num_steps == 50 and s.num_episodes == 5 and s.num_evicted == 15
    np.testing.assert_array_equal(s.column("obs")[::10, 0], [15, 16, 17, 18, 19])
    assert s.episode_offsets().tolist() == [0, 10, 20, 30, 40]
    assert s.column("z").shape == (50, 1)
    b = s.sample_windows(64, window_len=4, columns=["z"], seed=0)
    assert (b["obs"][:, -1, 0] >= 15).all()
    # one episode longer than the capacity is kept (the newest is never evicted)
    s.add_episode(np.zeros((80, 1)), np.zeros((80, 1)), np.zeros(80))
    assert s.num_episodes == 1 and s.num_steps == 80


def test_save_load_roundtrip_and_format(tmp_path):
    s = make()
    s.attach_column("err", np.abs(np.random.default_rng(1).normal(size=(s.num_steps, 2))).astype(np.float32))
    s.set_metadata({"family": "point-robot", "tasks": [[0.1, 0.2]]})
    p = tmp_path / "store"
    s.save(p)
    m = json.loads((p / "manifest.json").read_text())
    assert m["format"] == "metadt-trajectory-store" and m["version"] == 2
    assert m["metadata"]["family"] == "point-robot"
    for f in m["files"]:
        raw = (p / f["file"]).read_bytes()
        assert zlib.crc32(raw) == f["crc32"] and len(raw) == f["bytes"]
        arr = np.load(p / f["file"])  # NumPy alone opens every file
        assert list(arr.shape) == f["shape"]
    np.testing.assert_array_equal(np.load(p / "obs.npy"), s.column("obs"))
    np.testing.assert_array_equal(np.load(p / "columns" / "err.npy"), s.column("err"))
    for mmap in (True, False):
        t = TrajectoryStore.load(p, mmap=mmap)
        assert t.num_episodes == s.num_episodes and t.metadata == s.metadata
        np.testing.assert_array_equal(t.episode_returns(), s.episode_returns())
        assert (t.mapped_bytes() > 0) == mmap
        # loaded stores are appendable (mmap: copy on first write); file untouched
        t.add_episode(np.ones((4, OD)), np.ones((4, AD)), np.ones(4), task=5)
        assert t.num_episodes == s.num_episodes + 1 and 5 in t.tasks()
        np.testing.assert_array_equal(np.load(p / "obs.npy"), s.column("obs"))
    # saving over an existing store replaces it atomically
    t = TrajectoryStore.load(p)
    t.add_episode(np.ones((4, OD)), np.ones((4, AD)), np.ones(4), task=5)
    t.save(p)
    u = TrajectoryStore.load(p, verify=True)
    assert u.num_episodes == s.num_episodes + 1
    assert not [x for x in os.listdir(tmp_path) if x.startswith(".")]


def _corrupt(p, how):
    if how == "flip":
        f = p / "obs.npy"
        b = bytearray(f.read_bytes())
        b[-3] ^= 0xFF
        f.write_bytes(bytes(b))
        return "obs.npy", "CRC"
    if how == "truncate":
        f = p / "rewards.npy"
        f.write_bytes(f.read_bytes()[:-8])
        return "rewards.npy", "truncated"
    if how == "version":
        m = json.loads((p / "manifest.json").read_text())
        m["version"] = 99
        (p / "manifest.json").write_text(json.dumps(m))
        return "manifest.json", "version 99"
    if how == "format":
        m = json.loads((p / "manifest.json").read_text())
        m["format"] = "something-else"
        (p / "manifest.json").write_text(json.dumps(m))
        return "manifest.json", "format"
    if how == "shape":
        np.save(p / "actions.npy", np.zeros((3, AD), np.float32))
        return "actions.npy", ""
    if how == "dtype":
        np.save(p / "rtg.npy", np.zeros(10, np.float64))
        return "rtg.npy", ""
    if how == "json":
        (p / "manifest.json").write_text("{not json")
        return "manifest.json", "JSON"
    if how == "header":
        f = p / "next_obs.npy"
        b = bytearray(f.read_bytes())
        b[0:6] = b"XXXXXX"
        f.write_bytes(bytes(b))
        return "next_obs.npy", ""
    if how == "lengths":
        m = json.loads((p / "manifest.json").read_text())
        m["num_steps"] = m["num_steps"] + 1
        (p / "manifest.json").write_text(json.dumps(m))
        return "", ""
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip", "truncate", "version", "format", "shape", "dtype", "json", "header", "lengths"])
@pytest.mark.parametrize("mmap", [True, False])
def test_corrupt_files_raise_clear_errors(tmp_path, how, mmap):
    s = make()
    p = tmp_path / "store"
    s.save(p)
    fname, words = _corrupt(p, how)
    with pytest.raises(ValueError) as info:
        TrajectoryStore.load(p, mmap=mmap, verify=True)
    msg = str(info.value)
    assert fname in msg and words in msg, msg


def test_flip_undetected_without_verify_is_documented(tmp_path):
    s = make()
    p = tmp_path / "store"
    s.save(p)
    _corrupt(p, "flip")
    TrajectoryStore.load(p, mmap=True)  # mmap default: checksums are not read (verify=True to check)
    with pytest.raises(ValueError, match="CRC"):
        TrajectoryStore.load(p, mmap=False)  # default verify = not mmap


def test_missing_store_and_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        TrajectoryStore.load(tmp_path / "nope")
    s = make()
    p = tmp_path / "store"
    s.save(p)
    (p / "terminals.npy").unlink()
    with pytest.raises(FileNotFoundError, match="terminals.npy"):
        TrajectoryStore.load(p)


def test_segments_follow_the_short_episode_rule():
    """segment_scores enumerates the prompt sampler's candidate starts (segment_range): an
    episode with T < start_min + k has the starts [0, T-k], one with T < k its whole self."""
    from metadt.data import segment_range

    s = TrajectoryStore(1, 1)
    for T in (1, 3, 5, 8):
        s.add_episode(np.zeros((T, 1)), np.zeros((T, 1)), np.arange(T, dtype=np.float32), task=0)
    seg = s.segment_scores("rewards", length=4, start_min=2)
    assert seg["episodes"].tolist() == [0, 1, 2, 2, 3, 3, 3]
    assert seg["starts"].tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert seg["scores"].tolist() == [0, 0 + 1 + 2, 0 + 1 + 2 + 3, 1 + 2 + 3 + 4,
                                      2 + 3 + 4 + 5, 3 + 4 + 5 + 6, 4 + 5 + 6 + 7]
    assert [segment_range(T, 4, 2) for T in (1, 3, 5, 8)] == [None, None, (0, 1), (2, 4)]
    best = s.best_segments("rewards", length=4, start_min=2, per="episode")
    assert best["keys"].tolist() == [0, 1, 2, 3] and best["starts"].tolist() == [0, 0, 1, 4]
    whole = s.best_segments("rewards", length=50)
    assert whole["starts"].tolist() == [0] and whole["episodes"].tolist() == [3]
    # the prompt sampler picks the same segments (argmax over the same candidates)
    s.attach_column("score", np.asarray(s.column("rewards")).reshape(-1, 1))
    b = s.sample_windows(64, window_len=2, prompt=PromptSpec(4, "score", "argmax", start_min=2), seed=0)
    for e, st in zip(b["prompt_episodes"].tolist(), b["prompt_starts"].tolist()):
        assert st == best["starts"][e]


def test_prefetch_matches_sampler_and_stops():
    s = make(n_eps=10, lengths=[50] * 10)
    for anchor in ("end", "start"):
        kw = dict(batch=32, window_len=8, context_len=2, return_scale=10.0, anchor=anchor)
        with s.prefetch("windows", depth=3, num_batches=5, seed=11, **kw) as it:
            got = list(it)
        assert len(got) == 5
        for i, b in enumerate(got):
            want = s.sample_windows(seed=derive_seed(11, i), **kw)
            for k in want:
                np.testing.assert_array_equal(b[k], want[k], err_msg=k)
    kw = dict(batch=32, window_len=8, context_len=2, return_scale=10.0)
    it = s.prefetch("transitions", batch=16, context_len=4, seed=1)
    a = next(it)
    np.testing.assert_array_equal(a["obs"], s.sample_transitions(16, context_len=4, seed=derive_seed(1, 0))["obs"])
    assert it.index == 1
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # idempotent
    # garbage collection of a running prefetcher does not hang
    it = s.prefetch("windows", batch=8, window_len=4, seed=2)
    next(it)
    del it
    gc.collect()
    assert threading.active_count() >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_prefetch_and_parallel_sampling_survive_fork():
    s = make(n_eps=20, lengths=[200] * 20)
    s.sample_windows(4096, window_len=20, context_len=4, seed=1)  # parent uses the rayon pool
    it = s.prefetch("windows", batch=64, window_len=8, seed=3, num_batches=6)
    first = next(it)
    other = s.prefetch("transitions", batch=32, seed=5)  # running in the parent, dropped in the child
    next(other)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            big = s.sample_windows(4096, window_len=20, context_len=4, seed=1)  # serial in the child, must not hang
            ok = big["obs"].shape == (4096, 20, OD)
            rest = list(it)  # restarted worker in the child
            ok = ok and len(rest) == 5
            want = s.sample_windows(64, window_len=8, seed=derive_seed(3, 1))
            ok = ok and np.array_equal(rest[0]["obs"], want["obs"])
            ok = ok and not metadt.data.parallel_available()
            del other
            gc.collect()
            code = 0 if ok else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    import select
    ready, _, _ = select.select([r], [], [], 60)
    assert ready, "forked child hung"
    code = os.read(r, 1)[0]
    os.waitpid(pid, 0)
    assert code == 0
    assert first["obs"].shape == (64, 8, OD)
    assert len(list(it)) == 5
    assert metadt.data.parallel_available()
    other.close()


def test_sampling_releases_gil():
    s = make(n_eps=40, lengths=[200] * 40)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.0005)

    th = threading.Thread(target=ticker)
    th.start()
    for _ in range(20):
        s.sample_windows(8192, window_len=20, context_len=4, seed=1)
    stop.set()
    th.join()
    assert len(ticks) > 5


def test_memory_close_to_raw_bytes():
    s = TrajectoryStore(20, 6)
    rng = np.random.default_rng(0)
    for _ in range(200):
        s.add_episode(rng.normal(size=(200, 20)).astype(np.float32), rng.normal(size=(200, 6)).astype(np.float32),
                      rng.normal(size=200).astype(np.float32))
    assert s.memory_bytes() <= 1.2 * s.raw_bytes()
    s.shrink_to_fit()
    assert s.memory_bytes() <= 1.01 * s.raw_bytes()


def test_concurrent_sampling_and_appending_threads():
    s = make(n_eps=10, lengths=[100] * 10)
    errors = []

    def sampler():
        try:
            for _ in range(50):
                b = s.sample_windows(256, window_len=10, context_len=2, seed=None)
                assert b["obs"].shape == (256, 10, OD)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ths = [threading.Thread(target=sampler) for _ in range(3)]
    for t in ths:
        t.start()
    for i in range(50):
        s.add_episode(np.zeros((20, OD)), np.zeros((20, AD)), np.zeros(20), task=i % 3)
    for t in ths:
        t.join()
    assert not errors, errors
    assert s.num_episodes == 60


def test_empty_store_roundtrip(tmp_path):
    s = TrajectoryStore(4, 2, capacity=100)
    s.set_metadata({"empty": True})
    s.save(tmp_path / "e")
    for mmap in (True, False):
        t = TrajectoryStore.load(tmp_path / "e", mmap=mmap, verify=True)
        assert t.num_steps == 0 and t.num_episodes == 0 and t.capacity == 100
        assert t.column("obs").shape == (0, 4) and t.metadata == {"empty": True}
        t.add_episode(np.ones((3, 4)), np.ones((3, 2)), np.ones(3))
        assert t.sample_windows(2, window_len=2, seed=0)["obs"].shape == (2, 2, 4)


def test_metadata_property_and_float64_inputs():
    s = TrajectoryStore(2, 1)
    s.metadata = {"a": [1, 2], "b": {"c": "d"}}
    assert s.metadata == {"a": [1, 2], "b": {"c": "d"}}
    obs = np.random.default_rng(0).normal(size=(5, 2))  # float64
    s.add_episode(obs, np.zeros((5, 1)), np.ones(5))
    np.testing.assert_array_equal(s.column("obs"), obs.astype(np.float32))
    # non-contiguous input
    big = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    s.add_episode(big[:, ::2], np.zeros((5, 1), np.float32), np.ones(5, np.float32))
    np.testing.assert_array_equal(s.column("obs")[5:], big[:, ::2])
    # add_step accepts lists and numpy scalars
    s.add_step([0.0, 1.0], [0.5], np.float32(1.0), [1.0, 1.0], False)
    s.add_step(np.zeros(2), np.zeros(1), np.array([2.0]), np.zeros(2), True)
    assert s.num_episodes == 3 and s.episode_returns()[2] == 3.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("parent_batch", [8, 4096])
def test_child_of_fork_never_hangs(parent_batch):
    s = make(n_eps=20, lengths=[200] * 20)
    s.sample_windows(parent_batch, window_len=20, context_len=4, seed=1)
    s.sample_transitions(parent_batch, context_len=4, seed=1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            a = s.sample_windows(4096, window_len=20, context_len=4, seed=1)
            b = s.sample_transitions(8192, context_len=4, seed=1)
            code = 0 if a["obs"].shape[0] == 4096 and b["obs"].shape[0] == 8192 else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    import select
    ready, _, _ = select.select([r], [], [], 60)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert ready, "forked child hung"
    assert os.read(r, 1)[0] == 0


@pytest.mark.parametrize("bad", [
    lambda s: s.sample_windows(-1),
    lambda s: s.sample_windows(4, window_len=-2),
    lambda s: s.sample_windows(4, context_len=-1),
    lambda s: s.sample_transitions(-5),
    lambda s: s.sample_transitions(4, context_len=-1),
    lambda s: s.segment_scores("rewards", -1),
    lambda s: s.best_segments("rewards", 2, start_min=-1),
    lambda s: s.top_episodes(0, -1),
    lambda s: s.prefetch("windows", depth=-1, batch=4),
    lambda s: s.prefetch("windows", batch=-4),
    lambda s: s.sample_windows(4, prompt=(-3, None, "random")),
    lambda s: s.sample_windows(4, prompt={"length": 3, "start_min": -1}),
    lambda s: s.sample_windows(4, prompt={"length": 3, "pool": [-1]}),
    lambda s: s.attach_column("episode_offsets", np.zeros(s.num_steps)),
    lambda s: s.attach_column("a..b", np.zeros(s.num_steps)),
    lambda s: s.attach_column(".hidden", np.zeros(s.num_steps)),
    lambda s: TrajectoryStore(-1, 2),
    lambda s: TrajectoryStore(2, 2, capacity=-5),
])
def test_negative_and_reserved_arguments_are_value_errors(bad):
    s = make()
    before = snapshot(s)
    with pytest.raises(ValueError):
        bad(s)
    same(before, snapshot(s))


def test_dotted_column_names_round_trip(tmp_path):
    s = make()
    s.attach_column("z.v1", np.ones(s.num_steps))
    s.save(tmp_path / "s")
    t = TrajectoryStore.load(tmp_path / "s")
    np.testing.assert_array_equal(t.column("z.v1"), s.column("z.v1"))


def test_huge_batches_are_clean_errors():
    s = make()
    with pytest.raises((ValueError, MemoryError)):
        s.sample_windows(2**62, window_len=20)
    with pytest.raises((ValueError, MemoryError)):
        s.sample_windows(2**40, window_len=2**30)
    with pytest.raises((ValueError, MemoryError)):
        s.sample_transitions(2**50, context_len=2**20)
    assert s.sample_windows(2, window_len=3, seed=0)["obs"].shape == (2, 3, OD)


def test_interpreter_exits_with_live_prefetchers():
    import subprocess

    code = (
        "import numpy as np, metadt\n"
        "s = metadt.TrajectoryStore(2, 1)\n"
        "s.add_episode(np.zeros((50, 2)), np.zeros((50, 1)), np.ones(50))\n"
        "it = s.prefetch('windows', depth=4, batch=4096, window_len=20, context_len=4)\n"
        "next(it)\n"
        "it2 = s.prefetch('transitions', batch=64)\n"
        "cycle = [it2]; cycle.append(cycle)\n"  # kept alive by a reference cycle until exit
        "next(it2)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_step_contexts_torch_and_numpy_agree():
    torch = pytest.importorskip("torch")
    from metadt.data import step_contexts

    s = make(n_eps=4, lengths=[3, 9, 20, 40])
    b = s.sample_windows(16, window_len=6, context_len=3, seed=2)
    for key in ("ctx_obs", "ctx_rewards", "ctx_mask"):
        v = step_contexts(b[key], 3)
        t = step_contexts(torch.as_tensor(b[key]), 3)
        assert tuple(v.shape) == (16, 6, 3) + b[key].shape[2:]
        np.testing.assert_array_equal(t.numpy(), v)
        assert np.shares_memory(v, b[key])
    with pytest.raises(ValueError):
        step_contexts(b["ctx_obs"], 0)


def test_prefetch_with_prompt_columns_and_tasks():
    s = make(n_eps=8, lengths=[30 + 5 * i for i in range(8)], tasks=3)
    s.attach_column("err", np.abs(np.random.default_rng(3).normal(size=s.num_steps)).astype(np.float32))
    kw = dict(batch=16, window_len=6, context_len=2, return_scale=5.0, columns=["err"],
              prompt=PromptSpec(4, "err", "proportional"), tasks=[0, 2])
    with s.prefetch("windows", num_batches=3, seed=4, **kw) as it:
        got = list(it)
    for i, b in enumerate(got):
        want = s.sample_windows(seed=derive_seed(4, i), **kw)
        assert set(b) == set(want)
        for k in want:
            np.testing.assert_array_equal(b[k], want[k], err_msg=k)
        assert set(np.unique(b["tasks"])) <= {0, 2}
