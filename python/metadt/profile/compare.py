"""The comparison mode: the same batches from a plain PyTorch ``DataLoader`` over a
NumPy gather, instead of the Rust batcher.

:class:`NumpyWindows` / :class:`NumpyTransitions` are map-style datasets whose
item ``i`` is a whole batch, built with vectorized NumPy fancy indexing over
the store's columns (copied into NumPy arrays once, as a user would): the same
keys, shapes, dtypes and sampling rules as ``TrajectoryStore.sample_windows``
/ ``sample_transitions`` (window end uniform over the steps of the tasks, left
padding, ``ACTION_PAD`` actions, RTG divided by ``return_scale``, attached
columns, ``ctx_*`` context, a prompt segment from a uniformly drawn episode of
the same task chosen by ``argmax`` / ``proportional`` / ``random`` / ``last``).
Batch ``i`` is drawn with ``numpy.random.default_rng(batch_seed(seed, i))``, so
its random numbers differ from the Rust sampler's: same distribution, not the
same draws.

:func:`numpy_loader` wraps one in ``torch.utils.data.DataLoader(batch_size=None)``
(the dataset batches itself; ``num_workers`` worker processes optional).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from metadt.config.meta_dt import SCORED_STRATEGIES
from metadt.seeding import batch_seed

try:  # the store's padding value for actions
    from metadt._core import ACTION_PAD
except ImportError:  # pragma: no cover - the extension is always built here
    ACTION_PAD = -10.0


class _Columns:
    """NumPy copies of a store's columns plus per-step episode bookkeeping."""

    def __init__(self, store, tasks: Sequence[int] | None, columns: Sequence[str] = ()):
        lengths = np.asarray(store.episode_lengths(), dtype=np.int64)
        offsets = np.asarray(store.episode_offsets(), dtype=np.int64)[: len(lengths)]
        n = int(store.num_steps)
        self.lengths, self.offsets = lengths, offsets
        self.ep = np.empty(n, dtype=np.int64)
        for e, (o, ln) in enumerate(zip(offsets, lengths)):
            self.ep[o:o + ln] = e
        self.t = np.arange(n, dtype=np.int64) - offsets[self.ep]
        self.ep_start = offsets[self.ep]
        self.task_of_ep = np.empty(len(lengths), dtype=np.int64)
        for t in store.tasks():
            self.task_of_ep[np.asarray(store.episodes_of_task(int(t)), dtype=np.int64)] = int(t)
        self.obs = np.array(store.column("obs"), dtype=np.float32)
        self.actions = np.array(store.column("actions"), dtype=np.float32)
        self.rewards = np.array(store.column("rewards"), dtype=np.float32).reshape(n)
        self.rtg = np.array(store.column("rtg"), dtype=np.float32).reshape(n)
        self.next_obs = np.array(store.column("next_obs"), dtype=np.float32)
        self.cols = {c: np.array(store.column(c), dtype=np.float32).reshape(n, -1) for c in columns}
        tasks = sorted(int(t) for t in (store.tasks() if tasks is None else tasks))
        self.tasks = tasks
        self.domain = np.flatnonzero(np.isin(self.task_of_ep[self.ep], np.asarray(tasks)))
        if len(self.domain) == 0:
            raise ValueError("no steps of the requested tasks")
        self.obs_dim, self.act_dim = self.obs.shape[1], self.actions.shape[1]

    @staticmethod
    def take(a: np.ndarray, idx: np.ndarray, valid: np.ndarray, pad: float) -> np.ndarray:
        out = a[np.where(valid, idx, 0)]
        m = valid if a.ndim == 1 else valid[..., None]
        return np.where(m, out, np.float32(pad)).astype(np.float32, copy=False)


