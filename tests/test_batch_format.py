"""The store is the one owner of the batch format (issue #16 item 1).

- the sequential pass (`iter_steps` / `gather_steps`) against a NumPy reference
  (the vectorized gather `train/columns.StepTable` used to do itself);
- prompts of given segments (`prompt_segments`) equal the sampler's prompts;
- every batch kind's keys are its TypedDict of ``metadt/_core.pyi`` (one written schema);
- the strategy names: the Rust enum, the stub's Literal and the config agree;
- hostile arguments to the new calls are Python exceptions.
"""
from __future__ import annotations

import ast
import importlib.util
import typing
from pathlib import Path

import numpy as np
import pytest

import metadt
from metadt import PromptSpec, TrajectoryStore
from metadt._core import ACTION_PAD, PROMPT_STRATEGIES

STUB = Path(metadt.__file__).with_name("_core.pyi")


def make(lengths=(7, 1, 12, 3, 9), od=3, ad=2, seed=0) -> TrajectoryStore:
    rng = np.random.default_rng(seed)
    s = TrajectoryStore(od, ad)
    for i, T in enumerate(lengths):
        s.add_episode(rng.normal(size=(T, od)).astype(np.float32), rng.normal(size=(T, ad)).astype(np.float32),
                      rng.normal(size=T).astype(np.float32), next_obs=rng.normal(size=(T, od)).astype(np.float32),
                      task=i % 2, terminals=(rng.random(T) < 0.2).astype(np.float32))
    return s


def numpy_steps(s: TrajectoryStore, idx: np.ndarray, h: int) -> dict[str, np.ndarray]:
    """The reference: per global step, its row and its h previous rows cut at its episode start."""
    lengths, offsets = s.episode_lengths(), s.episode_offsets()
    episode = np.repeat(np.arange(len(lengths)), lengths)
    ep_start = offsets[episode]
    col = {k: np.asarray(s.column(k)) for k in ("obs", "actions", "rewards", "next_obs", "terminals")}
    cidx = idx[:, None] - h + np.arange(h)[None, :]
    valid = cidx >= ep_start[idx][:, None]
    cidx = np.where(valid, cidx, 0)
    out = {k: v[idx] for k, v in col.items()}
    out.update(
        tasks=s.episode_tasks()[episode[idx]], episodes=episode[idx], timesteps=idx - ep_start[idx], steps=idx,
        ctx_obs=np.where(valid[..., None], col["obs"][cidx], 0.0).astype(np.float32),
        ctx_actions=np.where(valid[..., None], col["actions"][cidx], 0.0).astype(np.float32),
        ctx_rewards=np.where(valid, col["rewards"][cidx], 0.0).astype(np.float32),
        ctx_mask=valid,
    )
    return out


