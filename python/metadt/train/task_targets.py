"""Extra decoding targets for the world model: other transitions of the same task.

The paper's world model decodes the transition at step t from z_t (computed from
the h transitions before t). With ``WorldModelConfig.task_targets = k > 0`` the
decoders also predict ``k`` further transitions of the *same task*, drawn
uniformly from its training data (any episode, any quality in the training
store), from the same z_t. A transition elsewhere in the task can only be
predicted if z holds the task itself rather than the local situation the context
describes: the VariBAD-style objective (decode beyond the current step) that
makes z identify tasks on behaviour-poor contexts (docs/train.md measures it).

Draws are a pure function of ``(seed, batch index, rank)``, so a resumed run
draws the same targets.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from metadt.seeding import TASK_TARGETS_KEY, keyed_rng
from metadt.train.columns import StepTable


class TaskTargets:
    """Uniform draws of transitions of a given task from a :class:`StepTable`."""

    def __init__(self, table: StepTable, tasks: list[int], k: int, seed: int):
        if k < 1:
            raise ValueError(f"task_targets must be >= 1 to draw targets, got {k}")
        self.table, self.k, self.seed = table, int(k), int(seed)
        idx = table.steps_of_tasks(tasks)
        order = np.argsort(table.task[idx], kind="stable")
        self.steps = idx[order]  # step indices grouped by task
        ts = table.task[self.steps]
        self.task_ids, self.start, self.count = np.unique(ts, return_index=True,
                                                          return_counts=True)

    def draw(self, tasks: np.ndarray, i: int, rank: int = 0) -> np.ndarray:
        """Global step indices ``[B, k]``: for row b, k uniform steps of task ``tasks[b]``."""
        tasks = np.asarray(tasks, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.task_ids, tasks)
        pos = np.minimum(pos, len(self.task_ids) - 1)
        if len(tasks) and not np.all(self.task_ids[pos] == tasks):
            bad = sorted(set(tasks[self.task_ids[pos] != tasks].tolist()))
            raise ValueError(f"task targets: no training steps of task(s) {bad}")
        rng = keyed_rng(self.seed, i, rank, TASK_TARGETS_KEY)
        u = rng.random((len(tasks), self.k))
        off = np.minimum((u * self.count[pos][:, None]).astype(np.int64),
                         self.count[pos][:, None] - 1)
        return self.steps[self.start[pos][:, None] + off]

    def attach(self, batch: dict[str, Any], i: int, rank: int = 0) -> dict[str, Any]:
        """``batch`` plus ``target_obs [B,k,obs]``, ``target_actions``, ``target_rewards
        [B,k]`` and ``target_next_obs`` for the rows' tasks (``batch["tasks"]``)."""
        idx = self.draw(np.asarray(batch["tasks"]), i, rank)
        t = self.table
        return {**batch, "target_obs": t.obs[idx], "target_actions": t.actions[idx],
                "target_rewards": t.rewards[idx], "target_next_obs": t.next_obs[idx]}
