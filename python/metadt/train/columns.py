"""Per-step quantities over a whole store: z, world-model errors.

A sequential, sampling-free pass: the store itself iterates over its steps
in order with their h-step contexts (`TrajectoryStore.iter_steps` /
`gather_steps`, the ``sample_transitions`` layout, built in Rust), in
batches of ``batch_size`` steps per forward. `StepTable` adds, per global
step, its episode, time index and task as NumPy arrays (for selecting
steps); it builds no batch itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

if TYPE_CHECKING:
    from metadt._core import StepBatch


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
    store: Any = None
    """The store the columns come from (it builds the batches of `gather` / `batches`)."""

    #: the keys of a `gather` batch (the store's ``StepBatch`` minus its bookkeeping keys)
    KEYS = ("obs", "actions", "rewards", "next_obs", "ctx_obs", "ctx_actions", "ctx_rewards",
            "ctx_mask", "tasks", "timesteps")

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
            store=store,
        )

    def steps_of_tasks(self, tasks) -> np.ndarray:
        return np.flatnonzero(np.isin(self.task, np.asarray(list(tasks), dtype=np.int64)))

    def _torch(self, b: "StepBatch", device: torch.device | str) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(b[k]).to(device) for k in self.KEYS if k in b}

    def gather(self, idx: np.ndarray, context_len: int, device: torch.device | str = "cpu"
               ) -> dict[str, torch.Tensor]:
        """A ``sample_transitions``-layout batch for global steps ``idx`` (built by the store)."""
        return self._torch(self.store.gather_steps(np.asarray(idx, dtype=np.int64), context_len), device)

    def batches(self, context_len: int, batch_size: int, idx: np.ndarray | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[np.ndarray, dict]]:
        """``(steps, batch)`` for every step (or the steps ``idx``) in order, ``batch_size`` at a
        time (the store's `iter_steps`)."""
        steps = None if idx is None else np.asarray(idx, dtype=np.int64)
        for b in self.store.iter_steps(context_len, batch_size, steps):
            yield b["steps"], self._torch(b, device)


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
