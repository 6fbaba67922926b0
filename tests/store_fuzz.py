"""Fuzz campaign of the trajectory store's public API and on-disk format (issue 19).

Drives `metadt.TrajectoryStore` with random argument values (small ones and
the boundaries around 2^31, 2^63, 2^64, negatives, 0, wrong types) and saved
stores with random manifest edits, byte flips and file-type swaps (FIFO,
symlink out of the store, directory, empty, truncated, huge sparse file), and
asserts that every call either succeeds *correctly* (batches checked against
the store's columns, invariants of loaded stores, a verified load never
accepts a flipped byte, nothing outside the sandbox changes) or raises an
ordinary Python exception (an `Exception`; pyo3's PanicException is not one).

Run it in a subprocess (a crash must not take the test runner down):

    python tests/store_fuzz.py --seconds 40 --log /tmp/fuzz-calls.log   # prints a JSON summary
    python tests/store_fuzz.py --rounds 20,12                             # the suite's fixed budget
    METADT_FUZZ_SECONDS=1800 python -m pytest tests/test_store_fuzz.py    # a long campaign

Each call is appended to --log (flushed) before it runs, so the last line
names the call that crashed the process, if one ever does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metadt  # noqa: E402
from metadt._core import ACTION_PAD  # noqa: E402
from metadt import TrajectoryStore  # noqa: E402

BOUNDS = [2**31 - 1, 2**31, 2**31 + 1, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 5, 2**64 - 1,
          2**64, 2**64 + 1, 2**65, -1, -2, -2**31, -2**63, -2**63 - 1, -2**64, 0]
SMALL = st.integers(-2, 12)
BOUND = st.sampled_from(BOUNDS)
INTS = st.one_of(SMALL, SMALL, BOUND)
ODD = st.sampled_from([None, 1.5, "3", b"x", [1], float("nan"), True])
ARG = st.one_of(SMALL, SMALL, SMALL, SMALL, BOUND, BOUND, ODD)
FLOATS = st.sampled_from([1.0, 0.5, 250.0, 1e-45, 1e-30, 0.0, -1.0, float("nan"), float("inf"), 1e38, 3.4e38,
                          -0.0, 1e-50, 1e39, -float("inf"), 1e-38])
NAMES = st.sampled_from(["err", "z", "ok.v", "mask", "timesteps", "tasks", "episodes", "ctx_obs", "prompt_mask",
                         "obs", "rtg", "episode_lengths", "../../pwned", "", "_x", "a/b", "ERR", "x" * 250])
STRATS = st.sampled_from(["argmax", "proportional", "random", "last", "bogus"])

STATS = {"examples": 0, "calls": 0, "ok": 0, "errors": {}, "loads": 0, "loads_ok": 0}
LOG = None
DEADLINE = [float("inf")]


class Failure(AssertionError):
    pass


def log(msg: str) -> None:
    if LOG is not None:
        LOG.write(msg + "\n")
        LOG.flush()


def call(what: str, fn, *args, **kwargs):
    """Run one API call; returns (ok, value). An ordinary exception is fine; anything else is a failure."""
    STATS["calls"] += 1
    log(f"{what} args={args!r:.300} kwargs={kwargs!r:.300}")
    try:
        v = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the property: only ordinary exceptions
        STATS["errors"][type(e).__name__] = STATS["errors"].get(type(e).__name__, 0) + 1
        return False, e
    except BaseException as e:  # PanicException, SystemExit from inside, ...
        raise Failure(f"{what}{args!r:.200}{kwargs!r:.200} raised {type(e).__module__}.{type(e).__name__}: {e}") from e
    STATS["ok"] += 1
    return True, v


def snapshot(s):
    return (s.num_steps, s.num_episodes, s.num_open_steps, tuple(s.columns()), s.episode_lengths().tobytes(),
            s.episode_returns().tobytes())


# ------------------------------------------------------------------ correctness of successful calls

def check_windows(s, b, kw):
    cols = {n: np.asarray(s.column(n)) for n in ("obs", "actions", "rewards", "rtg")}
    B, K = b["mask"].shape
    od, ad = s.obs_dim, s.act_dim
    assert b["obs"].shape == (B, K, od) and b["actions"].shape == (B, K, ad), "window shapes"
    assert b["mask"].dtype == np.bool_ and b["mask"][:, -1].all(), "last position always valid"
    # an accepted return_scale keeps every rtg / scale finite in float32 (windows and prompts)
    assert np.isfinite(b["rtg"]).all() and ("prompt_rtg" not in b or np.isfinite(b["prompt_rtg"]).all()), \
        "return_scale let rtg overflow"
    off, lens = s.episode_offsets(), s.episode_lengths()
    names = list(kw.get("columns") or [])
    h = kw.get("context_len", 0)
    if h:
        assert b["ctx_obs"].shape == (B, K + h, od), "context shape K + h"
    for i in range(B):
        e = int(b["episodes"][i])
        assert 0 <= e < s.num_episodes and b["tasks"][i] == s.episode_task(e), "episode / task"
        for j in range(K):
            t = int(b["timesteps"][i, j])
            if b["mask"][i, j]:
                assert 0 <= t < lens[e], "timestep inside the episode"
                np.testing.assert_array_equal(b["obs"][i, j], cols["obs"][off[e] + t])
                np.testing.assert_array_equal(b["actions"][i, j], cols["actions"][off[e] + t])
                for n in names:
                    np.testing.assert_array_equal(b[n][i, j], np.asarray(s.column(n))[off[e] + t])
            else:
                assert t == 0 and (b["actions"][i, j] == ACTION_PAD).all(), "padding"
    if "prompt_starts" in b:
        st_, pe = b["prompt_starts"], b["prompt_episodes"]
        assert ((st_ >= 0) & (st_ <= np.maximum(lens[pe] - b["prompt_obs"].shape[1], 0))).all(), "prompt start"


def check_transitions(s, b):
    B = b["obs"].shape[0]
    assert b["obs"].shape == (B, s.obs_dim)
    obs = np.asarray(s.column("obs"))
    off = s.episode_offsets()
    for i in range(B):
        e = int(b["episodes"][i])
        if e >= 0:
            np.testing.assert_array_equal(b["obs"][i], obs[off[e] + int(b["timesteps"][i])])


def check_store(s, values: bool = True):
    """The store's structural invariants; `values`: also the value rules that only a verified load checks
    (load(verify=False) reads no values, so a flipped byte may leave, e.g., a truncation flag of 3.0)."""
    lens, offs = s.episode_lengths(), s.episode_offsets()
    assert (lens >= 1).all() and int(lens.sum()) == s.num_steps, "lengths sum"
    assert (offs == np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)).all() or s.num_episodes == 0
    for n in ("obs", "actions", "next_obs", *s.columns()):
        assert np.asarray(s.column(n)).shape[0] == s.num_steps, "column rows"
    tr = np.asarray(s.column("truncations"))
    assert tr.shape == (s.num_steps,), "truncations rows"
    if values:
        assert np.isin(tr, (0.0, 1.0)).all(), "truncations are 0/1"


# ------------------------------------------------------------------ API campaign

TAME = st.integers(0, 12)


def op_strategy(ARG=ARG, INTS=INTS):
    """One API call; with ARG = TAME the arguments are mostly valid (so successes are checked too)."""
    return st.one_of(
        st.tuples(st.just("windows"), ARG, ARG, ARG, FLOATS, st.lists(NAMES, max_size=2),
                  st.one_of(st.none(), st.tuples(ARG, st.one_of(st.none(), NAMES), STRATS, ARG)),
                  st.one_of(st.none(), ARG, st.lists(INTS, max_size=3)), ARG),
        st.tuples(st.just("transitions"), ARG, ARG, st.one_of(st.none(), ARG), ARG),
        st.tuples(st.just("segments"), NAMES, ARG, ARG, st.one_of(st.none(), st.lists(INTS, max_size=3))),
        st.tuples(st.just("best"), NAMES, ARG, ARG, st.sampled_from(["task", "episode", "x"]), STRATS, ARG),
        st.tuples(st.just("attach"), NAMES, st.integers(0, 3), st.sampled_from(["ok", "short", "nan", "neg", "f64"])),
        st.tuples(st.just("detach"), NAMES),
        st.tuples(st.just("add_episode"), st.integers(0, 9), st.booleans(), st.sampled_from(["ok", "nan", "big", "trunc", "trunc-bad", "trunc-short"]), ARG),
        st.tuples(st.just("add_step"), ARG, st.booleans(), st.one_of(st.none(), ARG), FLOATS,
                  st.one_of(st.none(), st.booleans()), st.one_of(st.none(), st.booleans())),
        st.tuples(st.just("close"), ARG),
        st.tuples(st.just("query"), st.sampled_from(["episode_task", "top_episodes", "episodes_of_task", "column",
                                                     "reseed"]), ARG, ARG, NAMES),
        st.tuples(st.just("prefetch"), st.sampled_from(["windows", "transitions", "x"]), ARG, ARG, ARG, ARG, ARG),
        st.tuples(st.just("new"), ARG, ARG, ARG),
        st.tuples(st.just("steps"), st.one_of(st.lists(INTS, max_size=4), ARG), ARG, st.one_of(ARG, st.just(None))),
        st.tuples(st.just("live"), st.lists(INTS, max_size=3), st.integers(-1, 3), st.one_of(FLOATS, ARG), ARG, ARG,
                  ARG, FLOATS),
        st.tuples(st.just("prompt_segments"), st.lists(INTS, max_size=3), st.lists(INTS, max_size=3), ARG, FLOATS),
    )


def run_op(s, op, rng):
    kind = op[0]
    if kind == "windows":
        _, batch, length, context, scale, columns, prompt, tasks, seed = op
        kw = dict(window_len=length, context_len=context, return_scale=scale, columns=columns, prompt=prompt,
                  tasks=tasks, seed=seed)
        ok, b = call("sample_windows", s.sample_windows, batch, **kw)
        if ok:
            check_windows(s, b, kw)
    elif kind == "transitions":
        _, batch, context, tasks, seed = op
        ok, b = call("sample_transitions", s.sample_transitions, batch, context_len=context, tasks=tasks, seed=seed)
        if ok:
            check_transitions(s, b)
    elif kind == "segments":
        _, col, length, start_min, eps = op
        ok, r = call("segment_scores", s.segment_scores, col, length, start_min=start_min, episodes=eps)
        if ok and len(r["starts"]):
            from metadt.data import segment_range

            lens = s.episode_lengths()
            for e, st_ in zip(r["episodes"].tolist(), r["starts"].tolist()):
                lo, hi = segment_range(int(lens[e]), length, start_min) or (0, 0)
                assert lo <= st_ <= hi, "a segment start outside the short-episode rule"
    elif kind == "best":
        _, col, length, start_min, per, mode, seed = op
        call("best_segments", s.best_segments, col, length, start_min=start_min, per=per, mode=mode, seed=seed)
    elif kind == "attach":
        _, name, width, how = op
        n = s.num_steps
        shape = (n,) if width == 0 else (n, width)
        v = rng.random(shape).astype(np.float32)
        if how == "short":
            v = v[:-1] if n else np.zeros((3, 1), np.float32)
        elif how == "nan" and v.size:
            v.reshape(-1)[0] = np.nan
        elif how == "neg":
            v -= 0.5
        elif how == "f64":
            v = v.astype(np.float64)
        before = snapshot(s)
        ok, _ = call("attach_column", s.attach_column, name, v)
        if not ok:
            assert snapshot(s) == before, "a rejected attach_column changed the store"
    elif kind == "detach":
        call("detach_column", s.detach_column, op[1])
    elif kind == "add_episode":
        _, T, right_dims, how, task = op
        od = s.obs_dim if right_dims else s.obs_dim + 1
        obs = rng.normal(size=(T, od))
        rew = rng.normal(size=T)
        if how == "nan" and T:
            obs[0, 0] = np.nan
        elif how == "big" and T:
            rew[:] = 3e38
        trunc = None
        if how.startswith("trunc"):
            trunc = (rng.random(T) < 0.3).astype(np.float32)
            if how == "trunc-bad" and T:
                trunc[rng.integers(T)] = rng.choice([0.5, -1.0, 2.0, np.nan, np.inf])
            elif how == "trunc-short":
                trunc = trunc[:-1] if T else np.zeros(2, np.float32)
        before = snapshot(s)
        ok, _ = call("add_episode", s.add_episode, obs, rng.normal(size=(T, s.act_dim)), rew, task=task,
                     truncations=trunc)
        if ok and trunc is not None:
            np.testing.assert_array_equal(np.asarray(s.column("truncations"))[-T:], trunc)
        if not ok:
            assert snapshot(s) == before, "a rejected add_episode changed the store"
    elif kind == "add_step":
        _, task, done, stream, reward, terminal, truncated = op
        call("add_step", s.add_step, rng.normal(size=s.obs_dim), rng.normal(size=s.act_dim), reward,
             rng.normal(size=s.obs_dim), done, task=task, stream=stream, terminal=terminal, truncated=truncated)
    elif kind == "close":
        call("close_episode", s.close_episode, op[1])
    elif kind == "query":
        _, q, a, b_, name = op
        if q == "episode_task":
            call(q, s.episode_task, a)
        elif q == "top_episodes":
            ok, r = call(q, s.top_episodes, a, b_)
            if ok:
                assert len(r) <= b_
        elif q == "episodes_of_task":
            call(q, s.episodes_of_task, a)
        elif q == "column":
            ok, r = call(q, s.column, name)
            if ok:
                assert r.shape[0] == s.num_steps and not r.flags.writeable
        else:
            call(q, s.reseed, a)
    elif kind == "prefetch":
        _, k, depth, nb, batch, length, seed = op
        ok, it = call("prefetch", s.prefetch, kind=k, depth=depth, num_batches=nb, seed=seed, batch=batch,
                      **({"window_len": length} if k == "windows" else {}))
        if ok:
            for _ in range(2):
                ok2, _ = call("prefetch.next", next, it)
                if not ok2:
                    break
            it.close()
    elif kind == "new":
        _, od, ad, cap = op
        call("TrajectoryStore", TrajectoryStore, od, ad, capacity=cap)
    elif kind == "steps":
        _, steps, context, chunk = op
        ok, b = call("gather_steps", s.gather_steps, steps, context_len=context)
        if ok:
            check_transitions(s, b)
            np.testing.assert_array_equal(b["steps"], np.asarray(steps, dtype=np.int64).reshape(-1))
        ok, it = call("iter_steps", s.iter_steps, context_len=context, chunk=chunk if chunk is not None else 4096)
        if ok:
            seen = 0
            for _ in range(3):
                ok2, b = call("iter_steps.next", next, it)
                if not ok2:
                    break
                np.testing.assert_array_equal(b["steps"], np.arange(seen, seen + len(b["steps"])))
                seen += len(b["steps"])
    elif kind == "live":
        _, streams, obs_rows, targets, tasks, length, context, scale = op
        n = len(streams)
        obs = rng.normal(size=(obs_rows if obs_rows >= 0 else n, s.obs_dim))
        ok, b = call("live_windows", s.live_windows, streams, obs, targets, tasks if tasks is not None else [0] * n,
                     window_len=length, context_len=context, return_scale=scale)
        if ok:
            K = b["mask"].shape[1]
            assert b["obs"].shape == (n, K, s.obs_dim) and b["mask"][:, -1].all(), "live window shapes"
            assert np.isfinite(b["rtg"]).all(), "live rtg finite"
            np.testing.assert_array_equal(b["obs"][:, -1], obs.astype(np.float32))
    elif kind == "prompt_segments":
        _, eps, starts, length, scale = op
        ok, b = call("prompt_segments", s.prompt_segments, eps, starts, length, return_scale=scale)
        if ok:
            lens = s.episode_lengths()
            assert (b["prompt_starts"] + np.minimum(b["prompt_obs"].shape[1], lens[b["prompt_episodes"]])
                    <= lens[b["prompt_episodes"]]).all(), "prompt segment inside its episode"
            assert np.isfinite(b["prompt_rtg"]).all()


def base_store(rng, od, ad, n_eps, capacity=None):
    s = TrajectoryStore(od, ad, capacity=capacity)
    for i in range(n_eps):
        T = int(rng.integers(1, 15))
        s.add_episode(rng.normal(size=(T, od)), rng.normal(size=(T, ad)), rng.normal(size=T), task=i % 3)
    if n_eps:
        s.attach_column("err", np.abs(rng.normal(size=(s.num_steps, 2))).astype(np.float32))
        s.attach_column("z", rng.normal(size=s.num_steps).astype(np.float32))
    return s


@st.composite
def api_case(draw):
    return (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 6)),
            draw(st.sampled_from([None, None, 20, 40])), draw(st.integers(0, 2**32 - 1)),
            draw(st.lists(st.one_of(op_strategy(), op_strategy(TAME, TAME)), min_size=1, max_size=12)))


def api_example(case):
    if time.monotonic() > DEADLINE[0]:
        return
    od, ad, n_eps, cap, seed, ops = case
    STATS["examples"] += 1
    rng = np.random.default_rng(seed)
    s = base_store(rng, od, ad, n_eps, cap)
    for op in ops:
        run_op(s, op, rng)
    check_store(s)


# ------------------------------------------------------------------ on-disk campaign

FILES = ["manifest.json", "obs.npy", "actions.npy", "rewards.npy", "next_obs.npy", "terminals.npy", "truncations.npy",
         "rtg.npy", "episode_offsets.npy", "episode_lengths.npy", "episode_tasks.npy", "episode_returns.npy",
         "columns/err.npy", "columns/z.npy", "columns"]
VALUES = st.one_of(INTS, st.sampled_from([None, "", "../../pwned", "/etc/passwd", "columns/../obs.npy", "mask",
                                          "<f8", "<f4", "<i8", [], [2**62], [2**62, 2], [-1, 2], {}, 1.5, True,
                                          "metadt-trajectory-store", 1e308]))
# The harness itself reads a file whole only below this size: an earlier "sparse" swap leaves a 1 TiB file that
# a later edit of the same file must skip (reading it raised MemoryError inside the harness, not the store).
HARNESS_READ_LIMIT = 64 << 20
SWAPS = ["fifo", "symlink", "dir", "empty", "truncate", "sparse", "garbage", "flip", "flip", "flip"]


@st.composite
def disk_case(draw):
    edits = draw(st.lists(st.one_of(
        st.tuples(st.just("top"), st.sampled_from(["format", "version", "obs_dim", "act_dim", "capacity",
                                                   "num_episodes", "num_steps", "files", "attached_columns",
                                                   "metadata"]), VALUES, st.booleans()),
        st.tuples(st.just("file"), st.integers(0, 12), st.sampled_from(["name", "file", "dtype", "shape", "bytes",
                                                                        "crc32"]), VALUES, st.booleans()),
        st.tuples(st.just("att"), st.integers(0, 1), st.sampled_from(["name", "width", "nonneg"]), VALUES,
                  st.booleans()),
        st.tuples(st.just("swap"), st.sampled_from(FILES), st.sampled_from(SWAPS), st.integers(0, 2**31)),
    ), min_size=1, max_size=3))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 5)),
            draw(st.integers(0, 2**32 - 1)), edits, draw(st.booleans()), draw(st.booleans()))


def tree_digest(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            size = p.stat().st_size
            with open(p, "rb") as fh:   # a huge sparse file: its size and first MiB
                out[rel] = f"{size}:" + hashlib.sha1(fh.read(1 << 20)).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


def apply_edit(d: Path, outside: Path, edit) -> bool:
    """Apply one edit; returns True when it only flipped a byte of a listed file."""
    mp = d / "manifest.json"
    kind = edit[0]
    if kind in ("top", "file", "att"):
        if mp.is_symlink() or not mp.is_file():   # swapped for a FIFO/link/dir: the harness must not open it
            return False
        if mp.stat().st_size > HARNESS_READ_LIMIT:   # swapped for a huge sparse file: never read it whole
            return False
        try:
            m = json.loads(mp.read_text())
        except (OSError, ValueError):
            return False
        if kind == "top":
            _, key, val, delete = edit
            target, k = m, key
        elif kind == "file":
            _, i, key, val, delete = edit
            files = m.get("files") if isinstance(m.get("files"), list) else []
            if not files:
                return False
            target, k = files[i % len(files)], key
        else:
            _, i, key, val, delete = edit
            att = m.get("attached_columns") if isinstance(m.get("attached_columns"), list) else []
            if not att:
                return False
            target, k = att[i % len(att)], key
        if not isinstance(target, dict):
            return False
        if delete:
            target.pop(k, None)
        else:
            target[k] = val
        mp.write_text(json.dumps(m))
        return False
    _, rel, how, r = edit
    p = d / rel
    if not (p.exists() or p.is_symlink()):
        return False
    if how == "flip":
        if p.is_file() and not p.is_symlink() and 0 < p.stat().st_size <= HARNESS_READ_LIMIT:
            data = bytearray(p.read_bytes())
            data[r % len(data)] ^= 1 << (r % 8)
            p.write_bytes(bytes(data))
            return rel != "manifest.json"
        return False
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
    if how == "fifo":
        os.mkfifo(p)
    elif how == "symlink":
        os.symlink(outside / rel, p)
    elif how == "dir":
        p.mkdir()
    elif how == "empty":
        p.write_bytes(b"")
    elif how == "garbage":
        p.write_bytes(np.random.default_rng(r).bytes(r % 300))
    else:
        src = outside / rel
        data = src.read_bytes() if src.is_file() else b""
        if how == "truncate":
            p.write_bytes(data[: max(len(data) - 1 - r % 8, 0)])
        else:  # sparse: the real bytes, then a huge hole
            p.write_bytes(data)
            with open(p, "r+b") as fh:
                fh.truncate(len(data) + (1 << 40))
    return False


def disk_example(case, root: Path):
    if time.monotonic() > DEADLINE[0]:
        return
    od, ad, n_eps, seed, edits, mmap, verify = case
    STATS["examples"] += 1
    rng = np.random.default_rng(seed)
    sandbox = Path(tempfile.mkdtemp(dir=root))
    try:
        s = base_store(rng, od, ad, n_eps)
        d = sandbox / "store"
        outside = root / "outside"        # a valid store outside the sandbox that symlinks point into
        s.save(d)
        if outside.exists():
            shutil.rmtree(outside)
        s.save(outside)
        guard = root / "guard.txt"
        guard.write_text("must stay")
        before = tree_digest(outside), guard.read_text()
        original = tree_digest(d)
        flips = [apply_edit(d, outside, e) for e in edits]
        edited = tree_digest(d)
        # only byte flips, the manifest intact, and some file really differs (two flips may cancel)
        only_flips = (all(flips) and edited.get("manifest.json") == original.get("manifest.json")
                      and edited != original)
        STATS["loads"] += 1
        ok, t = call("load", TrajectoryStore.load, d, mmap=mmap, verify=verify)
        if ok:
            STATS["loads_ok"] += 1
            assert not (verify and only_flips), "a verified load accepted a flipped byte"
            check_store(t, values=verify)
            ops = [("windows", 4, 3, 1, 1.0, t.columns()[:1], (2, None, "random", 1), None, 0),
                   ("transitions", 4, 2, None, 0), ("segments", "rewards", 2, 0, None)]
            for op in ops:
                run_op(t, op, rng)
            call("save", t.save, sandbox / "copy")
            call("save over the crafted store", t.save, d)
        after = tree_digest(outside), guard.read_text()
        assert before == after, "something outside the store changed"
        leaked = [p for p in root.iterdir() if p.name not in ("outside", "guard.txt") and p != sandbox]
        assert not leaked, f"files written outside the sandbox: {leaked}"
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


# ------------------------------------------------------------------ main

def main(argv=None) -> int:
    global LOG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0, help="time budget (split between API and disk)")
    ap.add_argument("--rounds", default=None, metavar="A,D",
                    help="a fixed budget instead of --seconds: A rounds of --chunk API examples, then D rounds of "
                         "disk examples (the same examples on every machine; the test suite uses this)")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    ap.add_argument("--chunk", type=int, default=40, help="examples per hypothesis run")
    ap.add_argument("--log", default=None, help="append every call here before running it")
    args = ap.parse_args(argv)
    LOG = open(args.log, "a") if args.log else None
    cfg = dict(max_examples=args.chunk, deadline=None, database=None,
               suppress_health_check=list(HealthCheck), print_blob=True)
    t0 = time.monotonic()

    rounds = None
    if args.rounds is not None:
        try:
            rounds = [int(x) for x in args.rounds.split(",")]
            assert len(rounds) == 2 and min(rounds) >= 0
        except (ValueError, AssertionError):
            ap.error(f"--rounds takes two counts A,D (got {args.rounds!r})")

    def campaign(strategy, fn, until, n_rounds):
        # rounds of `chunk` examples with successive seeds until the time budget is spent, or `n_rounds` rounds
        DEADLINE[0] = until if n_rounds is None else float("inf")
        r = 0
        while (time.monotonic() < until) if n_rounds is None else (r < n_rounds):
            hseed(args.seed * 1000 + r)(settings(**cfg)(given(strategy)(fn)))()
            r += 1

    campaign(api_case(), api_example, t0 + args.seconds * 0.55, rounds and rounds[0])
    api = dict(STATS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        campaign(disk_case(), lambda case: disk_example(case, root), t0 + args.seconds, rounds and rounds[1])
    STATS["api_examples"] = api["examples"]
    STATS["api_calls"] = api["calls"]
    STATS["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(STATS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
