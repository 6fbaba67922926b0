"""Regression tests of issue 19 (store half): hostile arguments and hostile files.

Every case here once crashed the process, panicked, hung, escaped the store's
directory, deleted data it did not own, or silently returned a wrong shape.
Cases that could crash or hang run in a fresh interpreter (store_files.run_isolated).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import metadt
from metadt import PromptSpec, TrajectoryStore
from metadt.data.dataset import Dataset, DatasetCard, write_dataset

from store_files import (entry, manifest, patch_values, refresh_entry, rewrite_npy, run_isolated, small_store,
                         write_manifest)

# ------------------------------------------------------------------ 1. batch-key names

BATCH_KEY_NAMES = ["tasks", "episodes", "timesteps", "mask", "ctx_obs", "ctx_actions", "ctx_rewards", "ctx_mask",
                   "ctx_anything", "prompt_obs", "prompt_mask", "prompt_starts", "prompt_x",
                   "obs", "rtg", "episode_lengths"]


@pytest.mark.parametrize("name", BATCH_KEY_NAMES)
def test_batch_key_names_are_refused_by_attach_column(name):
    s = small_store(columns=())
    with pytest.raises(ValueError, match="reserved"):
        s.attach_column(name, np.ones(s.num_steps, np.float32))
    assert s.columns() == []


def test_sampling_batch_key_names_never_corrupts_memory():
    # the original crash: attach "mask"/"timesteps"/... then sample with columns=[name]
    # (a duplicate dict key freed an array Rust still wrote through); every attempt is refused
    code = """
import numpy as np
from store_files import small_store
s = small_store(lengths=(30,) * 20, columns=())
names = %r
for name in names:
    try:
        s.attach_column(name, np.ones(s.num_steps, np.float32))
    except ValueError:
        pass
    for _ in range(20):
        for cols in ([name], [name, name]):
            try:
                b = s.sample_windows(256, window_len=20, context_len=4, columns=cols, prompt=(3, None, "random"), seed=1)
            except ValueError:
                continue
            raise SystemExit("accepted " + repr(cols))
