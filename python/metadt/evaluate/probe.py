"""The z probe on the contexts the policy meets at test time.

The world-model report fits a ridge probe z -> task parameter on the training
tasks' dataset contexts (`metadt.evaluate.world_model_report.fit_probe`). Zero-shot can
only work if z reads the task from the agent's *own* early behaviour, so the
evaluation scores that same probe on contexts from rollouts in the evaluated
(unseen) tasks: the agent's own zero-shot episodes and uniformly random
actions. R^2 is over the task-parameter vector of every step with a full
h-step context (as in the report).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from metadt.evaluate.rollout import Trajectories


def trajectory_z(trajs: Trajectories, world_model: Any) -> tuple[np.ndarray, np.ndarray]:
    """z of every step with a full h-step context of every episode: ``(z [n, z_dim],
    task id per step [n])``, computed by the trainer's own code from a small store."""
    from metadt import TrajectoryStore
    from metadt.train.columns import StepTable, compute_z

    store = TrajectoryStore(int(trajs.obs.shape[2]), int(trajs.actions.shape[2]))
    for r in range(trajs.num):
        store.add_episode(np.ascontiguousarray(trajs.obs[r], dtype=np.float32),
                          np.ascontiguousarray(trajs.actions[r], dtype=np.float32),
                          np.ascontiguousarray(trajs.rewards[r], dtype=np.float32),
                          next_obs=np.ascontiguousarray(trajs.next_obs[r], dtype=np.float32),
                          task=int(trajs.tasks[r]))
    table = StepTable.of(store)
    idx = np.flatnonzero(table.timestep >= world_model.context_len)
    if not len(idx):
        raise ValueError("no step has a full context (episodes shorter than h)")
    return compute_z(table, world_model, 4096, idx).astype(np.float64), table.task[idx]


def probe_score(weights: np.ndarray, trajs: Trajectories, world_model: Any,
                family: Any) -> dict[str, Any]:
    """R^2 and RMSE of the probe `weights` on the trajectories' contexts (task features
    from `family.task_features`)."""
    from metadt.evaluate.world_model_report import probe_predict, r2_score

    z, tasks = trajectory_z(trajs, world_model)
    feats = {int(t): np.asarray(family.task_features(family.tasks[int(t)]), dtype=np.float64)
             for t in np.unique(tasks)}
    y = np.stack([feats[int(t)] for t in tasks])
    pred = probe_predict(weights, z)
    return {"r2": r2_score(y, pred), "rmse": float(np.sqrt(((y - pred) ** 2).sum(1).mean())),
            "rmse_constant": float(np.sqrt(((y - y.mean(0)) ** 2).sum(1).mean())),
            "steps": int(len(tasks)), "tasks": int(len(feats))}
