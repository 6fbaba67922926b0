"""Property test of online mode (add_step streams, capacity eviction, attach in between) vs a list model."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadt import TrajectoryStore

OD, AD = 2, 1


class Model:
    """Closed episodes (dicts of arrays) + open episodes per stream, with the documented eviction rule."""

    def __init__(self, cap):
        self.cap = cap
        self.closed = []
        self.open = {}
        self.cols = {}  # name -> width

    def steps(self):
        return sum(len(e["rewards"]) for e in self.closed) + sum(len(e["rewards"]) for e in self.open.values())

    def evict(self):
        if self.cap is None:
            return
        while self.steps() > self.cap and len(self.closed) > 1:
            self.closed.pop(0)

    def close(self, ep):
        for name, w in self.cols.items():
            ep[name] = np.zeros((len(ep["rewards"]), w), np.float32)
        self.closed.append(ep)
        self.evict()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2), st.booleans(), st.booleans()),
        st.tuples(st.just("episode"), st.integers(1, 30), st.integers(0, 1)),
        st.tuples(st.just("attach"), st.integers(1, 3)),
        st.tuples(st.just("sample"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, cap=st.one_of(st.none(), st.integers(5, 120)), seed=st.integers(0, 2**32 - 1))
def test_online_matches_model(ops, cap, seed):
    rng = np.random.default_rng(seed)
    s = TrajectoryStore(OD, AD, capacity=cap)
    m = Model(cap)
    counter = 0.0
    n_attach = 0
    for op in ops:
        if op[0] == "step":
            _, stream, done, terminal = op
            task = stream % 2
            counter += 1
            o = np.array([counter, stream], np.float32)
            a = rng.normal(size=AD).astype(np.float32)
            nxt = o + 0.5
            r = np.float32(rng.normal())
            idx = s.add_step(o, a, float(r), nxt, done, task=task, terminal=terminal, stream=stream)
            ep = m.open.setdefault(stream, {"task": task, "obs": [], "actions": [], "rewards": [], "next_obs": [], "terminals": [],
                                                  "truncations": []})
            ep["obs"].append(o)
            ep["actions"].append(a)
            ep["rewards"].append(r)
            ep["next_obs"].append(nxt)
            ep["terminals"].append(np.float32(terminal))
            ep["truncations"].append(np.float32(done and not terminal))  # add_step's default
            if done:
                ep = m.open.pop(stream)
                closed = {k: (np.array(v, np.float32) if k != "task" else v) for k, v in ep.items()}
                m.close(closed)
                assert idx == len(m.closed) - 1
            else:
                assert idx is None
                m.evict()
        elif op[0] == "episode":
            _, T, task = op
            obs = (np.arange(T, dtype=np.float32)[:, None] + np.array([1000.0 + counter, -1], np.float32))
            counter += T
            a = rng.normal(size=(T, AD)).astype(np.float32)
            r = rng.normal(size=T).astype(np.float32)
            idx = s.add_episode(obs, a, r, task=task)
            nxt = np.concatenate([obs[1:], obs[-1:]])
            m.close({"task": task, "obs": obs, "actions": a, "rewards": r, "next_obs": nxt, "terminals": np.zeros(T, np.float32),
                     "truncations": np.eye(1, T, T - 1, dtype=np.float32)[0]})
            assert idx == len(m.closed) - 1
        elif op[0] == "attach":
            w = op[1]
            n = sum(len(e["rewards"]) for e in m.closed)
            vals = rng.normal(size=(n, w)).astype(np.float32)
            name = f"c{n_attach % 2}"
            n_attach += 1
            s.attach_column(name, vals)
            m.cols[name] = w
            o = 0
            for e in m.closed:
                T = len(e["rewards"])
                e[name] = vals[o:o + T]
                o += T
        else:
            h = op[1]
            if s.num_steps + s.num_open_steps == 0:
                continue
            b = s.sample_transitions(16, context_len=h, seed=int(rng.integers(2**31)))
            for i in range(16):
                e, t = int(b["episodes"][i]), int(b["timesteps"][i])
                if e >= 0:
                    ep = m.closed[e]
                else:
                    cands = [x for x in m.open.values() if x["task"] == b["tasks"][i] and len(x["obs"]) > t
                             and np.array_equal(x["obs"][t], b["obs"][i])]
                    assert cands, "open step not found"
                    ep = {k: np.array(v) if k != "task" else v for k, v in cands[0].items()}
                assert ep["task"] == b["tasks"][i]
                for key in ("obs", "actions", "rewards", "next_obs", "terminals"):
                    np.testing.assert_array_equal(b[key][i], ep[key][t], err_msg=key)
                for j in range(h):
                    u = t - h + j
                    assert b["ctx_mask"][i, j] == (u >= 0)
                    np.testing.assert_array_equal(b["ctx_obs"][i, j], ep["obs"][u] if u >= 0 else 0)
        # invariants after every op
        assert s.num_episodes == len(m.closed)
        assert s.num_open_steps == sum(len(e["rewards"]) for e in m.open.values())
    # final state: every column, episode table
    assert s.episode_lengths().tolist() == [len(e["rewards"]) for e in m.closed]
    assert s.episode_tasks().tolist() == [e["task"] for e in m.closed]
    if m.closed:
        for key in ("obs", "actions", "rewards", "next_obs", "terminals", "truncations"):
            np.testing.assert_array_equal(s.column(key).reshape(s.num_steps, -1),
                                          np.concatenate([np.asarray(e[key]).reshape(len(e["rewards"]), -1) for e in m.closed]),
                                          err_msg=key)
        for name in m.cols:
            np.testing.assert_array_equal(s.column(name), np.concatenate([e[name] for e in m.closed]), err_msg=name)
        np.testing.assert_allclose(s.episode_returns(), [float(np.sum(np.asarray(e["rewards"], np.float64))) for e in m.closed],
                                   rtol=1e-6)
        if cap is not None:
            assert s.num_steps + s.num_open_steps <= cap or s.num_episodes == 1 or s.num_episodes == 0
