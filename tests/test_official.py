"""Import of the Meta-DT authors' dataset format (`metadt import-official`)."""
from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest

from metadt.data.dataset import Dataset
from metadt.data.official import (OfficialFormatError, goals_to_tasks, import_official,
                                  split_episodes)

H = 20  # point-robot horizon


def _task_data(rng, episodes: int, goal) -> OrderedDict:
    """Flat arrays as the authors' ReplayMemory.save_buffer writes them."""
    m = episodes * H
    obs = rng.uniform(-1, 1, (m, 2))
    act = rng.uniform(-0.1, 0.1, (m, 2))
    nxt = obs + act
    rew = -np.linalg.norm(nxt - np.asarray(goal), axis=1)
    data = OrderedDict()
    data["observations"] = obs
    data["actions"] = act
    data["rewards"] = rew
    data["next_observations"] = nxt
    data["terminals"] = np.zeros(m, dtype=bool)
    data["masks"] = np.ones(m, dtype=bool)
    return data


@pytest.fixture()
def official_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "PointRobot-v0"
    goals = rng.uniform(-1, 1, (4, 2))
    root.mkdir()
    np.save(root / "task_goals.npy", goals)
    written = {}
    for quality, eps in (("medium", 3), ("expert", 2)):
        (root / quality).mkdir()
        for i in range(4):
            d = _task_data(rng, eps, goals[i])
            with open(root / quality / f"dataset_task_{i}.pkl", "wb") as f:
                pickle.dump(d, f)
            written[(quality, i)] = d
    return root, goals, written


def test_round_trip(official_dir, tmp_path):
    root, goals, written = official_dir
    ds = import_official(root, "point-robot", tmp_path / "out", random_episodes=2,
                         trust_pickle=True)
    again = Dataset.open(tmp_path / "out")
    assert again.card.to_dict() == ds.card.to_dict()
    card = again.card
    assert card.family == "point-robot" and card.source == "metadt import-official"
    assert [t["goal"] for t in card.tasks] == goals.tolist()
    assert card.train_ids == [0, 1, 2] and card.test_ids == [3]
    assert sorted(card.qualities) == ["expert", "medium"]
    assert sorted(card.random_returns) == ["0", "1", "2", "3"]
    for quality, eps in (("medium", 3), ("expert", 2)):
        store = again.store(quality, mmap=False)
        assert store.num_episodes == 4 * eps
        assert card.qualities[quality]["episodes_per_task"] == eps
        for i in range(4):
            src = written[(quality, i)]
            ids = list(store.episodes_of_task(i))
            assert len(ids) == eps
            offs = np.asarray(store.episode_offsets())
            lens = np.asarray(store.episode_lengths())
            rows = np.concatenate([np.arange(offs[e], offs[e] + lens[e]) for e in ids])
            for ours, theirs in (("obs", "observations"), ("actions", "actions"),
                                 ("rewards", "rewards"), ("next_obs", "next_observations"),
                                 ("terminals", "terminals")):
                got = np.asarray(store.column(ours))[rows]
                np.testing.assert_allclose(got, np.asarray(src[theirs], dtype=np.float32),
                                           rtol=1e-6, err_msg=f"{quality}/{i}/{ours}")
            rets = np.asarray(store.episode_returns())[ids]
            want = np.asarray(src["rewards"], np.float64).reshape(eps, H).sum(1)
            np.testing.assert_allclose(rets, want, rtol=1e-5)
    # the family rebuilt from the card steps with the imported goals
    assert again.family.tasks[0]["goal"] == goals[0].tolist()


def test_single_quality_dir_and_cli(official_dir, tmp_path, capsys):
    from metadt.cli import main

    root, _, _ = official_dir
    out = tmp_path / "cli"
    assert main(["import-official", str(root / "expert"), "--family", "point-robot",
                 "--out", str(out), "--random-episodes", "0", "--trust-pickle"]) == 0
    ds = Dataset.open(out)
    assert ds.qualities == ["expert"] and ds.card.random_returns == {}
    assert "expert" in capsys.readouterr().out
    # selecting qualities, and an existing output is refused
    assert main(["import-official", str(root), "--family", "point-robot", "--out",
                 str(tmp_path / "m"), "--quality", "medium", "--random-episodes", "0",
                 "--trust-pickle"]) == 0
    assert Dataset.open(tmp_path / "m").qualities == ["medium"]
    assert main(["import-official", str(root), "--family", "point-robot", "--out", str(out),
                 "--trust-pickle"]) == 1


def _write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case, match", [
    ("missing_key", "missing key"),
    ("bad_shape", "observations has shape"),
    ("not_dict", "expected a dict"),
    ("code", "refusing to load"),
    ("garbage", "not a readable pickle"),
    ("short", "no complete episode"),
    ("extra_task", "has no task goal"),
])
def test_malformed_input_gives_clear_errors(official_dir, tmp_path, case, match):
    root, goals, written = official_dir
    target = root / "medium" / "dataset_task_1.pkl"
    d = OrderedDict(written[("medium", 1)])
    if case == "missing_key":
        del d["next_observations"]
        _write(target, d)
    elif case == "bad_shape":
        d["observations"] = d["observations"][:, :1]
        _write(target, d)
    elif case == "not_dict":
        _write(target, [1, 2, 3])
    elif case == "code":
        _write(target, Evil())
    elif case == "garbage":
        target.write_bytes(b"this is not a pickle")
    elif case == "short":
        for k in d:
            d[k] = d[k][:H - 1]
        _write(target, d)
    elif case == "extra_task":
        _write(root / "medium" / "dataset_task_9.pkl", d)
    with pytest.raises(OfficialFormatError, match=match):
        import_official(root, "point-robot", tmp_path / "out", trust_pickle=True)
    assert not (tmp_path / "out" / "card.json").exists()


