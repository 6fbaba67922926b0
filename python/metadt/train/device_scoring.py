"""World-model errors and complementary-prompt scoring on the world model's device.

When the world model runs where the Triton kernels run (CUDA, or the CPU
under ``TRITON_INTERPRET=1`` with ``METADT_KERNELS=triton`` for tests), the
per-step errors are computed there, contexts included, and scored there by
:func:`metadt.kernels.best_segments` (one launch: windowed float64 error sums
from ``start_min``, the best start per episode or per task, ties to the
earliest). Only the chosen starts (few-shot) or the finished error column
(training) cross to the host, once. Everywhere else the host path runs: the
errors are gathered in NumPy batches and the Rust store scores them
(``store.best_segments`` / the sampler). Both paths sum a segment's errors in
float64 in the same order, so on the same errors they choose the same segments.

:func:`on_device` is the one switch; it asks the kernels' dispatch point.
"""
from __future__ import annotations

import numpy as np
import torch

import metadt.kernels as K
from metadt.layout import context_index, episode_context_mask, episode_contexts
from metadt.runtime import to_numpy, to_torch


def _param(world_model: torch.nn.Module) -> torch.Tensor:
    return next(world_model.parameters())


def on_device(world_model: torch.nn.Module | None) -> bool:
    """Whether errors and segment scores of ``world_model`` are computed on its device
    (the kernels' dispatch point picks Triton for its parameters)."""
    return world_model is not None and K.backend(_param(world_model)) == "triton"


@torch.no_grad()
def episode_errors(world_model, obs, actions, rewards, next_obs,
                   rows_per_pass: int = 256) -> torch.Tensor:
    """Per-step world-model errors ``[N, T]`` (float32, on the model's device) of
    ``N`` whole episodes of ``T`` steps (``obs [N, T, obs]``, ``rewards [N, T]``),
    each step with the h transitions before it in its episode as context, exactly
    as :func:`metadt.train.columns.compute_step_errors` builds them."""
    world_model.eval()
    dev = _param(world_model).device
    context_len = int(world_model.context_len)
    as_t = lambda a: to_torch(a, dev, np.float32)  # noqa: E731
    obs, actions, rewards, next_obs = as_t(obs), as_t(actions), as_t(rewards), as_t(next_obs)
    n, t = rewards.shape
    mask = episode_context_mask(t, context_len, like=rewards)  # [T, h]
    out = torch.empty(n, t, dtype=torch.float32, device=dev)
    step = max(int(rows_per_pass), 1)
    for lo in range(0, n, step):
        s = slice(lo, lo + step)
        rows = obs[s].shape[0]
        out[s] = world_model.step_errors(
            obs[s], actions[s], rewards[s], next_obs[s],
            episode_contexts(obs[s], context_len), episode_contexts(actions[s], context_len),
            episode_contexts(rewards[s], context_len),
            mask.expand(rows, t, context_len)).float()
    return out


def best_segments(world_model, obs, actions, rewards, next_obs, *, length: int,
                  start_min: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The argmax (complementary) segment per episode or per group, scored on the device.

    Returns what ``TrajectoryStore.best_segments(per=..., mode="argmax")`` returns for
    the same episodes: ``{"keys", "episodes", "starts", "scores"}`` (keys ascending,
    groups without a segment left out; key = row when ``groups`` is None, episode =
    row), copied to the host once for the whole call.
    """
    err = episode_errors(world_model, obs, actions, rewards, next_obs)
    n, t = err.shape
    lengths = torch.full((n,), t, dtype=torch.int64, device=err.device)
    g = None if groups is None else to_torch(groups, err.device, np.int64)
    res = K.best_segments(err, lengths, int(length), int(start_min), g)
    keys, eps, starts, scores = (to_numpy(x) for x in res)
    found = eps >= 0
    return {"keys": keys[found], "episodes": eps[found], "starts": starts[found],
            "scores": scores[found]}


def errors_store(errors, lengths, groups: np.ndarray | None = None):
    """``(store, rows)``: a ``TrajectoryStore`` holding each non-empty row's valid steps as
    one episode (task = its group, or the row when ``groups`` is None) with the errors as
    column ``"err"``, and the row of each stored episode."""
    from metadt import TrajectoryStore

    errors = np.asarray(errors, dtype=np.float32)
    n, t = errors.shape
    lengths = np.clip(np.asarray(lengths, dtype=np.int64), 0, t)
    store = TrajectoryStore(1, 1)
    rows, column = [], []
    for row in range(n):
        ln = int(lengths[row])
        if ln == 0:
            continue
        zeros = np.zeros((ln, 1), np.float32)
        store.add_episode(zeros, zeros, np.zeros(ln, np.float32),
                          task=row if groups is None else int(groups[row]))
        rows.append(row)
        column.append(errors[row, :ln])
    if rows:
        store.attach_column("err", np.concatenate(column).reshape(-1, 1))
    return store, np.asarray(rows, dtype=np.int64)


def host_best_segments(errors, lengths, *, length: int, start_min: int,
                       groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The CPU path on the same padded errors: the Rust scorer
    (``best_segments(per="task", mode="argmax")``) over :func:`errors_store`. Same
    return layout as :func:`best_segments` (rows of length 0 have no segment)."""
    store, rows = errors_store(errors, lengths, groups)
    if len(rows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"keys": empty, "episodes": empty, "starts": empty, "scores": np.zeros(0)}
    segs = store.best_segments("err", length=int(length), start_min=int(start_min), per="task",
                               mode="argmax")
    return {"keys": np.asarray(segs["keys"], dtype=np.int64),
            "episodes": rows[np.asarray(segs["episodes"], dtype=np.int64)],
            "starts": np.asarray(segs["starts"], dtype=np.int64),
            "scores": np.asarray(segs["scores"], dtype=np.float64)}


@torch.no_grad()
def step_errors(table, world_model, batch_size: int = 4096,
                idx: np.ndarray | None = None) -> np.ndarray:
    """:func:`metadt.train.columns.compute_step_errors` on the device: the store's columns
    go to the device once, every batch's contexts are gathered there, the errors stay
    there, and the finished ``[n]`` float32 array is copied to the host once."""
    world_model.eval()
    dev = _param(world_model).device
    context_len = int(world_model.context_len)
    up = lambda a: torch.tensor(np.asarray(a), device=dev)  # noqa: E731 (a copy: store views are read-only)
    obs, actions, rewards, next_obs = (up(a) for a in (table.obs, table.actions, table.rewards,
                                                       table.next_obs))
    ep_start = up(table.ep_start)
    idx = torch.arange(table.num_steps, device=dev) if idx is None else up(
        np.asarray(idx, dtype=np.int64))
    out = torch.empty(len(idx), dtype=torch.float32, device=dev)
    step = max(int(batch_size), 1)
    for lo in range(0, len(idx), step):
        part = idx[lo:lo + step]
        cidx, valid = context_index(part, ep_start[part], context_len)
        m = valid[..., None]
        out[lo:lo + len(part)] = world_model.step_errors(
            obs[part], actions[part], rewards[part], next_obs[part],
            torch.where(m, obs[cidx], 0.0), torch.where(m, actions[cidx], 0.0),
            torch.where(valid, rewards[cidx], 0.0), valid).float()
    return to_numpy(out)