b = s.sample_windows(256, window_len=20, context_len=4, seed=1)
assert b["mask"].dtype == np.bool_ and b["mask"][:, -1].all()
print("ok")
""" % (BATCH_KEY_NAMES,)
    r = run_isolated(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


# ------------------------------------------------------------------ 2. sizes

@pytest.mark.parametrize("kwargs, err", [
    (dict(window_len=20, context_len=2**64 - 5), ValueError),     # once: a window of 15 steps
    (dict(window_len=2**64 - 1, context_len=1), ValueError),
    (dict(window_len=2**63, context_len=2**63), ValueError),
    (dict(window_len=2**64 - 1), MemoryError),
    (dict(window_len=2**63), MemoryError),
    (dict(window_len=2**31, context_len=2**31), MemoryError),
    (dict(batch=2**63), MemoryError),
    (dict(batch=2**40, window_len=1), MemoryError),            # larger than the machine: refused before allocating
    (dict(batch=2**64), ValueError),
    (dict(batch=-1), ValueError),
    (dict(seed=2**64), ValueError),
    (dict(seed=-1), ValueError),
])
def test_huge_sizes_are_clean_errors(kwargs, err):
    s = small_store()
    kw = dict(batch=4, window_len=3)
    kw.update(kwargs)
    with pytest.raises(err):
        s.sample_windows(kw.pop("batch"), **kw)


def test_huge_sizes_elsewhere_are_clean_errors():
    s = small_store()
    with pytest.raises(MemoryError):
        s.sample_transitions(2**40, context_len=4)
    with pytest.raises(MemoryError):
        s.sample_transitions(8, context_len=2**62)
    with pytest.raises(ValueError):
        s.prefetch(batch=4, depth=2**62)
    with pytest.raises(MemoryError):                       # depth x batch bytes beyond the machine
        s.prefetch(batch=2**26, window_len=20, depth=1024)
    with pytest.raises(ValueError):
        TrajectoryStore(2**40, 1)
    with pytest.raises(ValueError):
        TrajectoryStore(1, 2**64 - 1)
    with pytest.raises(ValueError):
        s.reseed(2**64)
    empty = TrajectoryStore(1, 1)
    with pytest.raises(ValueError):                         # a 0-row column 2^25 wide
        empty.attach_column("wide", np.zeros((0, 2**25), np.float32))


def test_huge_start_min_falls_back_instead_of_wrapping():
    s = small_store(lengths=(5, 8, 3))
    lengths = s.episode_lengths()
    for start_min in (2**63, 2**64 - 1, 2**64 - 3):
        # segment_scores: the same fallback as prompts, [0, T-k] (never a wrapped start)
        seg = s.segment_scores("rewards", 2, start_min=start_min)
        want = [st for T in lengths for st in range(T - 1)]
        assert seg["starts"].tolist() == want
        # prompts: T < start_min + k, so candidates fall back to [0, T-k] (the documented rule)
        b = s.sample_windows(64, window_len=2, prompt=PromptSpec(2, None, "last", start_min=start_min), seed=0)
        ends = lengths[b["prompt_episodes"]] - 2
        np.testing.assert_array_equal(b["prompt_starts"], np.maximum(ends, 0))
        b = s.sample_windows(64, window_len=2, prompt=(2, "err", "argmax", start_min), seed=0)
        assert ((b["prompt_starts"] >= 0) & (b["prompt_starts"] <= np.maximum(lengths[b["prompt_episodes"]] - 2, 0))).all()


# ------------------------------------------------------------------ 3. crafted files

@pytest.fixture
def saved(tmp_path):
    s = small_store()
    d = tmp_path / "store"
    s.save(d)
    return s, d


def test_manifest_claiming_2_62_steps_without_data(saved):
    _, d = saved
    m = manifest(d)
    n = 2**62
    m["num_steps"] = n
    for f in m["files"]:
        if f["shape"] and f["name"] not in ("episode_offsets", "episode_lengths", "episode_tasks", "episode_returns"):
            f["shape"][0] = n
    write_manifest(d, m)
    with pytest.raises(ValueError, match="needs more bytes"):
        TrajectoryStore.load(d, mmap=True)
    with pytest.raises(MemoryError, match="mmap=True"):     # refused before reading anything
        TrajectoryStore.load(d, mmap=False)


def test_episode_lengths_whose_sum_wraps(saved):
    s, d = saved
    n = s.num_steps
    big = 2**62
    m = manifest(d)
    m["num_episodes"] = 5
    write_manifest(d, m)
    rewrite_npy(d, "episode_lengths", np.array([big, big, big, big, n], np.int64))
    rewrite_npy(d, "episode_offsets", np.array([0, big, 2 * big - 1, 0, 0], np.int64))
    rewrite_npy(d, "episode_tasks", np.zeros(5, np.int64))
    rewrite_npy(d, "episode_returns", np.zeros(5, np.float64))
    for mmap in (True, False):
        with pytest.raises(ValueError, match="episode"):
            TrajectoryStore.load(d, mmap=mmap)
    # offsets made to wrap along with the lengths (as unsigned) are refused too
    rewrite_npy(d, "episode_offsets", np.array([0, big, 2 * big, 3 * big, 0], np.uint64).view(np.int64))
    with pytest.raises(ValueError, match="episode"):
        TrajectoryStore.load(d)


def test_huge_sparse_store(tmp_path):
    # a structurally valid store claiming 2^36 steps in sparse files: memory-mapped it is
    # a (zero) store; read into memory it is larger than the machine: a clean MemoryError-free refusal
    s = TrajectoryStore(1, 1)
    s.add_episode(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1))
    d = tmp_path / "sparse"
    s.save(d)
    n = 2**36
    m = manifest(d)
    m["num_steps"] = n
    for f in m["files"]:
        path = d / f["file"]
        if f["name"] in ("obs", "actions", "rewards", "next_obs", "terminals", "truncations", "rtg"):
            f["shape"][0] = n
            raw = path.read_bytes()
            hdr = raw[: len(raw) - 4]
            body = hdr[10:].replace(b"(1, 1)", b"(%d, 1)" % n).replace(b"(1,)", b"(%d,)" % n).rstrip()
            head = hdr[:10] + body.ljust(len(hdr) - 11) + b"\n"  # same header length (padding absorbs it)
            path.write_bytes(head)
            with open(path, "r+b") as fh:
                fh.truncate(len(head) + 4 * n)
            f["bytes"] = len(head) + 4 * n
    write_manifest(d, m)
    rewrite_npy(d, "episode_lengths", np.array([n], np.int64))
    with pytest.raises(MemoryError, match="memory"):
        TrajectoryStore.load(d, mmap=False, verify=False)
    big = TrajectoryStore.load(d, mmap=True)
    assert big.num_steps == n
    b = big.sample_windows(8, window_len=4, seed=0)
    assert b["obs"].shape == (8, 4, 1) and not b["obs"].any()
    # work proportional to the episode length is bounded before allocating
    with pytest.raises(MemoryError):
        big.segment_scores("rewards", 1)
    with pytest.raises(MemoryError):
        big.sample_windows(8, window_len=4, prompt=(3, None, "argmax"), seed=0)
    b = big.sample_windows(8, window_len=4, prompt=(3, None, "random"), seed=0)
    assert (b["prompt_starts"] <= n - 3).all()


@pytest.mark.parametrize("what", ["obs.npy", "manifest.json", "columns/err.npy", "episode_lengths.npy"])
def test_fifo_in_place_of_a_file_does_not_hang(saved, what):
    _, d = saved
    (d / what).unlink()
    os.mkfifo(d / what)
    code = f"""
