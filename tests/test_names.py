"""One name per quantity (docs/train.md, "Names"): window_len (K), context_len (h),
prompt_len (k), prompt_start_min. The names used before (``seq_len``, the store's
``length=`` / ``context=``, store-demo's ``--length`` / ``--context`` /
``--prompt-length``) still work with a DeprecationWarning and mean the same thing;
an old and a new name together is refused."""
from __future__ import annotations

import ast
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import metadt
from metadt import TrajectoryStore
from metadt.config.meta_dt import MetaDTConfig

from test_train_support import make_point_dataset

STUB = Path(metadt.__file__).with_name("_core.pyi")


def make(n_eps=6, tasks=2, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    s = TrajectoryStore(obs_dim, act_dim)
    for e in range(n_eps):
        T = 5 + 3 * e
        s.add_episode(rng.normal(size=(T, obs_dim)).astype(np.float32),
                      rng.uniform(-1, 1, size=(T, act_dim)).astype(np.float32),
                      rng.normal(size=T).astype(np.float32), task=e % tasks)
    return s


def same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return fn()


# ------------------------------------------------------------------ store keywords
def _live(s):
    """A store with two live streams (open episodes of 3 and 1 steps)."""
    rng = np.random.default_rng(5)
    for stream, n in ((0, 3), (1, 1)):
        for _ in range(n):
            s.add_step(rng.normal(size=3).astype(np.float32), rng.uniform(-1, 1, 2).astype(np.float32),
                       float(rng.normal()), rng.normal(size=3).astype(np.float32), False, task=stream,
                       stream=stream)
    return dict(streams=[0, 1], obs=np.ones((2, 3), np.float32), targets=[5.0, 6.0], tasks=[0, 1])


CASES = [
    # (method, positional args, new keywords, the same under the old keywords)
    ("sample_windows", (16,), dict(window_len=4, context_len=2, seed=3), dict(length=4, context=2, seed=3)),
    ("sample_transitions", (16,), dict(context_len=3, seed=1), dict(context=3, seed=1)),
    ("gather_steps", ([0, 4, 9],), dict(context_len=2), dict(context=2)),
    ("live_windows", None, dict(window_len=4, context_len=2, return_scale=2.0),
     dict(length=4, context=2, return_scale=2.0)),
]


@pytest.mark.parametrize("method,args,new,old", CASES, ids=[c[0] for c in CASES])
def test_old_store_keywords_give_the_same_batch_and_warn(method, args, new, old):
    s = make()
    kw = {}
    if args is None:
        kw, args = _live(s), ()
    fn = getattr(s, method)
    want = _no_warning(lambda: fn(*args, **kw, **new))
    with pytest.warns(DeprecationWarning, match=rf"{method}\((length|context)=\) is deprecated: use"):
        got = fn(*args, **kw, **old)
    same(got, want)
    # the new names differ from the defaults here: the old keywords were not ignored
    default = fn(*args, **kw, **{k: v for k, v in new.items() if not k.endswith("_len")})
    assert {k: np.shape(v) for k, v in default.items()} != {k: np.shape(v) for k, v in want.items()}


def test_old_keywords_of_iter_steps_and_prefetch():
    s = make()
    want = [b["obs"] for b in _no_warning(lambda: s.iter_steps(context_len=2, chunk=7))]
    with pytest.warns(DeprecationWarning, match=r"iter_steps\(context=\)"):
        got = [b["obs"] for b in s.iter_steps(context=2, chunk=7)]
    assert len(got) == len(want) > 1
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    for kind, new, old in (("windows", dict(window_len=4, context_len=2), dict(length=4, context=2)),
                           ("transitions", dict(context_len=3), dict(context=3))):
        with s.prefetch(kind, num_batches=2, seed=4, batch=8, **new) as it:
            want = list(it)
        with pytest.warns(DeprecationWarning, match=r"prefetch\((length|context)=\) is deprecated"):
            it = s.prefetch(kind, num_batches=2, seed=4, batch=8, **old)
        with it:
            got = list(it)
        assert len(got) == 2
        for a, b in zip(got, want):
            same(a, b)
        if kind == "windows":
            assert got[0]["obs"].shape[1] == 4 and got[0]["ctx_obs"].shape[1] == 4 + 2


@pytest.mark.parametrize("call", [
    lambda s: s.sample_windows(4, window_len=3, length=3),
    lambda s: s.sample_windows(4, context_len=2, context=2),
    lambda s: s.sample_windows(4, 3, length=3),  # the new name given positionally
    lambda s: s.sample_transitions(4, context_len=2, context=2),
    lambda s: s.gather_steps([0], context_len=1, context=1),
    lambda s: s.iter_steps(context_len=1, context=1),
    lambda s: s.live_windows(**_live(s), window_len=2, length=2),
    lambda s: s.prefetch("windows", batch=4, window_len=2, length=2),
    lambda s: s.prefetch("transitions", batch=4, context_len=2, context=2),
], ids=["windows-K", "windows-h", "windows-positional", "transitions", "gather", "iter", "live",
        "prefetch-windows", "prefetch-transitions"])
def test_old_and_new_store_keyword_together_is_refused(call):
    with pytest.raises(TypeError, match=r"both (window_len|context_len)= and its deprecated alias "
                                        r"(length|context)=: give only"):
        call(make())


def test_the_generic_segment_functions_keep_length_and_start_min():
    """Segments are any column's, of any length: `length` / `start_min` stay (docs/train.md)."""
    s = make()
    s.attach_column("err", np.abs(np.asarray(s.column("rewards")))[:, None])
    for name in ("segment_scores", "best_segments", "prompt_segments"):
        params = inspect.signature(getattr(TrajectoryStore, name)).parameters
        assert "length" in params and "window_len" not in params, name
    _no_warning(lambda: s.best_segments("err", length=2, start_min=1))
    _no_warning(lambda: s.sample_windows(4, window_len=3, prompt={"length": 2, "start_min": 1}))


def _stub_methods() -> dict[str, list[str]]:
    """Parameter names of every method of ``TrajectoryStore`` in ``_core.pyi`` (parsed)."""
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrajectoryStore")
    out = {}
    for f in cls.body:
        if isinstance(f, ast.FunctionDef):
            a = f.args
            star = [x for x in (a.vararg, a.kwarg) if x is not None]
            out[f.name] = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + star if x.arg != "self"]
    return out