@pytest.mark.parametrize("h", [1, 3, 20])
@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_iter_steps_equals_the_numpy_reference(h, chunk):
    s = make()
    want = numpy_steps(s, np.arange(s.num_steps), h)
    it = s.iter_steps(context_len=h, chunk=chunk)
    assert len(it) == -(-s.num_steps // chunk) and it.num_steps == s.num_steps
    got = list(it)
    assert all(len(b["steps"]) <= chunk for b in got)
    for key, v in want.items():
        cat = np.concatenate([b[key] for b in got])
        assert cat.dtype == v.dtype, key
        np.testing.assert_array_equal(cat, v, err_msg=key)


def test_gather_steps_given_steps_and_torch_columns():
    s = make()
    idx = np.array([5, 0, 30, 7, 7, 31, 8], dtype=np.int64)
    b = s.gather_steps(idx, context_len=4)
    for key, v in numpy_steps(s, idx, 4).items():
        np.testing.assert_array_equal(b[key], v, err_msg=key)
    part = list(s.iter_steps(context_len=4, chunk=3, steps=idx))
    np.testing.assert_array_equal(np.concatenate([p["steps"] for p in part]), idx)
    # no context: no ctx_* keys; an empty request is an empty batch
    assert "ctx_obs" not in s.gather_steps([1, 2], context_len=0)
    assert s.gather_steps(np.zeros(0, np.int64), context_len=2)["obs"].shape == (0, s.obs_dim)
    # StepTable (z and world-model errors) reads the same batches
    from metadt.train.columns import StepTable

    t = StepTable.of(s)
    g = t.gather(idx, 4)
    for key in StepTable.KEYS:
        np.testing.assert_array_equal(g[key].numpy(), b[key], err_msg=key)
    seen = np.concatenate([p for p, _ in t.batches(4, 6)])
    np.testing.assert_array_equal(seen, np.arange(s.num_steps))


def test_prompt_segments_equal_the_sampled_prompts():
    s = make(lengths=(7, 2, 12, 3, 9))
    for strategy in ("last", "random"):
        b = s.sample_windows(200, window_len=4, return_scale=7.0, seed=3,
                             prompt=PromptSpec(5, None, strategy, start_min=2))
        p = s.prompt_segments(b["prompt_episodes"], b["prompt_starts"], 5, return_scale=7.0)
        assert sorted(p) == sorted(k for k in b if k.startswith("prompt_"))
        for key, v in p.items():
            np.testing.assert_array_equal(v, b[key], err_msg=key)
    # the short episode (T = 2 < k = 5) is used whole, left-padded, in both
    short = s.prompt_segments([1], [0], 5, return_scale=7.0)
    np.testing.assert_array_equal(short["prompt_mask"][0], [False, False, False, True, True])
    assert (short["prompt_actions"][0, :3] == ACTION_PAD).all()


class _TD:
    """A TypedDict of the stub, read with ast: its required and NotRequired keys."""

    def __init__(self, name, required, optional):
        self.__name__, self.__required_keys__, self.__optional_keys__ = name, frozenset(required), frozenset(optional)


class _Stub:
    """The schemas and Literals written in ``metadt/_core.pyi`` (parsed, not imported: a stub)."""

    def __init__(self):
        tree = ast.parse(STUB.read_text())
        self.literals: dict[str, tuple] = {}
        self.dicts: dict[str, _TD] = {}
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript)
                    and getattr(node.value.value, "id", "") == "Literal"):
                elts = node.value.slice.elts if isinstance(node.value.slice, ast.Tuple) else [node.value.slice]
                self.literals[node.targets[0].id] = tuple(e.value for e in elts)
            if isinstance(node, ast.ClassDef):
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                if "TypedDict" not in bases and not any(b in self.dicts for b in bases):
                    continue
                req, opt = set(), set()
                for b in bases:
                    if b in self.dicts:
                        req |= self.dicts[b].__required_keys__
                        opt |= self.dicts[b].__optional_keys__
                for item in node.body:
                    if isinstance(item, ast.AnnAssign):
                        ann = item.annotation
                        optional = isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "NotRequired"
                        (opt if optional else req).add(item.target.id)
                self.dicts[node.name] = _TD(node.name, req, opt)

    def __getattr__(self, name):
        if name in self.literals:
            return typing.Literal[self.literals[name]]
        return self.dicts[name]


def _stub():
    return _Stub()


def test_every_batch_kind_has_its_typed_schema():
    stub = _stub()
    s = make()
    s.attach_column("err", np.abs(np.asarray(s.column("rewards")))[:, None])

    def check(batch, td, extra=()):
        keys = set(batch) - set(extra)
        assert td.__required_keys__ <= keys, (td.__name__, td.__required_keys__ - keys)
        assert keys <= td.__required_keys__ | td.__optional_keys__, (td.__name__, keys - td.__required_keys__)

    w = s.sample_windows(4, window_len=3, context_len=2, columns=["err"], prompt=PromptSpec(2, "err"), seed=0)
    check(w, stub.WindowBatch, extra=["err"])
    assert set(s.sample_windows(4, window_len=3, seed=0)) == stub.WindowBatch.__required_keys__
    live = s.live_windows([0, 1], np.zeros((2, s.obs_dim)), 1.0, [0, 1], window_len=3, context_len=2)
    check(live, stub.WindowBatch)
    check(s.sample_transitions(4, context_len=2, seed=0), stub.TransitionBatch)
    assert set(s.gather_steps([0, 1], context_len=2)) == stub.StepBatch.__required_keys__ | stub.StepBatch.__optional_keys__
    assert set(s.prompt_segments([0], [0], 2)) == stub.PromptBatch.__required_keys__
    assert set(s.segment_scores("err", 2)) == stub.SegmentScores.__required_keys__
    assert set(s.best_segments("err", 2)) == stub.BestSegments.__required_keys__
    prompt_keys = {k for k in stub.WindowBatch.__optional_keys__ if k.startswith("prompt_")}
    assert prompt_keys == stub.PromptBatch.__required_keys__


