"""The policy's input during a rollout: the store's live episodes, and prompts.

The store is the one owner of the batch format. During a rollout every env
is a *stream* of a small `TrajectoryStore` (`record_steps` appends each
transition to the stream's open episode with `add_step`), and at step ``t``
the policy's input is ``store.live_windows(...)``: per env, exactly what
`TrajectoryStore.sample_windows` gives the trainer for a window ending at
``t`` (see docs/store.md, "live windows"): the K-step window with the obs of
step ``t`` and its (unknown) action and reward 0, rtg = (target return minus
the rewards received) / return_scale, and with a context the ``ctx_*`` of the
h steps before every position (the partial contexts the world model was
trained on; protocol section 8: the original used all-zero contexts until
``t >= h - 1``; this does not).

Prompts (fixed for the whole episode) are segments of stored episodes, built
by the store too (`TrajectoryStore.prompt_segments`, the ``prompt_*`` layout
of `sample_windows`); `Prompt` holds one row per env.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from metadt._core import PromptBatch, TrajectoryStore


@dataclass
class Prompt:
    """A k-step prompt per env, in the `sample_windows` ``prompt_*`` layout (NumPy; the
    ``PromptBatch`` schema of ``metadt/_core.pyi``)."""

    obs: np.ndarray        # [N, k, obs]
    actions: np.ndarray    # [N, k, act]
    rewards: np.ndarray    # [N, k]
    rtg: np.ndarray        # [N, k] (already divided by the return scale)
    timesteps: np.ndarray  # [N, k] int64
    mask: np.ndarray       # [N, k] bool
    episodes: np.ndarray   # [N] int64 (episode id in the store it came from)
    starts: np.ndarray     # [N] int64 (first step of the segment in its episode)
    source: str = ""       # where the segments came from: "own" or "dataset:<quality>"

    @classmethod
    def from_batch(cls, batch: "PromptBatch | Mapping[str, np.ndarray]", source: str = "") -> "Prompt":
        """From the ``prompt_*`` arrays of a store batch (`prompt_segments`, `sample_windows`)."""
        return cls(*(np.asarray(batch[f"prompt_{f}"]) for f in
                     ("obs", "actions", "rewards", "rtg", "timesteps", "mask", "episodes", "starts")),
                   source=source)

    @property
    def num(self) -> int:
        return int(self.obs.shape[0])

    def take(self, index: np.ndarray | list[int]) -> "Prompt":
        """The prompts of the given envs (e.g. one prompt per task repeated per episode)."""
        idx = np.asarray(index, dtype=np.int64)
        return Prompt(self.obs[idx], self.actions[idx], self.rewards[idx], self.rtg[idx],
                      self.timesteps[idx], self.mask[idx], self.episodes[idx], self.starts[idx],
                      self.source)

    def arrays(self) -> "PromptBatch":
        return {
            "prompt_obs": self.obs, "prompt_actions": self.actions,
            "prompt_rewards": self.rewards, "prompt_rtg": self.rtg,
            "prompt_timesteps": self.timesteps, "prompt_mask": self.mask,
            "prompt_episodes": self.episodes, "prompt_starts": self.starts,
        }


def record_steps(store: "TrajectoryStore", streams: np.ndarray, tasks: np.ndarray, obs: np.ndarray,
                 actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray) -> None:
    """Append step t of every env (``obs [N, obs]``, ``actions [N, act]``, ``rewards [N]``,
    ``next_obs [N, obs]``) to its stream's open episode (never closed: a rollout's store
    only serves `live_windows`)."""
    for i, st in enumerate(np.asarray(streams, dtype=np.int64).tolist()):
        store.add_step(obs[i], actions[i], float(rewards[i]), next_obs[i], False,
                       task=int(tasks[i]), stream=st)


def to_torch(batch: dict[str, np.ndarray], device: Any = "cpu") -> dict[str, Any]:
    """NumPy batch -> torch tensors on `device` (float32, int64, bool kept)."""
    import torch

    return {k: torch.as_tensor(np.ascontiguousarray(v), device=device) for k, v in batch.items()}