import metadt
for mmap in (True, False):
    for verify in (False, True):
        try:
            metadt.TrajectoryStore.load({str(d)!r}, mmap=mmap, verify=verify)
        except ValueError as e:
            assert "FIFO" in str(e), e
        else:
            raise SystemExit("loaded")
print("ok")
"""
    r = run_isolated(code, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.parametrize("what", ["obs.npy", "manifest.json", "columns/err.npy", "columns", "episode_tasks.npy"])
def test_symlinks_inside_a_store_are_refused(saved, tmp_path, what):
    _, d = saved
    outside = tmp_path / "outside"
    shutil.copytree(d, outside)
    target = d / what
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    os.symlink(outside / what, target)
    for mmap in (True, False):
        with pytest.raises(ValueError, match="symbolic link"):
            TrajectoryStore.load(d, mmap=mmap, verify=True)


def test_the_store_directory_itself_may_be_a_symlink(saved, tmp_path):
    s, d = saved
    link = tmp_path / "link"
    os.symlink(d, link)
    assert TrajectoryStore.load(link).num_steps == s.num_steps


@pytest.mark.parametrize("kind", ["directory", "device-like missing"])
def test_wrong_file_types_are_refused(saved, kind):
    _, d = saved
    (d / "rtg.npy").unlink()
    if kind == "directory":
        (d / "rtg.npy").mkdir()
        with pytest.raises(ValueError, match="directory"):
            TrajectoryStore.load(d)
    else:
        with pytest.raises(FileNotFoundError):
            TrajectoryStore.load(d)


@pytest.mark.parametrize("bad", ["../../pwned", "../pwned", "a/b", "mask", "ctx_obs", "prompt_mask", "_x", ".x",
                                 "", "x" * 300, "obs", "episode_tasks", "a\\b", "é"])
def test_manifest_column_names_follow_the_api_rule(saved, tmp_path, bad):
    s, d = saved
    m = manifest(d)
    m["attached_columns"][0]["name"] = bad
    entry(m, "err")["name"] = bad
    entry(m, bad)["file"] = f"columns/{bad}.npy"
    write_manifest(d, m)
    with pytest.raises(ValueError, match="column name"):
        TrajectoryStore.load(d)
    with pytest.raises(ValueError):
        s.attach_column(bad, np.ones(s.num_steps, np.float32))


def test_manifest_file_names_cannot_point_elsewhere(saved, tmp_path):
    _, d = saved
    outside = tmp_path / "outside"
    shutil.copytree(d, outside)
    for name, file in [("obs", "../outside/obs.npy"), ("obs", str(outside / "obs.npy")), ("obs", "actions.npy"),
                       ("err", "columns/../obs.npy"), ("err", "err.npy")]:
        m = manifest(d)
        good = entry(m, name)["file"]
        entry(m, name)["file"] = file
        write_manifest(d, m)
        with pytest.raises(ValueError, match="expected"):
            TrajectoryStore.load(d)
        entry(m, name)["file"] = good
        write_manifest(d, m)
    TrajectoryStore.load(d, verify=True)


def test_save_of_a_crafted_store_never_writes_outside(saved, tmp_path):
    # before: a manifest column named ../../pwned made a later save write outside its target
    s, d = saved
    m = manifest(d)
    m["attached_columns"][0]["name"] = "../../pwned"
    entry(m, "err").update(name="../../pwned", file="columns/../../pwned.npy")
    write_manifest(d, m)
    with pytest.raises(ValueError):
        TrajectoryStore.load(d).save(tmp_path / "a" / "b" / "copy")
    assert not list(tmp_path.rglob("pwned*"))


@pytest.mark.parametrize("field, value, match", [
    ("capacity", -5, "capacity"), ("capacity", 0, "capacity"), ("capacity", "big", "capacity"),
    ("capacity", 1.5, "capacity"), ("num_steps", -1, "num_steps"), ("num_steps", 2**64, "num_steps"),
    ("num_episodes", 10**6, "episodes"), ("obs_dim", 0, "obs_dim"), ("obs_dim", 2**40, "obs_dim"),
    ("act_dim", -2, "act_dim"), ("version", 3, "version"), ("format", "zarr", "format"),
    ("metadata", [1, 2], "metadata"), ("attached_columns", {"a": 1}, "attached_columns"),
    ("files", None, "files"),
])
def test_manifest_fields_are_validated(saved, field, value, match):
    _, d = saved
    m = manifest(d)
    m[field] = value
    write_manifest(d, m)
    for mmap in (True, False):
        with pytest.raises(ValueError, match=match):
            TrajectoryStore.load(d, mmap=mmap)


def test_manifest_entries_are_validated(saved):
    _, d = saved
    edits = [
        lambda m: m["attached_columns"][0].update(width=0),
        lambda m: m["attached_columns"][0].update(width=2**40),
        lambda m: m["attached_columns"][0].update(nonneg="yes"),
        lambda m: m["attached_columns"].append(dict(m["attached_columns"][0])),
        lambda m: m["attached_columns"].append({"name": "ERR", "width": 2}),
        lambda m: m["files"].append(dict(m["files"][0])),
        lambda m: m["files"].append({"name": "extra", "file": "extra.npy"}),
        lambda m: entry(m, "obs").update(shape=[-1, 2]),
        lambda m: entry(m, "obs").update(shape=["13", 2]),
        lambda m: entry(m, "obs").pop("crc32"),
        lambda m: entry(m, "obs").update(crc32=2**40),
        lambda m: entry(m, "obs").update(bytes=-1),
        lambda m: entry(m, "rewards").update(dtype="<f8"),
    ]
    original = manifest(d)
    for edit in edits:
        m = json.loads(json.dumps(original))
        edit(m)
        write_manifest(d, m)
        with pytest.raises(ValueError):
            TrajectoryStore.load(d)
    write_manifest(d, original)
    TrajectoryStore.load(d, verify=True)
    (d / "manifest.json").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ValueError, match="UTF-8|JSON"):
        TrajectoryStore.load(d)
    (d / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="JSON"):
        TrajectoryStore.load(d)


def test_dataset_card_store_path_must_stay_inside(tmp_path):
    s = small_store(columns=())
    card = DatasetCard(family="point-robot", family_seed=0, obs_dim=2, act_dim=1, horizon=20,
                       tasks=[{"goal": [0, 0]}, {"goal": [1, 1]}], train_ids=[0], test_ids=[1])
    ds_dir = tmp_path / "ds"
    write_dataset(ds_dir, card, {"expert": s})
    elsewhere = tmp_path / "elsewhere"
    s.save(elsewhere)
    assert Dataset.open(ds_dir).store("expert").num_steps == s.num_steps
    for bad in ["../elsewhere", str(elsewhere), "a/../expert", ".", "..", "", 5, None]:
        ds = Dataset.open(ds_dir)
        ds.card.qualities["expert"]["store"] = bad
        with pytest.raises(ValueError, match="store"):
            ds.store("expert")
    os.symlink(elsewhere, ds_dir / "linked")
    ds = Dataset.open(ds_dir)
    ds.card.qualities["expert"]["store"] = "linked"
    with pytest.raises(ValueError, match="symbolic link"):
        ds.store("expert")


# ------------------------------------------------------------------ 4. save never deletes what it does not own

def test_save_refuses_a_regular_file(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("my thesis")
    with pytest.raises(FileExistsError, match="not a directory|regular file"):
        small_store().save(target)
    assert target.read_text() == "my thesis"


def test_save_refuses_a_directory_that_is_not_a_store(tmp_path):
    target = tmp_path / "photos"
    (target / "2024").mkdir(parents=True)
    (target / "2024" / "a.jpg").write_bytes(b"jpeg")
    (target / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FileExistsError, match="not a metadt store"):
        small_store().save(target)
    assert (target / "2024" / "a.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]    # no temporary left behind


def test_save_refuses_a_symlink_and_keeps_its_target(tmp_path):
    real = tmp_path / "real"
    small_store(seed=1).save(real)
    before = manifest(real)
    os.symlink(real, tmp_path / "link")
    with pytest.raises(FileExistsError, match="symbolic link"):
        small_store(seed=2).save(tmp_path / "link")
    assert manifest(real) == before and (tmp_path / "link").is_symlink()


def test_save_replaces_a_store_or_an_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    s1, s2 = small_store(seed=1), small_store(lengths=(4,), seed=2)
    s1.save(empty)
    assert TrajectoryStore.load(empty).num_steps == s1.num_steps
    s2.save(empty)      # now a store: replaced
    assert TrajectoryStore.load(empty, verify=True).num_steps == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ------------------------------------------------------------------ 5. verify and other rough edges

@pytest.mark.parametrize("name, value", [("obs", np.nan), ("actions", np.inf), ("next_obs", -np.inf),
                                         ("terminals", np.nan), ("err", np.nan)])
def test_verify_rejects_non_finite_values(saved, name, value):
    _, d = saved

    def put(a):
        a.reshape(-1)[3] = value

    patch_values(d, name, put)
    TrajectoryStore.load(d)            # the default mmap load checks structure only (documented)
    for mmap in (True, False):
        with pytest.raises(ValueError, match="non-finite"):
            TrajectoryStore.load(d, mmap=mmap, verify=True)


def test_verify_rejects_rtg_and_returns_that_do_not_match_the_rewards(saved):
    s, d = saved
    patch_values(d, "rtg", lambda a: a.__setitem__(2, a[2] + 1))
    with pytest.raises(ValueError, match="return-to-go"):
        TrajectoryStore.load(d, verify=True)
    s.save(d)
    patch_values(d, "episode_returns", lambda a: a.__setitem__(1, a[1] * 2 + 1))
    with pytest.raises(ValueError, match="return"):
        TrajectoryStore.load(d, verify=True)
    s.save(d)
    patch_values(d, "rewards", lambda a: a.__setitem__(0, a[0] + 1))
    with pytest.raises(ValueError, match="return-to-go"):
        TrajectoryStore.load(d, verify=True)


def test_verify_rejects_a_false_nonneg_flag(saved):
    s, d = saved
    patch_values(d, "err", lambda a: a.__setitem__((0, 0), -1.0))
    loaded = TrajectoryStore.load(d)
    # the flag is trusted without verify (scoring stays memory-safe); verify catches the lie
    loaded.sample_windows(8, window_len=2, prompt=(2, "err", "proportional"), seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        TrajectoryStore.load(d, verify=True)


def test_verify_accepts_every_store_save_writes(tmp_path):
    s = small_store(lengths=(1, 7, 200), columns=("a", "b.c"))
    s.add_episode(np.zeros((3, 2)), np.zeros((3, 1)), np.array([1e30, -1e30, 3.0]), task=5)
    s.metadata = {"x": [1, 2]}
    s.save(tmp_path / "s")
    for mmap in (True, False):
        t = TrajectoryStore.load(tmp_path / "s", mmap=mmap, verify=True)
        np.testing.assert_array_equal(t.column("rtg"), s.column("rtg"))
        assert t.columns() == ["a", "b.c"] and t.metadata == {"x": [1, 2]}


def test_column_names_differing_only_in_case_are_refused():
    s = small_store(columns=("err",))
    with pytest.raises(ValueError, match="case"):
        s.attach_column("ERR", np.ones(s.num_steps, np.float32))
    s.attach_column("err", np.zeros(s.num_steps, np.float32))     # replacing the same name is fine


def test_save_over_a_store_never_deletes_through_its_symlinks(tmp_path):
    target = tmp_path / "store"
    small_store(seed=1).save(target)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.bin").write_bytes(b"keep")
    os.symlink(precious, target / "columns-link")          # planted inside an existing store
    small_store(seed=2).save(target)
    assert (precious / "data.bin").read_bytes() == b"keep"
    assert not (target / "columns-link").exists()


def test_save_over_a_fifo_manifest_does_not_hang(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    os.mkfifo(target / "manifest.json")
    code = f"""
from store_files import small_store
try:
    small_store().save({str(target)!r})
except FileExistsError as e:
    print("refused")
"""
    r = run_isolated(code, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stderr[-2000:]
    assert (target / "manifest.json").exists()
