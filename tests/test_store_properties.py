"""Property tests: every batch kind, field by field, against tests/store_reference.py."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metadt
from metadt.data import PromptSpec, step_contexts

import store_reference as ref

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw):
    od = draw(st.integers(1, 4))
    ad = draw(st.integers(1, 3))
    n_tasks = draw(st.integers(1, 3))
    n_eps = draw(st.integers(1, 8))
    lengths = draw(st.lists(st.one_of(st.integers(1, 12), st.integers(1, 300)), min_size=n_eps, max_size=n_eps))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    eps = []
    for i, T in enumerate(lengths):
        task = int(rng.integers(n_tasks)) if i >= n_tasks else i  # every task id has an episode
        ep = ref.Episode(
            obs=rng.normal(size=(T, od)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(T, ad)).astype(np.float32),
            rewards=rng.normal(size=T).astype(np.float32),
            task=task,
            next_obs=rng.normal(size=(T, od)).astype(np.float32) if rng.random() < 0.5 else None,
            terminals=(rng.random(T) < 0.1).astype(np.float32) if rng.random() < 0.5 else None,
            truncations=(rng.random(T) < 0.1).astype(np.float32) if rng.random() < 0.3 else None,
        )
        default = np.zeros(T, np.float32)
        default[-1] = float(ep.terminals[-1] == 0)
        ep.explicit_truncations = not np.array_equal(ep.truncations, default) or rng.random() < 0.5
        # a non-negative score column (sometimes all zero) and a signed 3-wide column
        err = np.abs(rng.normal(size=(T, 2))).astype(np.float32)
        if rng.random() < 0.2:
            err[:] = 0
        ep.columns["err"] = err
        ep.columns["z"] = rng.normal(size=(T, 3)).astype(np.float32)
        eps.append(ep)
    return od, ad, eps


def build(od, ad, eps, f64=False):
    s = metadt.TrajectoryStore(od, ad)
    for ep in eps:
        cast = (lambda a: a.astype(np.float64)) if f64 else (lambda a: a)
        s.add_episode(cast(ep.obs), cast(ep.actions), cast(ep.rewards), next_obs=None if ep.next_obs is None else cast(ep.next_obs),
                      task=ep.task, terminals=ep.terminals,
                      truncations=ep.truncations if getattr(ep, "explicit_truncations", True) else None)
    for name in ("err", "z"):
        s.attach_column(name, np.concatenate([ep.columns[name] for ep in eps]))
    return s


def eq(a, b, what):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


@SETTINGS
@given(data=datasets(), f64=st.booleans())
def test_store_queries(data, f64):
    od, ad, eps = data
    s = build(od, ad, eps, f64)
    assert s.num_episodes == len(eps)
    assert s.num_steps == sum(ep.T for ep in eps)
    eq(s.episode_lengths(), [ep.T for ep in eps], "lengths")
    eq(s.episode_offsets(), np.cumsum([0] + [ep.T for ep in eps])[:-1], "offsets")
    np.testing.assert_allclose(s.episode_returns(), [ep.ret() for ep in eps], rtol=1e-12)
    eq(s.tasks(), sorted({ep.task for ep in eps}), "tasks")
    for t in s.tasks():
        mine = [i for i, ep in enumerate(eps) if ep.task == t]
        eq(s.episodes_of_task(t), mine, "episodes_of_task")
        rets = s.episode_returns()
        top = sorted(mine, key=lambda i: (-rets[i], i))[:2]
        eq(s.top_episodes(t, 2), top, "top_episodes")
    for i, ep in enumerate(eps):
        assert s.episode_task(i) == ep.task
    cat = lambda f: np.concatenate([getattr(ep, f) for ep in eps])  # noqa: E731
    eq(s.column("obs"), cat("obs"), "obs column")
    eq(s.column("actions"), cat("actions"), "actions column")
    eq(s.column("rewards"), cat("rewards"), "rewards column")
    eq(s.column("next_obs"), cat("next_obs"), "next_obs column")
    eq(s.column("terminals"), cat("terminals"), "terminals column")
    eq(s.column("truncations"), cat("truncations"), "truncations column")
    eq(s.column("rtg"), np.concatenate([ep.rtg() for ep in eps]), "rtg column")
    eq(s.column("z"), np.concatenate([ep.columns["z"] for ep in eps]), "z column")


@SETTINGS
@given(
    data=datasets(),
    B=st.integers(1, 12),
    K=st.integers(1, 30),
    h=st.integers(0, 8),
    scale=st.sampled_from([1.0, 3.0, 500.0]),
    cols=st.sampled_from([(), ("err",), ("z", "err")]),
    prompt=st.one_of(st.none(), st.tuples(st.integers(1, 12), st.sampled_from(["argmax", "proportional", "random", "last"]),
                                          st.sampled_from([None, "err"]), st.integers(0, 6), st.booleans())),
    seed=st.integers(0, 2**63),
    task_subset=st.booleans(),
    anchor=st.sampled_from(["start", "end"]),
)
def test_windows_match_reference(data, B, K, h, scale, cols, prompt, seed, task_subset, anchor):
    od, ad, eps = data
    s = build(od, ad, eps)
    tasks = None
    if task_subset:
        tasks = [eps[-1].task]
    pspec = None
    pool = None
    if prompt is not None:
        k, strategy, score, start_min, use_pool = prompt
        if use_pool:
            pool = list(range(0, len(eps), 2)) + [i for i, ep in enumerate(eps) if ep.task not in {eps[j].task for j in range(0, len(eps), 2)}]
        pspec = PromptSpec(length=k, score=score, strategy=strategy, start_min=start_min, pool=pool)
    b = s.sample_windows(B, window_len=K, context_len=h, return_scale=scale, columns=cols, prompt=pspec, tasks=tasks, seed=seed,
                         anchor=anchor)
    assert b["obs"].shape == (B, K, od) and b["obs"].dtype == np.float32
    assert b["actions"].shape == (B, K, ad)
    assert b["timesteps"].dtype == np.int64 and b["mask"].dtype == np.bool_
    for i in range(B):
        e = int(b["episodes"][i])
        ep = eps[e]
        assert b["tasks"][i] == ep.task
        if tasks is not None:
            assert ep.task in tasks
        end = int(b["timesteps"][i, -1])
        assert b["mask"][i, -1] and 0 <= end < ep.T
        n = int(b["mask"][i].sum())
        t0 = int(b["timesteps"][i, K - n])  # the first real step
        # the drawn step is the window's end ("end") or its start ("start")
        drawn = end if anchor == "end" else t0
        assert ref.window_steps(ep.T, drawn, K, anchor) == (t0, end)
        want = ref.window(ep, end, K, h, scale, cols, start=t0)
        for key, val in want.items():
            eq(b[key][i], val, f"{key} sample {i}")
        if h > 0:  # the per-position context views equal sample_transitions' contexts
            views = {k_: step_contexts(b[k_], h) for k_ in ("ctx_obs", "ctx_actions", "ctx_rewards", "ctx_mask")}
            for j in range(K - n if anchor == "start" else 0, K):  # "start": the real positions
                for key, val in ref.step_context(ep, end - K + 1 + j, h).items():
                    eq(views[key][i, j], val, f"step context {key} sample {i} position {j}")
        if pspec is not None:
            pe = int(b["prompt_episodes"][i])
            st_ = int(b["prompt_starts"][i])
            assert eps[pe].task == ep.task
            if pool is not None:
                assert pe in pool
            det = ref.prompt_start(eps[pe], pspec.length, pspec.start_min, pspec.strategy, pspec.score)
            if det is not None:
                assert st_ == det
            else:
                assert st_ in ref.candidate_starts(eps[pe].T, pspec.length, pspec.start_min)
                if pspec.strategy == "proportional" and pspec.score is not None and eps[pe].T >= pspec.length:
                    cands = ref.candidate_starts(eps[pe].T, pspec.length, pspec.start_min)
                    if any(ref.segment_score(eps[pe], "err", c, pspec.length) > 0 for c in cands):
                        assert ref.segment_score(eps[pe], "err", st_, pspec.length) > 0
            for key, val in ref.prompt(eps[pe], st_, pspec.length, scale).items():
                eq(b[key][i], val, f"{key} sample {i}")


@SETTINGS
@given(data=datasets(), B=st.integers(1, 16), h=st.integers(0, 8), seed=st.integers(0, 2**63), task_subset=st.booleans())
def test_transitions_match_reference(data, B, h, seed, task_subset):
    od, ad, eps = data
    s = build(od, ad, eps)
    tasks = [eps[0].task] if task_subset else None
    b = s.sample_transitions(B, context_len=h, tasks=tasks, seed=seed)
    assert b["obs"].shape == (B, od) and b["rewards"].shape == (B,)
    if h > 0:
        assert b["ctx_obs"].shape == (B, h, od) and b["ctx_mask"].shape == (B, h)
    else:
        assert "ctx_obs" not in b
    for i in range(B):
        e = int(b["episodes"][i])
        t = int(b["timesteps"][i])
        assert b["tasks"][i] == eps[e].task
        if tasks is not None:
            assert eps[e].task in tasks
        for key, val in ref.transition(eps[e], t, h).items():
            eq(b[key][i], val, f"{key} sample {i}")


@SETTINGS
@given(data=datasets(), k=st.integers(1, 15), start_min=st.integers(0, 6), per=st.sampled_from(["task", "episode"]))
def test_segments_match_reference(data, k, start_min, per):
    od, ad, eps = data
    s = build(od, ad, eps)
    got = s.segment_scores("err", length=k, start_min=start_min)
    want = ref.segment_scores(eps, "err", k, start_min)
    eq(got["episodes"], want["episodes"], "episodes")
    eq(got["starts"], want["starts"], "starts")
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=0)
    best = s.best_segments("err", length=k, start_min=start_min, per=per, mode="argmax")
    wb = ref.best_segments_argmax(eps, "err", k, start_min, per)
    for key in ("keys", "episodes", "starts", "scores"):
        eq(best[key], wb[key], key)
    prop = s.best_segments("err", length=k, start_min=start_min, per=per, mode="proportional", seed=1)
    eq(prop["keys"], wb["keys"], "proportional keys")
    for key_, e, st_, sc in zip(prop["keys"], prop["episodes"], prop["starts"], prop["scores"]):
        assert (eps[e].task if per == "task" else e) == key_
        assert int(st_) in ref.candidate_starts(eps[e].T, k, start_min)
        assert sc == ref.segment_score(eps[e], "err", int(st_), min(k, eps[e].T))


@SETTINGS
@given(data=datasets(), seed=st.integers(0, 2**63))
def test_save_load_roundtrip_property(data, seed, tmp_path_factory):
    od, ad, eps = data
    s = build(od, ad, eps)
    s.set_metadata({"family": "x", "n": len(eps)})
    path = tmp_path_factory.mktemp("rt") / "store"
    s.save(path)
    for mmap in (True, False):
        t = metadt.TrajectoryStore.load(path, mmap=mmap, verify=True)
        assert t.metadata == {"family": "x", "n": len(eps)}
        for name in ("obs", "actions", "rewards", "next_obs", "terminals", "rtg", "err", "z"):
            eq(t.column(name), s.column(name), name)
        a = s.sample_windows(5, window_len=7, context_len=3, columns=["z"], seed=seed)
        b2 = t.sample_windows(5, window_len=7, context_len=3, columns=["z"], seed=seed)
        for key in a:
            eq(a[key], b2[key], key)