class NumpyWindows:
    """Window batches (the ``sample_windows`` layout) by NumPy indexing; item ``i``
    is batch ``i``. Arguments as ``sample_windows`` (``prompt``: a
    :func:`metadt.train.prompts.prompt_spec` dict or a ``PromptSpec``)."""

    def __init__(self, store, batch: int, window_len: int = 20, context_len: int = 0,
                 return_scale: float = 1.0, columns: Sequence[str] = (), prompt: Any = None,
                 tasks: Sequence[int] | None = None, seed: int = 0, num_batches: int = 1 << 30,
                 anchor: str = "end"):
        if anchor not in ("start", "end"):
            raise ValueError(f'anchor must be "start" or "end", got {anchor!r}')
        self.anchor = anchor
        self.c = _Columns(store, tasks, columns)
        self.batch, self.window_len, self.context_len = int(batch), int(window_len), int(context_len)
        self.scale = float(return_scale)
        self.columns = tuple(columns)
        self.seed, self.num_batches = int(seed), int(num_batches)
        self.prompt = None
        if prompt is not None:
            p = prompt if isinstance(prompt, dict) else vars(prompt)
            if p.get("pool") is not None:
                raise ValueError("NumpyWindows: a prompt pool is not supported")
            self.prompt = dict(length=int(p["length"]), score=p.get("score"),
                               strategy=p.get("strategy", "argmax"),
                               start_min=int(self.context_len if p.get("start_min") is None
                                             else p["start_min"]))
            self._prepare_prompt(store)

    def __len__(self) -> int:
        return self.num_batches

    # ---------------------------------------------------------------- prompt
    def _prepare_prompt(self, store) -> None:
        c, p = self.c, self.prompt
        prompt_len, prompt_start_min = p["length"], p["start_min"]
        # episodes of each task, padded to a rectangle (uniform draw per row)
        task_index = {t: j for j, t in enumerate(c.tasks)}
        eps = [np.flatnonzero(c.task_of_ep == t) for t in c.tasks]
        self._slot = task_index
        self._n_eps = np.array([len(e) for e in eps], dtype=np.int64)
        if (self._n_eps == 0).any():
            raise ValueError("prompt: a task has no episode")
        self._eps = np.zeros((len(eps), self._n_eps.max()), dtype=np.int64)
        for j, e in enumerate(eps):
            self._eps[j, : len(e)] = e
        # candidate starts of every episode: [lo, hi], lo = start_min unless too short
        tl = c.lengths
        self._hi = np.maximum(tl - prompt_len, 0)
        self._lo = np.where(tl >= prompt_start_min + prompt_len, prompt_start_min, 0)
        self._lo = np.minimum(self._lo, self._hi)
        if p["strategy"] in SCORED_STRATEGIES:
            n = len(c.ep)
            if p["score"] is None:
                score = np.zeros(n, dtype=np.float64)
            else:
                score = np.asarray(store.column(p["score"]), dtype=np.float64).reshape(n, -1).sum(1)
            csum = np.concatenate([[0.0], np.cumsum(score)])
            ncand = self._hi - self._lo + 1
            width = int(ncand.max())
            j = np.arange(width)
            start = self._lo[:, None] + np.minimum(j[None, :], (ncand - 1)[:, None])
            a = c.offsets[:, None] + start
            sums = csum[np.minimum(a + prompt_len, n)] - csum[a]
            sums = np.where(j[None, :] < ncand[:, None], sums, -np.inf)
            self._best = self._lo + np.argmax(sums, axis=1)  # ties: earliest
            w = np.where(np.isfinite(sums), np.maximum(sums, 0.0), 0.0)
            self._cum = np.cumsum(w, axis=1)

    def _prompt_starts(self, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        strat = self.prompt["strategy"]
        lo, hi = self._lo[e], self._hi[e]
        if strat == "last":
            return hi
        if strat == "random":
            return lo + (rng.random(len(e)) * (hi - lo + 1)).astype(np.int64)
        if strat == "argmax":
            return self._best[e]
        cum = self._cum[e]
        tot = cum[:, -1]
        u = rng.random(len(e)) * tot
        j = (cum <= u[:, None]).sum(1)
        j = np.minimum(j, hi - lo)
        uniform = lo + (rng.random(len(e)) * (hi - lo + 1)).astype(np.int64)
        return np.where(tot > 0, lo + j, uniform)

    # ---------------------------------------------------------------- batch
    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        c, b, window_len, context_len = self.c, self.batch, self.window_len, self.context_len
        rng = np.random.default_rng(batch_seed(self.seed, int(i)))
        drawn = c.domain[rng.integers(0, len(c.domain), size=b)]
        if self.anchor == "end":
            end, start = drawn, c.ep_start[drawn][:, None]
        else:  # the window starts at the drawn step, clipped at its episode's end
            last = c.ep_start[drawn] + c.lengths[c.ep[drawn]] - 1
            end, start = np.minimum(drawn + window_len - 1, last), drawn[:, None]
        idx = end[:, None] - window_len + 1 + np.arange(window_len)
        valid = idx >= start
        safe = np.where(valid, idx, 0)
        out: dict[str, np.ndarray] = {
            "obs": c.take(c.obs, idx, valid, 0.0),
            "actions": c.take(c.actions, idx, valid, ACTION_PAD),
            "rewards": c.take(c.rewards, idx, valid, 0.0),
            "rtg": c.take(c.rtg, idx, valid, 0.0) / np.float32(self.scale),
            "timesteps": np.where(valid, c.t[safe], 0),
            "mask": valid,
            "tasks": c.task_of_ep[c.ep[end]],
            "episodes": c.ep[end],
        }
        for name in self.columns:
            out[name] = c.take(c.cols[name], idx, valid, 0.0)
        if context_len > 0:
            span = window_len + context_len
            cidx = end[:, None] - span + 1 + np.arange(span)
            cv = cidx >= np.maximum(c.ep_start[end][:, None], start - context_len)
            out.update(ctx_obs=c.take(c.obs, cidx, cv, 0.0),
                       ctx_actions=c.take(c.actions, cidx, cv, 0.0),
                       ctx_rewards=c.take(c.rewards, cidx, cv, 0.0), ctx_mask=cv)
        if self.prompt is not None:
            prompt_len = self.prompt["length"]
            slot = np.array([self._slot[int(t)] for t in out["tasks"]], dtype=np.int64)
            pe = self._eps[slot, (rng.random(b) * self._n_eps[slot]).astype(np.int64)]
            ps = self._prompt_starts(pe, rng)
            tl = c.lengths[pe]
            pad = np.maximum(prompt_len - tl, 0)
            j = np.arange(prompt_len)[None, :] - pad[:, None]  # position within the segment
            pv = j >= 0
            pidx = c.offsets[pe][:, None] + ps[:, None] + j
            out.update(prompt_obs=c.take(c.obs, pidx, pv, 0.0),
                       prompt_actions=c.take(c.actions, pidx, pv, ACTION_PAD),
                       prompt_rewards=c.take(c.rewards, pidx, pv, 0.0),
                       prompt_rtg=c.take(c.rtg, pidx, pv, 0.0) / np.float32(self.scale),
                       prompt_timesteps=np.where(pv, ps[:, None] + j, 0), prompt_mask=pv,
                       prompt_episodes=pe, prompt_starts=ps)
        return out


class NumpyTransitions:
    """Transition batches (the ``sample_transitions`` layout) by NumPy indexing."""

    def __init__(self, store, batch: int, context_len: int = 4, tasks: Sequence[int] | None = None,
                 seed: int = 0, num_batches: int = 1 << 30):
        self.c = _Columns(store, tasks)
        self.batch, self.context_len = int(batch), int(context_len)
        self.seed, self.num_batches = int(seed), int(num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        c, b, context_len = self.c, self.batch, self.context_len
        rng = np.random.default_rng(batch_seed(self.seed, int(i)))
        n = c.domain[rng.integers(0, len(c.domain), size=b)]
        out = {"obs": c.obs[n], "actions": c.actions[n], "rewards": c.rewards[n],
               "next_obs": c.next_obs[n], "terminals": np.zeros(b, np.float32),
               "tasks": c.task_of_ep[c.ep[n]], "episodes": c.ep[n], "timesteps": c.t[n]}
        if context_len > 0:
            idx = n[:, None] - context_len + np.arange(context_len)
            v = idx >= c.ep_start[n][:, None]
            out.update(ctx_obs=c.take(c.obs, idx, v, 0.0), ctx_actions=c.take(c.actions, idx, v, 0.0),
                       ctx_rewards=c.take(c.rewards, idx, v, 0.0), ctx_mask=v)
        return out


def numpy_loader(dataset, indices: Sequence[int] | None = None, num_workers: int = 0,
                 pin_memory: bool = False):
    """A plain ``DataLoader`` yielding the dataset's batches ``indices`` (default: all,
    in order) as tensors, with ``num_workers`` worker processes."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=None, shuffle=False,
                      sampler=range(len(dataset)) if indices is None else indices,
                      num_workers=int(num_workers), pin_memory=pin_memory,
                      prefetch_factor=2 if num_workers > 0 else None)
