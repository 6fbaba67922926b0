"""The world model's report and its z probe (how well z identifies tasks).

Moved out of training: test-task data is scored here only, never used for
training or model selection. :func:`world_model_report` is what
``metadt train-world-model`` and ``metadt run`` write as ``WM/report.json`` (they
pass it to :func:`metadt.train.world_model.train_world_model`); :func:`fit_probe`,
:func:`probe_predict` and :func:`r2_score` are the probe the evaluation scores on the
policy's own contexts (:mod:`metadt.evaluate.probe`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metadt.config.world_model import WorldModelConfig
from metadt.models import WorldModel
from metadt.train.columns import StepTable, compute_z
from metadt.train.world_model import loss_on_steps, subsample_steps


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    reg = lam * len(x) * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


_MIN_VARIANCE = 1e-9
"""Below this mean squared deviation the task parameter is taken as constant (e.g. one
test task: rounding leaves ~1e-30, and R^2 against it is meaningless): R^2 is None."""


def _r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    """Fraction of the total variance of the task parameter (as a vector) explained:
    ``1 - sum SS_res / sum SS_tot`` over all output dims; None when it does not vary."""
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > _MIN_VARIANCE * len(y) else None


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error of the task-parameter vector (Euclidean, per step)."""
    return float(np.sqrt(((y - pred) ** 2).sum(1).mean()))


def _r2_per_dim(y: np.ndarray, pred: np.ndarray) -> float | None:
    """Coefficient of determination of each output dim that varies, averaged (sklearn's
    default); None when none varies."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    ok = ss_tot > _MIN_VARIANCE * len(y)
    return float(np.mean(1.0 - ss_res[ok] / ss_tot[ok])) if ok.any() else None


def _r2_cv(z: np.ndarray, y: np.ndarray, episodes: np.ndarray, lam: float, folds: int,
           seed: int) -> float | None:
    """R^2 of a probe fitted and scored on the same tasks, cross-validated by
    episode (held-out episodes of those tasks)."""
    eps = np.unique(episodes)
    if len(eps) < folds or folds < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(eps).tolist(), np.arange(len(eps)) % folds))
    f = np.array([fold_of[int(e)] for e in episodes])
    pred = np.empty_like(y)
    for k in range(folds):
        w = _ridge(z[f != k], y[f != k], lam)
        pred[f == k] = _predict(w, z[f == k])
    return _r2(y, pred)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], 1) @ w


def task_features(ds, task_id: int) -> np.ndarray:
    """The family's numeric task parameter (e.g. point-robot: the goal)."""
    return np.asarray(ds.family.task_features(ds.card.tasks[int(task_id)]), dtype=np.float64).ravel()


def _full_context(table: StepTable, idx: np.ndarray, h: int) -> np.ndarray:
    return idx[table.timestep[idx] >= h]


def _fit_probe(table: StepTable, idx: np.ndarray, wm: WorldModel, feats: dict[int, np.ndarray],
               ridge: float, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge probe z -> task features on the steps ``idx``: (weights, z, features)."""
    z = compute_z(table, wm, batch_size, idx).astype(np.float64)
    y = np.stack([feats[int(t)] for t in table.task[idx]])
    return _ridge(z, y, ridge), z, y


@torch.no_grad()
def fit_probe(wm: WorldModel, ds, quality: str = "", ridge: float = 1e-3,
              max_steps: int = 200000, seed: int = 0, batch_size: int = 4096) -> np.ndarray:
    """The world-model report's probe (``world_model_report``'s ``probe``): ridge weights
    ``[z_dim + 1, features]`` from z to the task features, fitted on the training tasks'
    steps with a full h-step context of `quality` (empty: ``mixed`` if the dataset has it,
    else ``medium``). Apply with :func:`probe_predict`; test tasks are never seen."""
    q = quality or ("mixed" if "mixed" in ds.card.qualities else "medium")
    table = StepTable.of(ds.store(q))
    train_ids = [int(t) for t in ds.card.train_ids]
    idx = _full_context(table, subsample_steps(table, table.steps_of_tasks(train_ids),
                                                max_steps, seed), wm.context_len)
    if not len(idx):
        raise ValueError(f"the {q!r} data has no training-task step with a full context")
    feats = {t: task_features(ds, t) for t in train_ids}
    return _fit_probe(table, idx, wm, feats, ridge, batch_size)[0]


def probe_predict(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Task features predicted by the probe weights `w` from z ``[n, z_dim]``."""
    return _predict(w, np.asarray(z, dtype=np.float64))