def test_missing_goals_and_dirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OfficialFormatError, match="no dataset_task"):
        import_official(empty, "point-robot", tmp_path / "o", trust_pickle=True)
    with pytest.raises(FileNotFoundError):
        import_official(tmp_path / "nope", "point-robot", tmp_path / "o", trust_pickle=True)
    q = tmp_path / "root" / "medium"
    q.mkdir(parents=True)
    _write(q / "dataset_task_0.pkl", _task_data(np.random.default_rng(0), 1, [0, 0]))
    with pytest.raises(OfficialFormatError, match="task_goals"):
        import_official(tmp_path / "root", "point-robot", tmp_path / "o", trust_pickle=True)


def test_split_episodes_and_goal_conversion():
    term = np.zeros(50, dtype=bool)
    term[4] = True
    spans, rest = split_episodes(term, 20)
    assert spans == [(0, 5), (5, 25), (25, 45)] and rest == 5
    assert goals_to_tasks("cheetah-vel", [{"velocity": 1.5}, 2.0]) == [
        {"family": "cheetah-vel", "velocity": 1.5}, {"family": "cheetah-vel", "velocity": 2.0}]
    assert goals_to_tasks("cheetah-dir", [{"direction": -1}])[0]["direction"] == -1.0
    ang = goals_to_tasks("ant-dir", [{"goal": 7.0}])[0]["angle"]
    assert ang == pytest.approx(7.0 - 2 * np.pi)
    with pytest.raises(OfficialFormatError):
        goals_to_tasks("point-robot", np.zeros((3, 3)))
    with pytest.raises(OfficialFormatError, match="cannot be converted"):
        goals_to_tasks("reach", [object()])


def test_param_family_goals_become_multipliers():
    from metadt.envs import family_class, family_from_tasks

    defaults = family_class("hopper-param").defaults()
    goals = [{k: (np.asarray(v) * 1.5).tolist() for k, v in defaults.items()}]
    (task,) = goals_to_tasks("hopper-param", goals)
    for name, base in defaults.items():
        mult = np.asarray(task[name])
        np.testing.assert_allclose(mult[base != 0], 1.5)
        np.testing.assert_allclose(mult[base == 0], 1.0)
    family_from_tasks("hopper-param", [task], num_train=1)  # valid metadt task
    bad = [{k: v for k, v in goals[0].items() if k != "dof_damping"}]
    with pytest.raises(OfficialFormatError, match="dof_damping"):
        goals_to_tasks("hopper-param", bad)


# ---------------------------------------------------------------- trust and memory bounds


def test_pickles_are_read_only_with_explicit_trust(official_dir, tmp_path, capsys):
    from metadt.cli import main
    from metadt.data.official import UntrustedPickleError

    root, _, _ = official_dir
    with pytest.raises(UntrustedPickleError, match="trust_pickle=True"):
        import_official(root, "point-robot", tmp_path / "lib")
    assert main(["import-official", str(root), "--family", "point-robot", "--out",
                 str(tmp_path / "cli"), "--random-episodes", "0"]) == 1
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and "a pickle is a program" in err
    assert not (tmp_path / "lib").exists() and not (tmp_path / "cli").exists()


class _Call:
    """Pickles as ``func(*args)`` (what a crafted file can ask of allowed globals)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _bomb(levels: int, width: int) -> list:
    """``width ** levels`` floats by repeated references: a few KB pickled."""
    x: list = [0.5] * width
    for _ in range(levels - 1):
        x = [x] * width
    return x


@pytest.mark.parametrize("case", ["nested_refs", "bytes_alloc", "tuple_copies", "codec_chain",
                                  "memo_index", "object_array"])
def test_crafted_pickles_cannot_exhaust_memory(official_dir, tmp_path, case):
    """A few KB that would build GBs (cubic/exponential growth through repeated references,
    allocation requests, a huge memo index) are refused before the memory is used."""
    import tracemalloc

    root, goals, written = official_dir
    target = root / "medium" / "dataset_task_1.pkl"
    d = OrderedDict(written[("medium", 1)])
    if case == "nested_refs":  # 200**4 = 1.6e9 floats (13 GB as an array) from 3 KB
        d["observations"] = _bomb(4, 200)
        _write(target, d)
    elif case == "bytes_alloc":
        d["observations"] = _Call(bytes, 1 << 40)
        _write(target, d)
    elif case == "tuple_copies":  # tuple(big) copied 2000 times: quadratic growth
        big = [0.5] * 1000
        d["observations"] = [_Call(tuple, big) for _ in range(2000)]
        _write(target, d)
    elif case == "codec_chain":  # each hex round doubles: 2**40 bytes
        import codecs

        x: object = b"ab"
        for _ in range(40):
            x = _Call(codecs.encode, x, "hex")
        d["observations"] = x
        _write(target, d)
    elif case == "memo_index":  # LONG_BINPUT 2**31: the memo table would take 16 GB
        import struct

        target.write_bytes(b"\x80\x02N" + b"r" + struct.pack("<I", 2**31) + b".")
    elif case == "object_array":
        arr = np.empty(3, dtype=object)
        arr[:] = [_bomb(3, 50)] * 3
        d["observations"] = arr
        _write(target, d)
    assert target.stat().st_size < 64 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(OfficialFormatError, match=r"refusing|out of range|more than"):
            import_official(root, "point-robot", tmp_path / "out", trust_pickle=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MB"
    assert not (tmp_path / "out" / "card.json").exists()
