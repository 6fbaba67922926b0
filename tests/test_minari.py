"""Minari export/import: round trip through the `minari` package, terminations
and truncations kept apart, and hostile Minari files refused with clear errors."""
from __future__ import annotations

import json
import os
import shutil
import sys

import h5py
import minari
import numpy as np
import pytest

from metadt import TrajectoryStore
from metadt.cli import main
from metadt.data.dataset import Dataset, DatasetCard, write_dataset
from metadt.data.minari_format import MinariFormatError, datasets_root, import_minari, require_minari

TASKS = [{"family": "point-robot", "goal": [0.5, -0.25]}, {"family": "point-robot", "goal": [-0.75, 0.5]},
         {"family": "point-robot", "goal": [0.125, 0.875]}]


def make_dataset(path, seed=0):
    """Three tasks; episodes cut by the time limit, terminated, and (once) both."""
    rng = np.random.default_rng(seed)
    stores = {}
    for q in ("expert", "medium"):
        s = TrajectoryStore(2, 2)
        for i in range(7):
            T = int(rng.integers(1, 9))
            obs = rng.normal(size=(T + 1, 2)).astype(np.float32)
            term = np.zeros(T, np.float32)
            trunc = None
            if i % 3 == 1:
                term[-1] = 1                                   # a true termination
            if i == 5:
                trunc = np.zeros(T, np.float32)
                trunc[-1] = term[-1] = 1                        # both flags at once
            s.add_episode(obs[:-1], rng.uniform(-0.1, 0.1, size=(T, 2)), rng.normal(size=T),
                          next_obs=obs[1:], task=i % 3, terminals=term, truncations=trunc)
        s.metadata = {"quality": q, "note": [1, 2.5]}
        stores[q] = s
    card = DatasetCard(family="point-robot", family_seed=seed, obs_dim=2, act_dim=2, horizon=8,
                       tasks=TASKS, train_ids=[0, 1], test_ids=[2],
                       collection={"preset": "test"}, source="test")
    return write_dataset(path, card, stores)


@pytest.fixture
def exported(tmp_path):
    make_dataset(tmp_path / "data")
    assert main(["export-minari", str(tmp_path / "data"), "--out", str(tmp_path / "mn")]) == 0
    return tmp_path


def _same_dataset(a: Dataset, b: Dataset):
    assert a.card.to_dict() == b.card.to_dict()
    for q in a.qualities:
        x, y = a.store(q), b.store(q)
        for c in ("obs", "actions", "rewards", "next_obs", "terminals", "truncations", "rtg"):
            np.testing.assert_array_equal(np.asarray(x.column(c)), np.asarray(y.column(c)), err_msg=c)
        np.testing.assert_array_equal(x.episode_tasks(), y.episode_tasks())
        np.testing.assert_array_equal(x.episode_lengths(), y.episode_lengths())
        np.testing.assert_array_equal(x.episode_returns(), y.episode_returns())
        assert x.metadata == y.metadata


def test_round_trip_through_minari(exported, capsys):
    tmp = exported
    src = Dataset.open(tmp / "data")
    # what Minari itself sees
    with datasets_root(tmp / "mn"):
        for q in ("expert", "medium"):
            mds = minari.load_dataset(f"metadt/point-robot/{q}-v0")
            store = src.store(q)
            assert mds.total_episodes == store.num_episodes and mds.total_steps == store.num_steps
            meta = mds.storage.metadata
            assert json.loads(meta["metadt_card"]) == src.card.to_dict()
            assert meta["metadt_quality"] == q
            ep_meta = list(mds.storage.get_episode_metadata(range(mds.total_episodes)))
            offs, lens, tasks = store.episode_offsets(), store.episode_lengths(), store.episode_tasks()
            n_term = n_trunc = 0
            for i, ep in enumerate(mds.iterate_episodes()):
                sl = slice(int(offs[i]), int(offs[i] + lens[i]))
                np.testing.assert_array_equal(ep.observations[:-1], store.column("obs")[sl])
                np.testing.assert_array_equal(ep.observations[1:], store.column("next_obs")[sl])
                np.testing.assert_array_equal(ep.actions, store.column("actions")[sl])
                np.testing.assert_array_equal(ep.rewards, store.column("rewards")[sl])
                np.testing.assert_array_equal(ep.terminations, store.column("terminals")[sl] == 1)
                np.testing.assert_array_equal(ep.truncations, store.column("truncations")[sl] == 1)
                n_term += int(ep.terminations[-1])
                n_trunc += int(ep.truncations[-1])
                assert int(ep_meta[i]["task_id"]) == tasks[i]
                assert json.loads(ep_meta[i]["task_params"]) == TASKS[tasks[i]]
            assert n_term == 3 and n_trunc == 5  # episodes 1, 4 terminate, 5 both; the rest truncated
    # and back
    assert main(["import-minari", str(tmp / "mn"), "--out", str(tmp / "back")]) == 0
    _same_dataset(src, Dataset.open(tmp / "back"))
    # one quality by id
    assert main(["import-minari", str(tmp / "mn"), "--id", "metadt/point-robot/medium-v0",
                 "--out", str(tmp / "one")]) == 0
    assert Dataset.open(tmp / "one").qualities == ["medium"]