def r2_score(y: np.ndarray, pred: np.ndarray) -> float | None:
    """The report's R^2 (of the task-parameter vector; None when it does not vary)."""
    return _r2(np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64))


@torch.no_grad()
def world_model_report(wm: WorldModel, ds, cfg: WorldModelConfig) -> dict[str, Any]:
    """How well z identifies tasks (test tasks are used here only, never for selection).

    - ``train_task_loss`` / ``test_task_loss``: the world-model loss on each split;
    - ``probe``: a ridge-regression probe z -> task features fitted on training-task
      steps and scored on test-task steps of ``cfg.probe_quality`` (default ``mixed``,
      the data Meta-DT is conditioned on, when the dataset has it, else the training
      quality): ``r2_test`` (the quality bar) is the
      fraction of the total variance of the task parameter vector explained,
      ``r2_test_per_dim`` the per-dimension R^2 averaged; ``r2_test_cv``: a probe
      fitted and scored on the test tasks themselves, cross-validated over
      held-out episodes (does z identify *these* tasks linearly); also
      with z averaged per episode (``r2_test_episode_mean``); ``rmse_test`` in task-
      parameter units, against ``rmse_test_constant`` (predicting the test mean);
      steps with a full h-step context only (z at t < h has seen less);
    - ``probe_by_quality``: the same probe scored on the test tasks of every
      quality of the dataset (which behaviour's contexts identify the task);
    - ``behaviour_invariance``: per test task, the distance between the mean z of its
      medium and its expert data vs. the distance to other tasks' mean z
      (``fraction_same_task_closer``: than the nearest other task;
      ``fraction_closer_than_mean_other``: than the average other task;
      ``behaviour_invariance_train``: the same on the training tasks;
      ``behaviour_invariance_probe_space``: the same after the probe's linear
      readout, i.e. on the task-relevant part of z).
    """
    h = cfg.context_len
    train_ids = [int(t) for t in ds.card.train_ids]
    test_ids = [int(t) for t in ds.card.test_ids]
    rep: dict[str, Any] = {"family": ds.card.family, "quality": cfg.quality,
                           "context_len": h, "z_dim": wm.z_dim}

    def split(quality: str) -> tuple[StepTable, np.ndarray, np.ndarray]:
        """The quality's steps table and its (subsampled) train-task and test-task steps."""
        table = StepTable.of(ds.store(quality))
        return table, *(subsample_steps(table, table.steps_of_tasks(ids), cfg.report_max_steps,
                                         cfg.seed) for ids in (train_ids, test_ids))

    table, tr, te = split(cfg.quality)
    rep["train_task_loss"] = loss_on_steps(wm, table, tr, cfg)
    rep["test_task_loss"] = loss_on_steps(wm, table, te, cfg)
    probe_q = cfg.probe_quality or ("mixed" if "mixed" in ds.card.qualities else cfg.quality)
    if probe_q != cfg.quality:
        table, tr, te = split(probe_q)

    feats = {t: task_features(ds, t) for t in train_ids + test_ids}
    tr_f, te_f = _full_context(table, tr, h), _full_context(table, te, h)
    if len(tr_f) and len(te_f):
        w, z_tr, y_tr = _fit_probe(table, tr_f, wm, feats, cfg.probe_ridge, cfg.report_batch_size)
        z_te = compute_z(table, wm, cfg.report_batch_size, te_f).astype(np.float64)
        y_te = np.stack([feats[int(t)] for t in table.task[te_f]])
        probe = {"quality": probe_q, "fit_on": "train tasks", "scored_on": "test tasks",
                 "r2_train": _r2(y_tr, _predict(w, z_tr)), "r2_test": _r2(y_te, _predict(w, z_te)),
                 "r2_test_per_dim": _r2_per_dim(y_te, _predict(w, z_te)),
                 "rmse_test": _rmse(y_te, _predict(w, z_te)),
                 "rmse_test_constant": _rmse(y_te, y_te.mean(0)[None]),
                 "train_steps": int(len(tr_f)), "test_steps": int(len(te_f))}

        def ep_mean(z, idx):
            eps = table.episode[idx]
            u, inv = np.unique(eps, return_inverse=True)
            zm = np.zeros((len(u), z.shape[1]))
            np.add.at(zm, inv, z)
            zm /= np.bincount(inv)[:, None]
            first = np.zeros(len(u), dtype=np.int64)
            first[inv[::-1]] = np.arange(len(idx))[::-1]
            return zm, np.stack([feats[int(t)] for t in table.task[idx][first]])

        probe["r2_test_cv"] = _r2_cv(z_te, y_te, table.episode[te_f], cfg.probe_ridge,
                                     cfg.probe_folds, cfg.seed)
        zm_tr, ym_tr = ep_mean(z_tr, tr_f)
        zm_te, ym_te = ep_mean(z_te, te_f)
        wm_ep = _ridge(zm_tr, ym_tr, cfg.probe_ridge)
        probe["r2_test_episode_mean"] = _r2(ym_te, _predict(wm_ep, zm_te))
        rep["probe"] = probe
        # the same probe scored on the test tasks of each quality of the dataset
        by_q = {}
        for q in ds.card.qualities:
            qt = StepTable.of(ds.store(q))
            qi = _full_context(qt, subsample_steps(qt, qt.steps_of_tasks(test_ids),
                                                    cfg.report_max_steps, cfg.seed), h)
            if len(qi):
                zq = compute_z(qt, wm, cfg.report_batch_size, qi).astype(np.float64)
                yq = np.stack([feats[int(t)] for t in qt.task[qi]])
                by_q[q] = {"r2_test": _r2(yq, _predict(w, zq)),
                           "rmse_test": _rmse(yq, _predict(w, zq)), "test_steps": int(len(qi))}
        rep["probe_by_quality"] = by_q
    rep["behaviour_invariance"] = _invariance(wm, ds, cfg, test_ids)
    rep["behaviour_invariance_train"] = _invariance(wm, ds, cfg, train_ids, per_task=False)
    if rep.get("probe") is not None:
        # the same in the probe's task-parameter space (the task-relevant part of z)
        rep["behaviour_invariance_probe_space"] = _invariance(wm, ds, cfg, test_ids, project=w)
    return rep