def test_strategy_names_have_one_definition():
    from metadt.config.evaluate import STRATEGIES
    from metadt.config.meta_dt import PROMPT_STRATEGIES as CONFIG, SCORED_STRATEGIES

    stub = _stub()
    assert typing.get_args(stub.PromptStrategy) == PROMPT_STRATEGIES == CONFIG == STRATEGIES
    assert typing.get_args(stub.SegmentMode) == SCORED_STRATEGIES
    assert typing.get_args(stub.Anchor) == metadt._core.ANCHORS
    # no Python module spells the names out again (the config mirror and the stub are the only two)
    root = Path(metadt.__file__).parent
    spelled = []
    for f in root.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts][:2] == \
                    ["argmax", "proportional"]:
                spelled.append(f"{f.relative_to(root)}:{node.lineno}")
    assert [x.split(":")[0] for x in spelled] == ["config/meta_dt.py"], spelled


def test_short_episode_rule_is_the_same_everywhere():
    from metadt.data import segment_range
    from metadt.evaluate.few_shot import start_range

    s = make(lengths=(1, 3, 5, 8))
    s.attach_column("err", np.ones((s.num_steps, 1)))
    k, start_min = 4, 2
    seg = s.segment_scores("err", k, start_min=start_min)
    for e, T in enumerate(s.episode_lengths().tolist()):
        r = segment_range(T, k, start_min)
        lo, hi = r if r is not None else (0, 0)
        assert start_range(T, k, start_min) == (lo, hi)
        assert seg["starts"][seg["episodes"] == e].tolist() == list(range(lo, hi + 1))
    b = s.sample_windows(300, window_len=2, prompt=PromptSpec(k, None, "random", start_min=start_min), seed=0)
    for e, st in zip(b["prompt_episodes"].tolist(), b["prompt_starts"].tolist()):
        lo, hi = segment_range(int(s.episode_lengths()[e]), k, start_min) or (0, 0)
        assert lo <= st <= hi


@pytest.mark.parametrize("call", [
    lambda s: s.gather_steps([s.num_steps]),
    lambda s: s.gather_steps([-1]),
    lambda s: s.gather_steps([2**64]),
    lambda s: s.gather_steps(None),
    lambda s: s.gather_steps([1.5]),
    lambda s: s.gather_steps([0], context_len=-1),
    lambda s: s.gather_steps([0], context_len=2**62),
    lambda s: s.iter_steps(chunk=0),
    lambda s: s.iter_steps(steps=[10**6]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [1.0], [0], window_len=0),
    lambda s: s.live_windows([], np.zeros((0, 3)), [], [], window_len=2),
    lambda s: s.live_windows([0, 0], np.zeros((2, 3)), [1.0, 1.0], [0, 0]),
    lambda s: s.live_windows([0], np.zeros((2, 3)), [1.0], [0]),
    lambda s: s.live_windows([0], np.zeros((1, 4)), [1.0], [0]),
    lambda s: s.live_windows([0], np.full((1, 3), np.nan), [1.0], [0]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [np.inf], [0]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [1.0, 2.0], [0]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [1.0], [0, 1]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [3e38], [0], return_scale=1e-30),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [1.0], [0], return_scale=0.0),
    lambda s: s.live_windows([0], np.zeros((1, 3)), [1.0], [0], window_len=2**62, context_len=2**62),
    lambda s: s.live_windows(None, np.zeros((1, 3)), [1.0], [0]),
    lambda s: s.live_windows([0], np.zeros((1, 3)), "x", [0]),
    lambda s: s.prompt_segments([0], [0], 0),
    lambda s: s.prompt_segments([99], [0], 2),
    lambda s: s.prompt_segments([0], [6], 2),
    lambda s: s.prompt_segments([1], [1], 2),
    lambda s: s.prompt_segments([0, 1], [0], 2),
    lambda s: s.prompt_segments([], [], 2),
    lambda s: s.prompt_segments([0], [0], 2, return_scale=float("nan")),
    lambda s: s.prompt_segments([0], [-3], 2),
    lambda s: s.prompt_segments([0], [0], 2**62),
    lambda s: s.prompt_segments(None, [0], 2),
])
def test_hostile_arguments_are_python_exceptions(call):
    s = make()
    with pytest.raises((ValueError, TypeError, OverflowError, MemoryError)):
        call(s)
    assert s.num_steps == 32  # nothing changed