def test_stubs_and_runtime_signatures_have_the_new_names():
    stub = _stub_methods()
    renamed = {"sample_windows": ("window_len", "context_len"), "live_windows": ("window_len", "context_len"),
               "sample_transitions": ("context_len",), "gather_steps": ("context_len",),
               "iter_steps": ("context_len",)}
    for name, new in renamed.items():
        assert set(new) <= set(stub[name]), (name, stub[name])
        assert not {"length", "context"} & set(stub[name]), (name, stub[name])
    # the stub is the runtime's signature (Rust text_signature), parameter by parameter, for
    # every method that has one
    checked = 0
    for name, params in stub.items():
        fn = getattr(TrajectoryStore, name, None)
        if fn is None or name.startswith("__") or getattr(fn, "__text_signature__", None) is None:
            continue
        runtime = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert runtime == params, (name, runtime, params)
        checked += 1
    assert checked >= len(renamed) + 3


# ------------------------------------------------------------------ config
def test_set_seq_len_is_window_len_with_a_warning():
    base = MetaDTConfig.for_family("point-robot", "smoke")
    new = _no_warning(lambda: base.with_overrides(["window_len=7"]))
    with pytest.warns(DeprecationWarning, match="'seq_len' is deprecated: use 'window_len'"):
        old = base.with_overrides(["seq_len=7"])
    assert old == new and old.window_len == 7 != base.window_len
    assert not hasattr(old, "seq_len")
    with pytest.warns(DeprecationWarning):  # the same value under both names: one setting
        assert base.with_overrides(["seq_len=7", "window_len=7"]) == new
    with pytest.raises(ValueError, match="'window_len' different values.*give only 'window_len'"):
        with pytest.warns(DeprecationWarning):
            base.with_overrides(["seq_len=7", "window_len=8"])
    # a later override of one name still replaces an earlier one
    assert _no_warning(lambda: base.with_overrides(["window_len=8", "window_len=7"])) == new


