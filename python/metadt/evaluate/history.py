"""Live per-env histories turned into model batches in the `sample_windows` layout.

During a rollout all envs step in lockstep (every task shares the family's
horizon), so one step counter ``t`` serves every env. At step ``t`` the
policy sees, per env, exactly what `TrajectoryStore.sample_windows` gives the
trainer for a window ending at ``t``:

- ``obs`` / ``actions`` / ``rewards`` / ``rtg`` / ``timesteps`` / ``mask``
  [N, K]: steps ``t-K+1 .. t``, left-padded (obs 0, actions -10, rewards 0,
  rtg 0, timesteps 0, mask False). The action and reward of step ``t`` are
  not known yet: they are 0 (the policy predicts the action of the last
  position from its state token, which is causal, so they are never seen);
- ``ctx_obs`` / ``ctx_actions`` / ``ctx_rewards`` / ``ctx_mask`` [N, K+h]:
  steps ``t-K-h+1 .. t``, zero-padded; the context of window position ``j``
  is ``ctx_*[:, j:j+h]``, i.e. the h transitions strictly before that step.
  Steps before 0 are padding (mask False), so at ``t = 0`` the context is all
  padding, at ``t = 1`` it holds one real transition, and so on: the partial
  windows the world model was trained on (protocol section 8: the original
  used all-zero contexts until ``t >= h - 1``; this does not). Step ``t``
  itself is masked in the context (its action and reward are unknown; no
  window position uses it);
- ``rtg`` is the remaining target return divided by the family's return
  scale: target at ``t = 0``, minus each reward received since;
- ``tasks`` [N] and ``episodes`` [N] (-1: a live episode, not a stored one);
- with a prompt, the ``prompt_*`` arrays (fixed for the whole episode).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ACTION_PAD = -10.0
"""Padding value of actions in windows (as in `sample_windows`)."""


@dataclass
class Prompt:
    """A k-step prompt per env, in the `sample_windows` ``prompt_*`` layout (NumPy)."""

    obs: np.ndarray        # [N, k, obs]
    actions: np.ndarray    # [N, k, act]
    rewards: np.ndarray    # [N, k]
    rtg: np.ndarray        # [N, k] (already divided by the return scale)
    timesteps: np.ndarray  # [N, k] int64
    mask: np.ndarray       # [N, k] bool
    episodes: np.ndarray   # [N] int64 (episode id in the store it came from)
    starts: np.ndarray     # [N] int64 (first step of the segment in its episode)
    source: str = ""       # where the segments came from: "own" or "dataset:<quality>"

    @property
    def num(self) -> int:
        return int(self.obs.shape[0])

    def take(self, index: np.ndarray | list[int]) -> "Prompt":
        """The prompts of the given envs (e.g. one prompt per task repeated per episode)."""
        idx = np.asarray(index, dtype=np.int64)
        return Prompt(self.obs[idx], self.actions[idx], self.rewards[idx], self.rtg[idx],
                      self.timesteps[idx], self.mask[idx], self.episodes[idx], self.starts[idx],
                      self.source)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "prompt_obs": self.obs, "prompt_actions": self.actions,
            "prompt_rewards": self.rewards, "prompt_rtg": self.rtg,
            "prompt_timesteps": self.timesteps, "prompt_mask": self.mask,
            "prompt_episodes": self.episodes, "prompt_starts": self.starts,
        }


def segment_prompt(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   starts: np.ndarray, length: int, return_scale: float,
                   episodes: np.ndarray | None = None, source: str = "") -> Prompt:
    """Prompts from whole episodes ``obs [N, T, obs]``, ``actions [N, T, act]``,
    ``rewards [N, T]``: the segment ``starts[i] .. starts[i]+length-1`` of episode i.

    The prompt's rtg is the episode's return-to-go from each step (divided by
    `return_scale`) and its timesteps are the steps' indices in the episode.
    """
    obs = np.asarray(obs, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    rewards = np.asarray(rewards, dtype=np.float64)
    n, T = rewards.shape
    starts = np.asarray(starts, dtype=np.int64).reshape(n)
    k = int(length)
    if k < 1 or k > T:
        raise ValueError(f"prompt length {k} must be in [1, {T}]")
    if np.any(starts < 0) or np.any(starts + k > T):
        raise ValueError(f"prompt segments {starts.tolist()} (length {k}) do not fit episodes of {T} steps")
    idx = starts[:, None] + np.arange(k)[None, :]                  # [N, k]
    rows = np.arange(n)[:, None]
    rtg_all = np.flip(np.cumsum(np.flip(rewards, 1), 1), 1)        # return-to-go per step
    return Prompt(
        obs=obs[rows, idx],
        actions=actions[rows, idx],
        rewards=rewards[rows, idx].astype(np.float32),
        rtg=(rtg_all[rows, idx] / float(return_scale)).astype(np.float32),
        timesteps=idx.astype(np.int64),
        mask=np.ones((n, k), dtype=bool),
        episodes=(np.full(n, -1, dtype=np.int64) if episodes is None
                  else np.asarray(episodes, dtype=np.int64).reshape(n)),
        starts=starts,
        source=source,
    )


class LiveHistory:
    """Histories of N envs stepped in lockstep, and their model batches."""

    def __init__(self, num_envs: int, obs_dim: int, act_dim: int, horizon: int,
                 window: int, context: int, return_scale: float,
                 tasks: np.ndarray | list[int] | None = None) -> None:
        if window < 1 or context < 0 or horizon < 1:
            raise ValueError("window must be >= 1, context >= 0, horizon >= 1")
        self.n, self.obs_dim, self.act_dim = int(num_envs), int(obs_dim), int(act_dim)
        self.horizon, self.K, self.h = int(horizon), int(window), int(context)
        self.return_scale = float(return_scale)
        self.tasks = (np.full(self.n, -1, dtype=np.int64) if tasks is None
                      else np.asarray(tasks, dtype=np.int64).reshape(self.n))
        self.obs = np.zeros((self.n, self.horizon + 1, self.obs_dim), dtype=np.float64)
        self.actions = np.zeros((self.n, self.horizon, self.act_dim), dtype=np.float64)
        self.rewards = np.zeros((self.n, self.horizon), dtype=np.float64)
        self.rtg = np.zeros((self.n, self.horizon + 1), dtype=np.float64)
        self.t = -1

    def reset(self, obs0: np.ndarray, target_returns: np.ndarray | float) -> None:
        """Start new episodes from ``obs0 [N, obs]`` with raw target returns [N]."""
        self.obs[:] = 0.0
        self.actions[:] = 0.0
        self.rewards[:] = 0.0
        self.rtg[:] = 0.0
        self.obs[:, 0] = np.asarray(obs0, dtype=np.float64).reshape(self.n, self.obs_dim)
        self.rtg[:, 0] = np.broadcast_to(np.asarray(target_returns, dtype=np.float64), (self.n,))
        self.t = 0

    def record(self, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray) -> None:
        """Record the transition of step t and advance to t + 1."""
        t = self.t
        if t < 0:
            raise RuntimeError("call reset() first")
        if t >= self.horizon:
            raise RuntimeError(f"episode already has {self.horizon} steps")
        self.actions[:, t] = np.asarray(actions, dtype=np.float64).reshape(self.n, self.act_dim)
        self.rewards[:, t] = np.asarray(rewards, dtype=np.float64).reshape(self.n)
        self.obs[:, t + 1] = np.asarray(next_obs, dtype=np.float64).reshape(self.n, self.obs_dim)
        self.rtg[:, t + 1] = self.rtg[:, t] - self.rewards[:, t]
        self.t = t + 1

    def batch(self, prompt: Prompt | None = None) -> dict[str, np.ndarray]:
        """The model input for the current step (NumPy; see the module docstring)."""
        t = self.t
        if t < 0 or t >= self.horizon:
            raise RuntimeError("no current step: reset() first, and not past the horizon")
        K, h = self.K, self.h
        steps = np.arange(t - K + 1, t + 1)
        valid = steps >= 0
        known = valid & (steps < t)            # steps whose action and reward are recorded
        s = np.clip(steps, 0, None)
        a_idx = np.clip(steps, 0, self.horizon - 1)
        out: dict[str, Any] = {
            "obs": (self.obs[:, s] * valid[None, :, None]).astype(np.float32),
            "actions": np.where(valid[None, :, None],
                                self.actions[:, a_idx] * known[None, :, None],
                                ACTION_PAD).astype(np.float32),
            "rewards": (self.rewards[:, a_idx] * known[None, :]).astype(np.float32),
            "rtg": (self.rtg[:, s] * valid[None, :] / self.return_scale).astype(np.float32),
            "timesteps": np.broadcast_to(np.where(valid, steps, 0), (self.n, K)).astype(np.int64),
            "mask": np.broadcast_to(valid, (self.n, K)).copy(),
            "tasks": self.tasks.copy(),
            "episodes": np.full(self.n, -1, dtype=np.int64),
        }
        if h > 0:
            csteps = np.arange(t - K - h + 1, t + 1)
            cvalid = (csteps >= 0) & (csteps < t)
            cs = np.clip(csteps, 0, self.horizon - 1)
            out["ctx_obs"] = (self.obs[:, np.clip(csteps, 0, None)] * cvalid[None, :, None]).astype(np.float32)
            out["ctx_actions"] = (self.actions[:, cs] * cvalid[None, :, None]).astype(np.float32)
            out["ctx_rewards"] = (self.rewards[:, cs] * cvalid[None, :]).astype(np.float32)
            out["ctx_mask"] = np.broadcast_to(cvalid, (self.n, K + h)).copy()
        if prompt is not None:
            if prompt.num != self.n:
                raise ValueError(f"prompt has {prompt.num} rows for {self.n} envs")
            out.update(prompt.arrays())
        return out

    # ------------------------------------------------------------ results
    def episode_returns(self) -> np.ndarray:
        return self.rewards[:, : max(self.t, 0)].sum(axis=1)


def to_torch(batch: dict[str, np.ndarray], device: Any = "cpu") -> dict[str, Any]:
    """NumPy batch -> torch tensors on `device` (float32, int64, bool kept)."""
    import torch

    return {k: torch.as_tensor(np.ascontiguousarray(v), device=device) for k, v in batch.items()}
