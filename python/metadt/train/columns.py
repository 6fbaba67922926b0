"""Per-step quantities over a whole store: contexts, z, world-model errors.

A sequential, sampling-free pass: the store's episodes are laid out
contiguously (``episode_offsets`` / ``episode_lengths``), so the h-step context
of global step ``n`` is steps ``n-h .. n-1`` cut at its episode's start. The
pass is batched (``batch_size`` steps per forward) and vectorized in NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


def _col(store, name: str) -> np.ndarray:
    return np.asarray(store.column(name), dtype=np.float32)


@dataclass
class StepTable:
    """Column views of a store plus, per global step, its episode start, time index and task."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    ep_start: np.ndarray
    timestep: np.ndarray
    task: np.ndarray
    episode: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.ep_start)

    @classmethod
    def of(cls, store) -> "StepTable":
        lengths = np.asarray(store.episode_lengths(), dtype=np.int64)
        offsets = np.asarray(store.episode_offsets(), dtype=np.int64)[: len(lengths)]
        n = int(store.num_steps)
        ep = np.repeat(np.arange(len(lengths)), lengths)
        if len(ep) != n:
            raise ValueError(f"store episode lengths sum to {len(ep)} but it holds {n} steps")
        order = np.argsort(offsets, kind="stable")
        # global step -> episode, assuming contiguous episodes at their offsets
        episode = np.empty(n, dtype=np.int64)
        ep_start = np.empty(n, dtype=np.int64)
        timestep = np.empty(n, dtype=np.int64)
        for e in order:
            o, ln = int(offsets[e]), int(lengths[e])
            episode[o:o + ln] = e
            ep_start[o:o + ln] = o
            timestep[o:o + ln] = np.arange(ln)
        ep_task = np.empty(len(lengths), dtype=np.int64)
        for t in store.tasks():
            ep_task[np.asarray(store.episodes_of_task(int(t)), dtype=np.int64)] = int(t)
        return cls(
            obs=_col(store, "obs"), actions=_col(store, "actions"),
            rewards=_col(store, "rewards").reshape(n), next_obs=_col(store, "next_obs"),
            ep_start=ep_start, timestep=timestep, task=ep_task[episode], episode=episode,
        )

    def steps_of_tasks(self, tasks) -> np.ndarray:
        return np.flatnonzero(np.isin(self.task, np.asarray(list(tasks), dtype=np.int64)))

    def gather(self, idx: np.ndarray, h: int, device: torch.device | str = "cpu"
               ) -> dict[str, torch.Tensor]:
        """A ``sample_transitions``-layout batch for global steps ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        cidx = idx[:, None] - h + np.arange(h)[None, :]
        valid = cidx >= self.ep_start[idx][:, None]
        cidx = np.where(valid, cidx, 0)
        m = valid[..., None]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return {
            "obs": t(self.obs[idx]), "actions": t(self.actions[idx]),
            "rewards": t(self.rewards[idx]), "next_obs": t(self.next_obs[idx]),
            "ctx_obs": t(np.where(m, self.obs[cidx], 0.0).astype(np.float32)),
            "ctx_actions": t(np.where(m, self.actions[cidx], 0.0).astype(np.float32)),
            "ctx_rewards": t(np.where(valid, self.rewards[cidx], 0.0).astype(np.float32)),
            "ctx_mask": t(valid),
            "tasks": t(self.task[idx]), "timesteps": t(self.timestep[idx]),
        }

    def batches(self, h: int, batch_size: int, idx: np.ndarray | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[np.ndarray, dict]]:
        idx = np.arange(self.num_steps) if idx is None else np.asarray(idx, dtype=np.int64)
        for lo in range(0, len(idx), batch_size):
            part = idx[lo:lo + batch_size]
            yield part, self.gather(part, h, device)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def compute_z(store_or_table, world_model, batch_size: int = 4096,
              idx: np.ndarray | None = None) -> np.ndarray:
    """z of every step (or of steps ``idx``): ``[n, z_dim]`` float32."""
    table = store_or_table if isinstance(store_or_table, StepTable) else StepTable.of(store_or_table)
    world_model.eval()
    dev = _device_of(world_model)
    n = table.num_steps if idx is None else len(idx)
    out = np.empty((n, world_model.z_dim), dtype=np.float32)
    pos = 0
    for part, b in table.batches(world_model.context_len, batch_size, idx, dev):
        z = world_model.encode(b["ctx_obs"], b["ctx_actions"], b["ctx_rewards"], b["ctx_mask"])
        out[pos:pos + len(part)] = z.float().cpu().numpy()
        pos += len(part)
    return out


@torch.no_grad()
def compute_step_errors(store_or_table, world_model, batch_size: int = 4096,
                        idx: np.ndarray | None = None) -> np.ndarray:
    """World-model error of every step (or of steps ``idx``): ``[n]`` float32
    (on the model's device when the kernels run there: :mod:`metadt.train.device_scoring`)."""
    table = store_or_table if isinstance(store_or_table, StepTable) else StepTable.of(store_or_table)
    from metadt.train import device_scoring

    if device_scoring.on_device(world_model):
        return device_scoring.step_errors(table, world_model, batch_size, idx)
    world_model.eval()
    dev = _device_of(world_model)
    n = table.num_steps if idx is None else len(idx)
    out = np.empty(n, dtype=np.float32)
    pos = 0
    for part, b in table.batches(world_model.context_len, batch_size, idx, dev):
        e = world_model.step_errors(b["obs"], b["actions"], b["rewards"], b["next_obs"],
                                    b["ctx_obs"], b["ctx_actions"], b["ctx_rewards"], b["ctx_mask"])
        out[pos:pos + len(part)] = e.float().cpu().numpy()
        pos += len(part)
    return out


def attach_z(store, world_model, column: str = "wm_z", batch_size: int = 4096) -> None:
    """Compute z for every step of ``store`` and attach it as column ``column`` ``[N, z_dim]``."""
    store.attach_column(column, compute_z(store, world_model, batch_size))