def test_export_refuses_an_existing_dataset_unless_overwrite(exported, capsys):
    tmp = exported
    assert main(["export-minari", str(tmp / "data"), "--out", str(tmp / "mn")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export-minari", str(tmp / "data"), "--out", str(tmp / "mn"), "--overwrite",
                 "--quality", "expert"]) == 0
    assert main(["import-minari", str(tmp / "mn"), "--out", str(tmp / "back")]) == 0
    _same_dataset(Dataset.open(tmp / "data"), Dataset.open(tmp / "back"))


def test_export_refuses_next_obs_it_cannot_represent(tmp_path, capsys):
    s = TrajectoryStore(1, 1)
    s.add_episode(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), next_obs=np.array([[0.0], [5.0], [0.0]]))
    card = DatasetCard(family="point-robot", family_seed=0, obs_dim=1, act_dim=1, horizon=3,
                       tasks=[{}], train_ids=[0], test_ids=[])
    write_dataset(tmp_path / "d", card, {"expert": s})
    assert main(["export-minari", str(tmp_path / "d"), "--out", str(tmp_path / "mn")]) == 1
    assert "next_obs differs" in capsys.readouterr().err
    assert not (tmp_path / "mn" / "metadt" / "point-robot" / "expert-v0").exists()


def test_a_missing_minari_is_a_clear_error(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(ImportError, match=r'pip install "metadt\[minari\]"'):
        require_minari()
    assert main(["export-minari", str(tmp_path / "data"), "--out", str(tmp_path / "mn")]) == 1
    assert "metadt[minari]" in capsys.readouterr().err
    assert main(["import-minari", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "mn").exists()


H5 = "metadt/point-robot/expert-v0/data/main_data.hdf5"
META = "metadt/point-robot/expert-v0/data/metadata.json"


def _set(name, value):
    """Replace dataset ``name`` of episode 0 by ``value`` (any shape/dtype)."""
    def edit(f):
        del f["episode_0"][name]
        f["episode_0"][name] = value
    return edit


def _attr(key, value):
    def edit(f):
        f["episode_0"].attrs[key] = value
    return edit


def _meta(key, value):
    def edit(m):
        m[key] = value
    return edit


def _card(**changes):
    def edit(m):
        c = json.loads(m["metadt_card"])
        c.update(changes)
        m["metadt_card"] = json.dumps(c)
    return edit


def _obs(f):
    return np.array(f["episode_0"]["observations"])


HOSTILE_H5 = [
    ("nan-obs", lambda f: _set("observations", np.where(np.arange(_obs(f).size).reshape(_obs(f).shape) == 1,
                                                        np.nan, _obs(f)).astype(np.float32))(f),
     r"observations\[0, 1\] = .*not finite"),
    ("inf-reward", lambda f: _set("rewards", np.full(f["episode_0"]["rewards"].shape, np.inf, np.float32))(f),
     r"rewards\[0\] = .*not finite"),
    ("f64-overflow", lambda f: _set("actions", np.full(f["episode_0"]["actions"].shape, 1e300))(f),
     "not finite in float32"),
    ("obs-wide", lambda f: _set("observations", np.zeros((_obs(f).shape[0], 3), np.float32))(f),
     r"observations has shape .*expected"),
    ("obs-short", lambda f: _set("observations", _obs(f)[:-1])(f), r"observations has shape"),
    ("actions-str", lambda f: _set("actions", np.array([b"x"] * f["episode_0"]["actions"].shape[0]))(f),
     "actions has dtype|must be an array"),
    ("rewards-2d", lambda f: _set("rewards", np.zeros((2, 2), np.float32))(f), "rewards has shape"),
    ("term-2", lambda f: _set("terminations", np.full(f["episode_0"]["terminations"].shape, 2, np.int64))(f),
     "terminations must be booleans"),
    ("trunc-short", lambda f: _set("truncations", np.zeros(0, bool))(f), "truncations has shape"),
    ("task-range", _attr("task_id", 3), r"task_id 3 is not a task of the card"),
    ("task-negative", _attr("task_id", -1), r"task_id -1 is not a task"),
    ("task-str", _attr("task_id", "0"), r"task_id '0' is not a task"),
    ("task-float", _attr("task_id", 0.5), r"task_id 0.5 is not a task"),
    ("task-params", _attr("task_params", json.dumps({"goal": [9, 9]})), "task_params differ"),
    ("task-missing", lambda f: f["episode_0"].attrs.__delitem__("task_id"), "task_id None"),
    # 2**40 rows declared in a few KB (chunked, never written): refused before anything reads it
    ("huge-declared", lambda f: (f["episode_0"].__delitem__("rewards"),
                                 f["episode_0"].create_dataset("rewards", shape=(2**40,), dtype="f4",
                                                               chunks=(1024,), compression="gzip")),
     "declare more than"),
]

HOSTILE_META = [
    ("no-card", lambda m: m.pop("metadt_card"), "not a dataset written by `metadt export-minari`"),
    ("card-json", _meta("metadt_card", "{not json"), "not valid JSON"),
    ("card-deep", _meta("metadt_card", "[" * 100000 + "]" * 100000), "not valid JSON|expected a JSON object"),
    ("card-list", _meta("metadt_card", "[]"), "expected a JSON object"),
    ("card-dims", _card(obs_dim=-1), "obs_dim"),
    ("card-tasks", _card(tasks="x"), "tasks"),
    ("card-ids", _card(train_ids=[7]), "out of range"),
    ("card-obs-dim", _card(obs_dim=3), r"observations has shape"),
    ("quality-path", _meta("metadt_quality", "../../pwned"), "not a plain name"),
    ("quality-num", _meta("metadt_quality", 3), "not a plain name"),
    ("store-meta", _meta("metadt_store_metadata", "[1]"), "must be a JSON object"),
    ("arrow", _meta("data_format", "arrow"), "hdf5 storage only"),
]


@pytest.mark.parametrize("name,edit,msg", HOSTILE_H5, ids=[c[0] for c in HOSTILE_H5])
def test_hostile_episode_values_are_refused(exported, name, edit, msg):
    tmp = exported
    with h5py.File(tmp / "mn" / H5, "r+") as f:
        edit(f)
    with pytest.raises(ValueError, match=msg):
        import_minari(tmp / "mn", tmp / "back")
    assert not (tmp / "back").exists()


@pytest.mark.parametrize("name,edit,msg", HOSTILE_META, ids=[c[0] for c in HOSTILE_META])
def test_hostile_metadata_is_refused(exported, name, edit, msg, capsys):
    tmp = exported
    m = json.loads((tmp / "mn" / META).read_text())
    edit(m)
    (tmp / "mn" / META).write_text(json.dumps(m))
    with pytest.raises(ValueError, match=msg):
        import_minari(tmp / "mn", tmp / "back")
    assert not (tmp / "back").exists()
    # the command says it in one line
    assert main(["import-minari", str(tmp / "mn"), "--out", str(tmp / "back")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metadt: error: ") and "Traceback" not in err


def test_import_refuses_mixed_cards_and_an_existing_dataset(exported):
    tmp = exported
    make_dataset(tmp / "other", seed=1)
    assert main(["export-minari", str(tmp / "other"), "--out", str(tmp / "mn2")]) == 0
    shutil.copytree(tmp / "mn2" / "metadt" / "point-robot" / "medium-v0",
                    tmp / "mn" / "metadt" / "point-robot" / "medium-v1")
    with pytest.raises(ValueError, match="two datasets hold quality 'medium'|another dataset card"):
        import_minari(tmp / "mn", tmp / "back")
    make_dataset(tmp / "exists")
    with pytest.raises(FileExistsError, match="already a metadt dataset"):
        import_minari(tmp / "mn2", tmp / "exists")
    assert os.environ.get("MINARI_DATASETS_PATH") != str(tmp / "mn")  # restored