def _task_means(wm, ds, quality, task_ids, cfg) -> dict[int, np.ndarray]:
    table = StepTable.of(ds.store(quality))
    idx = subsample_steps(table, table.steps_of_tasks(task_ids), cfg.report_max_steps, cfg.seed)
    idx = _full_context(table, idx, cfg.context_len)
    if len(idx) == 0:
        return {}
    z = compute_z(table, wm, cfg.report_batch_size, idx).astype(np.float64)
    return {int(t): z[table.task[idx] == t].mean(0) for t in np.unique(table.task[idx])}


def _invariance(wm, ds, cfg, task_ids, per_task: bool = True,
               project: np.ndarray | None = None) -> dict[str, Any] | None:
    if not {"medium", "expert"} <= set(ds.card.qualities) or len(task_ids) < 2:
        return None
    med = _task_means(wm, ds, "medium", task_ids, cfg)
    exp = _task_means(wm, ds, "expert", task_ids, cfg)
    if project is not None:
        med = {t: _predict(project, v[None])[0] for t, v in med.items()}
        exp = {t: _predict(project, v[None])[0] for t, v in exp.items()}
    tasks = sorted(set(med) & set(exp))
    if len(tasks) < 2:
        return None
    per_task_d = {}
    wins = wins_mean = 0
    ratios = []
    for t in tasks:
        same = float(np.linalg.norm(med[t] - exp[t]))
        other = [float(np.linalg.norm(med[t] - exp[u])) for u in tasks if u != t]
        other += [float(np.linalg.norm(exp[t] - med[u])) for u in tasks if u != t]
        nearest = min(other)
        wins += same < nearest
        wins_mean += same < float(np.mean(other))
        ratios.append(same / max(np.mean(other), 1e-12))
        per_task_d[str(t)] = {"medium_vs_expert": same, "nearest_other_task": nearest,
                            "mean_other_task": float(np.mean(other))}
    return {"tasks": tasks, "fraction_same_task_closer": wins / len(tasks),
            "fraction_closer_than_mean_other": wins_mean / len(tasks),
            "mean_ratio_same_over_other": float(np.mean(ratios)),
            "per_task": per_task_d if per_task else None,
            "note": ("mean z per task" if project is None else
                     "probe readout of the mean z per task")
                    + " (steps with full context) of medium vs expert data; "
                    "'other' = cross-quality distances to every other task"}
