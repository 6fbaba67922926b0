"""A deliberately simple NumPy reference for the trajectory store's batches.

Everything is computed per sample from a plain list of episodes, with loops
and no cleverness, so that the Rust store can be checked field by field.
The random choices (which step, which prompt episode, proportional/random
starts) are taken from the Rust batch (``episodes``, ``timesteps``,
``prompt_episodes``, ``prompt_starts``); the reference recomputes everything
else and checks the choices are valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTION_PAD = -10.0


@dataclass
class Episode:
    obs: np.ndarray  # [T, od] float32
    actions: np.ndarray  # [T, ad] float32
    rewards: np.ndarray  # [T] float32
    task: int
    next_obs: np.ndarray | None = None
    terminals: np.ndarray | None = None
    truncations: np.ndarray | None = None  # None: add_episode's default (last step unless terminal)
    columns: dict = field(default_factory=dict)  # name -> [T, d] float32

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, np.float32)
        self.actions = np.asarray(self.actions, np.float32)
        self.rewards = np.asarray(self.rewards, np.float32).reshape(-1)
        if self.next_obs is None:
            nxt = np.concatenate([self.obs[1:], self.obs[-1:]], axis=0)
            self.next_obs = nxt
        self.next_obs = np.asarray(self.next_obs, np.float32)
        if self.terminals is None:
            self.terminals = np.zeros(len(self.rewards), np.float32)
        self.terminals = np.asarray(self.terminals, np.float32).reshape(-1)
        if self.truncations is None:
            self.truncations = np.zeros(len(self.rewards), np.float32)
            self.truncations[-1] = float(self.terminals[-1] == 0)
        self.truncations = np.asarray(self.truncations, np.float32).reshape(-1)

    @property
    def T(self) -> int:
        return len(self.rewards)

    def rtg(self) -> np.ndarray:
        out = np.zeros(self.T, np.float32)
        acc = 0.0
        for t in range(self.T - 1, -1, -1):
            acc += float(self.rewards[t])
            out[t] = np.float32(acc)
        return out

    def ret(self) -> float:
        return float(sum(float(r) for r in self.rewards))


def window_steps(T: int, step: int, K: int, anchor: str = "end") -> tuple[int, int]:
    """The real steps [t0, end] of the window drawn at `step` of an episode of T steps.

    anchor "end": the window ends at `step` and starts K - 1 steps earlier, clipped at 0;
    anchor "start" (the official Meta-DT / kzl rule): it starts at `step` and holds
    K steps, clipped at the episode's last step T - 1."""
    if anchor == "end":
        return max(0, step - K + 1), step
    if anchor == "start":
        return step, min(step + K, T) - 1
    raise ValueError(anchor)


def window(ep: Episode, end: int, K: int, h: int, return_scale: float, columns=(), start: int | None = None) -> dict:
    """One DT window of `ep` whose real steps are [start, end] (start None = end - K + 1,
    clipped at 0), right-aligned in K slots and left-padded; the context holds the h steps
    before `start` (clipped at 0) and the real steps, right-aligned in K + h slots."""
    if start is None:
        start = max(0, end - K + 1)
    assert 0 <= start <= end < ep.T and end - start + 1 <= K
    od, ad = ep.obs.shape[1], ep.actions.shape[1]
    rtg = ep.rtg()
    out = {
        "obs": np.zeros((K, od), np.float32),
        "actions": np.full((K, ad), ACTION_PAD, np.float32),
        "rewards": np.zeros(K, np.float32),
        "rtg": np.zeros(K, np.float32),
        "timesteps": np.zeros(K, np.int64),
        "mask": np.zeros(K, bool),
    }
    for name in columns:
        out[name] = np.zeros((K, ep.columns[name].shape[1]), np.float32)
    for j in range(K):
        t = end - K + 1 + j
        if t < start:
            continue
        out["obs"][j] = ep.obs[t]
        out["actions"][j] = ep.actions[t]
        out["rewards"][j] = ep.rewards[t]
        out["rtg"][j] = np.float32(rtg[t]) / np.float32(return_scale)
        out["timesteps"][j] = t
        out["mask"][j] = True
        for name in columns:
            out[name][j] = ep.columns[name][t]
    if h > 0:
        L = K + h
        out["ctx_obs"] = np.zeros((L, od), np.float32)
        out["ctx_actions"] = np.zeros((L, ad), np.float32)
        out["ctx_rewards"] = np.zeros(L, np.float32)
        out["ctx_mask"] = np.zeros(L, bool)
        for j in range(L):
            t = end - L + 1 + j
            if t < max(0, start - h):
                continue
            out["ctx_obs"][j] = ep.obs[t]
            out["ctx_actions"][j] = ep.actions[t]
            out["ctx_rewards"][j] = ep.rewards[t]
            out["ctx_mask"][j] = True
    return out