def test_a_config_dict_with_seq_len_reads_as_window_len():
    cfg = MetaDTConfig.for_family("point-robot", "smoke").replace(window_len=6)
    old = cfg.to_dict()
    old["seq_len"] = old.pop("window_len")
    with pytest.warns(DeprecationWarning, match="'seq_len' is deprecated"):
        assert MetaDTConfig.from_dict(old) == cfg
    both = {**old, "window_len": 7}
    with pytest.raises(ValueError, match="gives both with different values"):
        MetaDTConfig.from_dict(both)
    with pytest.warns(DeprecationWarning):
        assert MetaDTConfig.from_dict({**old, "window_len": 6}) == cfg


def test_pipeline_set_seq_len_reaches_the_trainer(tmp_path):
    from metadt.config.pipeline import PipelineConfig
    from metadt.pipeline.runner import Pipeline

    for shared, train in (((), ("seq_len=7",)), (("seq_len=7",), ())):
        p = Pipeline(PipelineConfig(preset="smoke", data=str(tmp_path / "d"), overrides=shared,
                                    train_overrides=train), tmp_path / "o")
        with pytest.warns(DeprecationWarning, match="seq_len"):
            p.check_configs()  # a known field (no "no stage config has a field" refusal)
        with pytest.warns(DeprecationWarning):
            assert p.train_config("dt", 0).window_len == 7


def test_a_pipeline_written_with_seq_len_overrides_resumes_under_window_len(tmp_path):
    from metadt.config.pipeline import PipelineConfig
    from metadt.pipeline.runner import PIPELINE_FILE, Pipeline

    def cfg(*train):
        return PipelineConfig(preset="smoke", data=str(tmp_path / "d"), train_overrides=train)

    Pipeline(cfg("seq_len=7"), tmp_path / "o")._check_out()
    Pipeline(cfg("window_len=7"), tmp_path / "o")._check_out()  # the same pipeline
    stored = json.loads((tmp_path / "o" / PIPELINE_FILE).read_text())
    assert stored["config"]["train_overrides"] == ["window_len=7"]
    Pipeline(cfg("seq_len=7"), tmp_path / "o")._check_out()
    with pytest.raises(ValueError, match="different train_overrides"):
        Pipeline(cfg("seq_len=8"), tmp_path / "o")._check_out()


# ------------------------------------------------------------------ run directories
def test_rundir_reads_renamed_identity_fields(tmp_path):
    from metadt.train.loop import training_run_dir

    cfg = MetaDTConfig.for_family("point-robot", "smoke")
    old = cfg.to_dict()
    old["seq_len"] = old.pop("window_len")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    # without the renaming the old file reads as another run (the check can fail)
    with pytest.raises(ValueError, match="different"):
        training_run_dir(tmp_path / "r", "training run").check(cfg.to_dict())
    run = training_run_dir(tmp_path / "r", "training run", MetaDTConfig.RENAMED)
    assert run.check(cfg.to_dict()) is not None
    with pytest.raises(ValueError, match=r"different window_len \(6 here, 5 in config.json\)"):
        run.check(cfg.replace(window_len=6).to_dict())
    assert run.start(cfg.to_dict()) == "resume"
    now = json.loads((tmp_path / "r" / "config.json").read_text())
    assert now["window_len"] == cfg.window_len and "seq_len" not in now


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pr"
    make_point_dataset(path, [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9)], num_train=2,
                       episodes=4, qualities={"medium": 0.06}, seed=1)
    return path


