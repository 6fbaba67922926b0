"""Test helpers for the model/training tests (no tests here).

- ``NumpyStore``: a tiny pure-NumPy stand-in of ``metadt.TrajectoryStore`` with
  the documented sampling contract (used only when the Rust store is missing);
- ``make_point_dataset``: a small point-robot dataset of scripted policies of
  different quality, written through ``write_dataset``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _rtg(rewards: np.ndarray) -> np.ndarray:
    return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


class NumpyStore:
    def __init__(self, obs_dim: int, act_dim: int, capacity=None):
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self._eps: list[dict] = []
        self._cols: dict[str, np.ndarray] = {}
        self._cache = None

    # ----------------------------------------------------------- building
    def add_episode(self, obs, actions, rewards, next_obs=None, task=0, terminals=None):
        obs = np.asarray(obs, np.float32).reshape(-1, self.obs_dim)
        rewards = np.asarray(rewards, np.float32).reshape(-1)
        if next_obs is None:
            next_obs = np.concatenate([obs[1:], obs[-1:]], 0)
        self._eps.append(dict(obs=obs, actions=np.asarray(actions, np.float32).reshape(-1, self.act_dim),
                              rewards=rewards, next_obs=np.asarray(next_obs, np.float32).reshape(-1, self.obs_dim),
                              task=int(task)))
        self._cache = None
        return len(self._eps) - 1

    def _c(self):
        if self._cache is None:
            e = self._eps
            self._cache = {
                "obs": np.concatenate([x["obs"] for x in e]),
                "actions": np.concatenate([x["actions"] for x in e]),
                "rewards": np.concatenate([x["rewards"] for x in e]),
                "next_obs": np.concatenate([x["next_obs"] for x in e]),
                "rtg": np.concatenate([_rtg(x["rewards"]) for x in e]),
                "lengths": np.array([len(x["rewards"]) for x in e], np.int64),
                "task_of_ep": np.array([x["task"] for x in e], np.int64),
            }
            c = self._cache
            c["offsets"] = np.concatenate([[0], np.cumsum(c["lengths"])[:-1]]).astype(np.int64)
            c["ep"] = np.repeat(np.arange(len(e)), c["lengths"])
            c["t"] = np.arange(len(c["ep"])) - c["offsets"][c["ep"]]
        return self._cache

    # --------------------------------------------------------------- info
    @property
    def num_steps(self):
        return int(self._c()["lengths"].sum())

    def episode_lengths(self):
        return self._c()["lengths"].copy()

    def episode_offsets(self):
        return self._c()["offsets"].copy()

    def episode_returns(self):
        return np.array([x["rewards"].sum() for x in self._eps])

    def tasks(self):
        return sorted(set(int(x["task"]) for x in self._eps))

    def episodes_of_task(self, t):
        return np.flatnonzero(self._c()["task_of_ep"] == int(t))

    def column(self, name):
        c = self._c()
        if name in ("obs", "actions", "rewards", "next_obs", "rtg"):
            return c[name]
        if name not in self._cols:
            raise KeyError(f"no column {name!r}")
        return self._cols[name]

    def attach_column(self, name, values):
        v = np.asarray(values, np.float32)
        assert v.ndim == 2 and len(v) == self.num_steps, v.shape
        self._cols[name] = v

    def save(self, path):
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        np.savez(p / "eps.npz", **{f"{i}_{k}": v for i, e in enumerate(self._eps)
                                   for k, v in e.items()})
        (p / "meta.json").write_text(json.dumps({"n": len(self._eps), "obs_dim": self.obs_dim,
                                                 "act_dim": self.act_dim}))

    @classmethod
    def load(cls, path, mmap=True):
        p = Path(path)
        meta = json.loads((p / "meta.json").read_text())
        s = cls(meta["obs_dim"], meta["act_dim"])
        d = np.load(p / "eps.npz")
        for i in range(meta["n"]):
            s.add_episode(d[f"{i}_obs"], d[f"{i}_actions"], d[f"{i}_rewards"], d[f"{i}_next_obs"],
                          int(d[f"{i}_task"]))
        return s

    # ----------------------------------------------------------- sampling
    def _steps(self, tasks):
        c = self._c()
        if tasks is None:
            return np.arange(self.num_steps)
        return np.flatnonzero(np.isin(c["task_of_ep"][c["ep"]], np.asarray(tasks)))

    def _gather(self, name, idx, valid, pad):
        col = self.column(name)
        out = col[np.where(valid, idx, 0)]
        mask = valid if col.ndim == 1 else valid[..., None]
        return np.where(mask, out, pad).astype(np.float32)

    def sample_transitions(self, batch, context=0, tasks=None, seed=None):
        c = self._c()
        rng = np.random.default_rng(seed)
        n = rng.choice(self._steps(tasks), size=batch)
        out = {k: c[k][n] for k in ("obs", "actions", "rewards", "next_obs")}
        out.update(terminals=np.zeros(batch, np.float32), tasks=c["task_of_ep"][c["ep"][n]],
                   episodes=c["ep"][n], timesteps=c["t"][n])
        if context:
            idx = n[:, None] - context + np.arange(context)
            valid = idx >= c["offsets"][c["ep"][n]][:, None]
            out.update(ctx_obs=self._gather("obs", idx, valid, 0), ctx_actions=self._gather("actions", idx, valid, 0),
                       ctx_rewards=self._gather("rewards", idx, valid, 0), ctx_mask=valid)
        return out

    def sample_windows(self, batch, length, context=0, return_scale=1.0, columns=(), prompt=None,
                       tasks=None, seed=None):
        c = self._c()
        rng = np.random.default_rng(seed)
        end = rng.choice(self._steps(tasks), size=batch)
        start = c["offsets"][c["ep"][end]][:, None]
        idx = end[:, None] - length + 1 + np.arange(length)
        valid = idx >= start
        out = {"obs": self._gather("obs", idx, valid, 0), "actions": self._gather("actions", idx, valid, -10),
               "rewards": self._gather("rewards", idx, valid, 0),
               "rtg": self._gather("rtg", idx, valid, 0) / return_scale,
               "timesteps": np.where(valid, c["t"][np.where(valid, idx, 0)], 0), "mask": valid,
               "tasks": c["task_of_ep"][c["ep"][end]], "episodes": c["ep"][end]}
        for name in columns:
            out[name] = self._gather(name, idx, valid, 0)
        if context:
            idx = end[:, None] - length - context + 1 + np.arange(length + context)
            valid = idx >= start
            out.update(ctx_obs=self._gather("obs", idx, valid, 0), ctx_actions=self._gather("actions", idx, valid, 0),
                       ctx_rewards=self._gather("rewards", idx, valid, 0), ctx_mask=valid)
        if prompt is not None:
            p = prompt if isinstance(prompt, dict) else vars(prompt)
            k, smin = int(p["length"]), int(p.get("start_min", 0))
            score = (np.zeros(self.num_steps) if p.get("score") is None
                     else self.column(p["score"]).reshape(self.num_steps, -1).sum(1))
            pidx = np.zeros((batch, k), np.int64)
            eps, starts = np.zeros(batch, np.int64), np.zeros(batch, np.int64)
            for b in range(batch):
                e = rng.choice(self.episodes_of_task(out["tasks"][b]))
                o, T = c["offsets"][e], c["lengths"][e]
                cands = np.arange(smin, max(T - k, smin) + 1)
                sc = np.array([score[o + s: o + s + k].sum() for s in cands])
                strat = p["strategy"]
                if strat == "argmax":
                    s = cands[int(np.argmax(sc))]
                elif strat == "proportional":
                    s = cands[rng.choice(len(cands), p=sc / sc.sum())] if sc.sum() > 0 else cands[0]
                elif strat == "random":
                    s = rng.choice(cands)
                else:
                    s = cands[-1]
                pidx[b] = o + s + np.arange(k)
                eps[b], starts[b] = e, s
            v = np.ones_like(pidx, bool)
            out.update(prompt_obs=self._gather("obs", pidx, v, 0), prompt_actions=self._gather("actions", pidx, v, 0),
                       prompt_rewards=self._gather("rewards", pidx, v, 0),
                       prompt_rtg=self._gather("rtg", pidx, v, 0) / return_scale,
                       prompt_timesteps=c["t"][pidx], prompt_mask=v, prompt_episodes=eps,
                       prompt_starts=starts)
        return out


def store_class():
    """The real TrajectoryStore when it is built, else the NumPy stand-in."""
    try:
        from metadt import TrajectoryStore
        return TrajectoryStore
    except ImportError:
        return NumpyStore


def point_episodes(goal, n, noise, rng, horizon=20, bound=0.1):
    """Scripted point-robot episodes: move toward the goal with Gaussian action noise."""
    out = []
    goal = np.asarray(goal, np.float64)
    for _ in range(n):
        s = np.zeros(2)
        obs, acts, rews, nxt = [], [], [], []
        for _t in range(horizon):
            a = np.clip(np.clip(goal - s, -bound, bound) + noise * rng.standard_normal(2), -bound, bound)
            s2 = s + a
            obs.append(s), acts.append(a), rews.append(-np.linalg.norm(s2 - goal)), nxt.append(s2)
            s = s2
        out.append(tuple(np.asarray(x, np.float32) for x in (obs, acts, rews, nxt)))
    return out


def make_point_dataset(path, goals, num_train, episodes=8, qualities=None, seed=0,
                       store_cls=None):
    """A point-robot dataset with the given goals (first `num_train` are train tasks)."""
    from metadt.data.dataset import DatasetCard, write_dataset

    store_cls = store_cls or store_class()
    qualities = qualities or {"expert": 0.01, "medium": 0.06}
    rng = np.random.default_rng(seed)
    stores = {}
    for q, noise in qualities.items():
        st = store_cls(2, 2)
        for t, g in enumerate(goals):
            for o, a, r, n in point_episodes(g, episodes, noise, rng):
                st.add_episode(o, a, r, n, task=t)
        stores[q] = st
    tasks = [{"family": "point-robot", "goal": [float(x), float(y)]} for x, y in goals]
    card = DatasetCard(family="point-robot", family_seed=seed, obs_dim=2, act_dim=2, horizon=20,
                       tasks=tasks, train_ids=list(range(num_train)),
                       test_ids=list(range(num_train, len(goals))))
    return write_dataset(path, card, stores)