def step_context(ep: Episode, t: int, h: int) -> dict:
    """The h transitions strictly before step t, oldest first, left-padded with zeros."""
    od, ad = ep.obs.shape[1], ep.actions.shape[1]
    out = {
        "ctx_obs": np.zeros((h, od), np.float32),
        "ctx_actions": np.zeros((h, ad), np.float32),
        "ctx_rewards": np.zeros(h, np.float32),
        "ctx_mask": np.zeros(h, bool),
    }
    for i in range(h):
        s = t - h + i
        if s < 0:
            continue
        out["ctx_obs"][i] = ep.obs[s]
        out["ctx_actions"][i] = ep.actions[s]
        out["ctx_rewards"][i] = ep.rewards[s]
        out["ctx_mask"][i] = True
    return out


def transition(ep: Episode, t: int, h: int) -> dict:
    out = {
        "obs": ep.obs[t],
        "actions": ep.actions[t],
        "rewards": ep.rewards[t],
        "next_obs": ep.next_obs[t],
        "terminals": ep.terminals[t],
        "timesteps": t,
    }
    if h > 0:
        out.update(step_context(ep, t, h))
    return out


def step_scores(ep: Episode, column: str) -> list[float]:
    col = ep.columns[column]
    scores = []
    for t in range(ep.T):
        s = 0.0
        for x in col[t]:
            s += float(x)
        scores.append(s)
    return scores


def segment_score(ep: Episode, column: str | None, start: int, k: int) -> float:
    if column is None:
        return 0.0
    steps = step_scores(ep, column)
    acc = 0.0
    for t in range(start, start + k):
        acc += steps[t]
    return acc


def candidate_starts(T: int, k: int, start_min: int) -> list[int]:
    if T < k:
        return [0]
    lo = start_min if T >= start_min + k else 0
    return list(range(lo, T - k + 1))


def prompt_start(ep: Episode, k: int, start_min: int, strategy: str, column: str | None):
    """The deterministic start for argmax/last; None for random/proportional."""
    if ep.T < k:
        return 0
    starts = candidate_starts(ep.T, k, start_min)
    if strategy == "last":
        return ep.T - k
    if strategy == "argmax":
        scores = [segment_score(ep, column, s, k) for s in starts]
        best = 0
        for i, s in enumerate(scores):
            if s > scores[best]:
                best = i
        return starts[best]
    return None


def prompt(ep: Episode, start: int, k: int, return_scale: float) -> dict:
    od, ad = ep.obs.shape[1], ep.actions.shape[1]
    rtg = ep.rtg()
    out = {
        "prompt_obs": np.zeros((k, od), np.float32),
        "prompt_actions": np.full((k, ad), ACTION_PAD, np.float32),
        "prompt_rewards": np.zeros(k, np.float32),
        "prompt_rtg": np.zeros(k, np.float32),
        "prompt_timesteps": np.zeros(k, np.int64),
        "prompt_mask": np.zeros(k, bool),
    }
    n = min(k, ep.T)
    pad = k - n
    for i in range(n):
        t = start + i
        j = pad + i
        out["prompt_obs"][j] = ep.obs[t]
        out["prompt_actions"][j] = ep.actions[t]
        out["prompt_rewards"][j] = ep.rewards[t]
        out["prompt_rtg"][j] = np.float32(rtg[t]) / np.float32(return_scale)
        out["prompt_timesteps"][j] = t
        out["prompt_mask"][j] = True
    return out


def segment_scores(eps: list[Episode], column: str, k: int, start_min: int, episodes=None) -> dict:
    idx = range(len(eps)) if episodes is None else episodes
    E, S, V = [], [], []
    for e in idx:
        ep = eps[e]
        for s in candidate_starts(ep.T, k, start_min):  # the short-episode rule, as prompts
            E.append(e)
            S.append(s)
            V.append(segment_score(ep, column, s, min(k, ep.T)))
    return {"episodes": np.array(E, np.int64), "starts": np.array(S, np.int64), "scores": np.array(V, np.float64)}


def best_segments_argmax(eps: list[Episode], column: str, k: int, start_min: int, per: str) -> dict:
    seg = segment_scores(eps, column, k, start_min)
    best: dict[int, int] = {}
    for i, e in enumerate(seg["episodes"]):
        key = eps[e].task if per == "task" else int(e)
        if key not in best or seg["scores"][i] > seg["scores"][best[key]]:
            best[key] = i
    keys = sorted(best)
    sel = [best[k_] for k_ in keys]
    return {
        "keys": np.array(keys, np.int64),
        "episodes": seg["episodes"][sel],
        "starts": seg["starts"][sel],
        "scores": seg["scores"][sel],
    }