def _to_old_names(run: Path) -> None:
    """Make ``run`` look written by a metadt before the renaming: ``seq_len`` in its
    config.json and in its model file's config."""
    from metadt.train.run import RUN_FORMAT, read_model, save_model

    c = json.loads((run / "config.json").read_text())
    c["seq_len"] = c.pop("window_len")
    (run / "config.json").write_text(json.dumps(c))
    if (run / "model.safetensors").is_file():
        payload = read_model(run / "model.safetensors", RUN_FORMAT)
        payload["config"]["seq_len"] = payload["config"].pop("window_len")
        save_model(run, payload)


def test_an_old_run_resumes_and_loads(dataset, tmp_path):
    from metadt.evaluate.evaluator import subject_from_run
    from metadt.train.meta_dt import train_meta_dt
    from metadt.train.run import load_run

    cfg = MetaDTConfig.for_family("point-robot", "smoke", "dt").replace(quality="medium", num_steps=4)
    part = train_meta_dt(dataset, cfg, tmp_path / "r", None, progress=False, stop_after=2)
    assert part["steps_done"] == 2
    _to_old_names(tmp_path / "r")
    rest = train_meta_dt(dataset, cfg, tmp_path / "r", None, progress=False)  # not refused
    assert rest["start_step"] == 2
    _to_old_names(tmp_path / "r")
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    with pytest.warns(DeprecationWarning, match="seq_len"):
        loaded = load_run(tmp_path / "r")
    assert "seq_len" in stored and "window_len" not in stored
    want = {k: v for k, v in stored.items() if k != "seq_len"} | {"window_len": stored["seq_len"]}
    assert json.loads(json.dumps(loaded.config.to_dict())) == want
    assert loaded.config.window_len == cfg.window_len
    subject = subject_from_run(loaded, None)
    assert (subject.window_len, subject.context_len, subject.prompt_start_min) == (cfg.window_len, 0, 0)


def test_cli_train_finished_old_run_and_set_seq_len(dataset, tmp_path, capsys):
    from metadt.cli import main

    out = tmp_path / "r"
    argv = ["train", "--data", str(dataset), "--method", "dt", "--preset", "smoke", "--quality",
            "medium", "--out", str(out), "--no-progress", "--set", "num_steps=3"]
    assert main(argv) == 0
    _to_old_names(out)
    capsys.readouterr()
    assert main(argv) == 0  # finished: the same run, nothing to train
    assert "already done" in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match="seq_len"):
        assert main(argv + ["--set", "seq_len=5"]) == 0  # smoke's window_len is 5
    with pytest.warns(DeprecationWarning, match="seq_len"):
        assert main(argv + ["--set", "seq_len=4"]) == 1
    assert "different window_len" in capsys.readouterr().err


# ------------------------------------------------------------------ store-demo flags
def test_store_demo_old_flags_warn_and_mean_the_new_ones(capsys):
    from metadt.cli import main

    small = ["store-demo", "--tasks", "2", "--episodes", "2", "--horizon", "12", "--batch", "4"]
    assert main(small + ["--window-len", "6", "--context-len", "2", "--prompt-len", "3"]) == 0
    new = capsys.readouterr().out
    with pytest.warns(DeprecationWarning) as caught:
        assert main(small + ["--length", "6", "--context", "2", "--prompt-length", "3"]) == 0
    assert {str(w.message) for w in caught} == {
        "store-demo --length is deprecated: use --window-len",
        "store-demo --context is deprecated: use --context-len",
        "store-demo --prompt-length is deprecated: use --prompt-len"}
    old = capsys.readouterr().out
    line = next(x for x in new.splitlines() if x.startswith("4. sample_windows"))
    assert "window_len=6, context_len=2" in line and line in old.splitlines()
    with pytest.raises(SystemExit):
        main(["store-demo", "--help"])
    shown = capsys.readouterr().out
    assert "--window-len" in shown and "--length" not in shown  # the old flags are hidden
    assert main(small + ["--window-len", "6", "--length", "6"]) == 1
    assert "give only --window-len" in capsys.readouterr().err
