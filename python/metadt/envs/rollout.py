"""Rolling out policies on a family's vector env (NumPy only: no torch, no models).

Every episode runs the family's full horizon (no early termination), the
policy's actions are clipped to the action bounds, and all tasks (times
``parallel`` copies of each) are stepped together. A policy is an :data:`ActFn`
(the stacked SAC actors of `metadt.collect`, or :func:`random_act_fn`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from metadt.seeding import chunk_seed

#: ``act(obs [N, P, obs_dim] float32 ndarray) -> actions [N, P, act_dim]``.
ActFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Episodes:
    """Episodes of ``N`` tasks, ``E`` per task, horizon ``T``."""

    obs: np.ndarray  # [N, E, T, obs_dim] float32
    actions: np.ndarray  # [N, E, T, act_dim] float32
    rewards: np.ndarray  # [N, E, T] float32
    next_obs: np.ndarray  # [N, E, T, obs_dim] float32
    terminals: np.ndarray  # [N, E, T] bool

    @property
    def returns(self) -> np.ndarray:
        """``[N, E]`` episode returns (float64 sums)."""
        return self.rewards.astype(np.float64).sum(-1)

    def episode(self, task: int, ep: int) -> dict[str, np.ndarray]:
        return {"obs": self.obs[task, ep], "actions": self.actions[task, ep],
                "rewards": self.rewards[task, ep], "next_obs": self.next_obs[task, ep],
                "terminals": self.terminals[task, ep]}


def random_act_fn(low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> ActFn:
    """A uniform-random policy over the action box."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high, size=obs.shape[:-1] + low.shape)

    return act


class Roller:
    """Runs episodes of many tasks with one reusable vector env.

    ``tasks`` are the family's task dicts (agent/task ``i`` of a policy acts in
    ``tasks[i]``); ``parallel`` copies of each are stepped side by side.
    """

    def __init__(self, family: Any, tasks: Sequence[Mapping[str, Any]], parallel: int) -> None:
        self.family = family
        self.tasks = [dict(t) for t in tasks]
        self.parallel = int(parallel)
        self.n = len(self.tasks)
        self._env = family.make_vector_env([t for t in self.tasks for _ in range(self.parallel)])
        self.low = np.asarray(family.action_low, dtype=np.float64)
        self.high = np.asarray(family.action_high, dtype=np.float64)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> "Roller":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, act: ActFn, episodes_per_task: int, seed: int,
            on_chunk: Callable[[int], None] | None = None, seed_offset: int = 0,
            seed_stride: int | None = None) -> Episodes:
        """``episodes_per_task`` episodes per task; chunk ``k`` resets with seed
        ``seed + k*M + seed_offset`` (env ``j`` of the vector env: that plus ``j``),
        ``M = seed_stride`` (default: the number of envs). A block of tasks ``lo..`` of
        ``N`` reproduces the seeds of the whole run with ``seed_offset=lo*parallel``,
        ``seed_stride=N*parallel``."""
        n, p, horizon = self.n, self.parallel, int(self.family.horizon)
        od, ad = int(self.family.obs_dim), int(self.family.act_dim)
        e_total = int(episodes_per_task)
        out = Episodes(
            obs=np.zeros((n, e_total, horizon, od), np.float32),
            actions=np.zeros((n, e_total, horizon, ad), np.float32),
            rewards=np.zeros((n, e_total, horizon), np.float32),
            next_obs=np.zeros((n, e_total, horizon, od), np.float32),
            terminals=np.zeros((n, e_total, horizon), bool),
        )
        done_eps = 0
        chunk = 0
        while done_eps < e_total:
            n_eps = min(p, e_total - done_eps)
            stride = n * p if seed_stride is None else int(seed_stride)
            obs, _ = self._env.reset(seed=chunk_seed(seed, chunk, stride, seed_offset))
            sl = slice(done_eps, done_eps + n_eps)
            for t in range(horizon):
                o = obs.reshape(n, p, od)
                a = np.clip(np.asarray(act(o.astype(np.float32)), dtype=np.float64), self.low,
                            self.high)
                nobs, rew, term, trunc, _ = self._env.step(a.reshape(n * p, ad))
                out.obs[:, sl, t] = o[:, :n_eps]
                out.actions[:, sl, t] = a[:, :n_eps]
                out.rewards[:, sl, t] = rew.reshape(n, p)[:, :n_eps]
                out.next_obs[:, sl, t] = nobs.reshape(n, p, od)[:, :n_eps]
                out.terminals[:, sl, t] = term.reshape(n, p)[:, :n_eps]
                obs = nobs
            done_eps += n_eps
            chunk += 1
            if on_chunk is not None:
                on_chunk(n_eps)
        return out
