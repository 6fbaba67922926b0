"""World-model training (protocol section 3).

Batches come from ``TrajectoryStore.sample_transitions`` restricted to the
training tasks; batch ``i`` is drawn with seed ``batch_seed(cfg.seed, i)`` so a
resumed run sees the same batches. No model selection: the final weights are
saved. Test-task data is used only to log ``test_task_loss`` and for the report
(:mod:`metadt.evaluate.world_model_report`, passed in by the caller).

Under ``torchrun`` (docs/distributed.md) rank ``r`` of ``W`` draws ``batch_size / W``
transitions of batch ``i`` with seed ``batch_seed(cfg.seed, i * W + r)`` from its
memory-mapped store, DDP averages the gradients, and rank 0 alone writes the
checkpoint, metrics, model and report. One process: unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from metadt import distributed as dist
from metadt.config.world_model import WorldModelConfig
from metadt.models import WorldModel
from metadt.train.columns import StepTable
from metadt.train.common import no_timer, obs_stats, open_dataset, to_tensors
from metadt.train.loop import Final, TrainingJob, run_training, start_process
from metadt.train.run import world_model_payload
from metadt.train.task_targets import TaskTargets


@dataclass
class WorldModelTrainer:
    """Everything a world-model training step needs (from :func:`build_world_model_trainer`)."""

    cfg: WorldModelConfig
    store: Any
    model: WorldModel
    optimizer: torch.optim.Optimizer
    device: torch.device
    train_ids: list[int]
    table: StepTable
    ctx: dist.DistContext = dist.SINGLE
    """Rank and world size (one process: rank 0 of 1)."""
    loss_fn: Callable[..., Any] | None = None
    """``model.loss``, through DDP with several ranks (None: ``model.loss``)."""
    targets: TaskTargets | None = None
    """Draws the extra same-task decoding targets (``cfg.task_targets > 0``)."""

    def sample_kwargs(self) -> dict[str, Any]:
        """``sample_transitions`` keyword arguments (besides batch and seed)."""
        return {"context_len": self.cfg.context_len, "tasks": self.train_ids}

    def sample(self, i: int) -> dict[str, Any]:
        """This rank's part of batch ``i``: ``batch_size / W`` transitions with seed
        ``batch_seed(cfg.seed, i * W + r)`` (one process: ``batch_seed(cfg.seed, i)``)."""
        return self.store.sample_transitions(
            dist.per_rank_batch(self.cfg.batch_size, self.ctx.world),
            seed=dist.rank_batch_seed(self.cfg.seed, i, self.ctx.rank, self.ctx.world),
            **self.sample_kwargs())


def build_world_model_trainer(ds, store, cfg: WorldModelConfig, dev: torch.device,
                              where: str = "dataset",
                              ctx: dist.DistContext = dist.SINGLE) -> WorldModelTrainer:
    """World model (normalized on the training tasks) and Adam (seed first)."""
    train_ids = [int(t) for t in ds.card.train_ids]
    table = StepTable.of(store)
    train_idx = table.steps_of_tasks(train_ids)
    if len(train_idx) == 0:
        raise ValueError(f"{where}/{cfg.quality}: no steps of the training tasks")
    wm = WorldModel(store.obs_dim, store.act_dim, cfg)
    mean, std = obs_stats(table, train_idx)
    r = table.rewards[train_idx].astype(np.float64)
    wm.set_normalization(mean, std, r.mean(), r.std() + 1e-6)
    wm.to(dev)
    opt = torch.optim.Adam(wm.parameters(), lr=cfg.lr)
    dist.per_rank_batch(cfg.batch_size, ctx.world)  # divisible, or a clear error
    targets = (TaskTargets(table, train_ids, cfg.task_targets, cfg.seed)
               if cfg.task_targets > 0 else None)
    return WorldModelTrainer(cfg, store, wm, opt, dev, train_ids, table, ctx,
                             dist.ddp_loss(wm, ctx, "loss", dev, find_unused=False), targets)


def world_model_step(tr: WorldModelTrainer, i: int,
                     next_batch: Callable[[int], dict] | None = None,
                     timer: Callable[[str], None] = no_timer) -> tuple[dict[str, float], float]:
    """One gradient step on batch ``i``; returns ``(loss parts, grad norm)``.

    Phases: sample batch -> host-to-device -> forward+loss (z is computed inside
    the forward) -> backward -> optimizer step; ``timer(phase)`` is called as each
    ends (no-op by default). ``next_batch(i)`` replaces the sampler.
    """
    raw = tr.sample(i) if next_batch is None else next_batch(i)
    if tr.targets is not None:
        raw = tr.targets.attach(raw, i, tr.ctx.rank)
    timer("sample")
    b = to_tensors(raw, tr.device)
    timer("h2d")
    # every rank has the same batch size: DDP's average is the global batch's mean
    loss, parts = (tr.loss_fn or tr.model.loss)(b)
    timer("forward")
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    timer("backward")
    gnorm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.grad_clip)
    tr.optimizer.step()
    timer("optimizer")
    return parts, float(gnorm)


def train_world_model(data: str | Path, cfg: WorldModelConfig, out: str | Path, *,
                      overwrite: bool = False, progress: bool = True,
                      on_log: Callable[[dict[str, Any]], None] | None = None,
                      report: Callable[[WorldModel, Any, WorldModelConfig], dict[str, Any]]
                      | None = None,
                      stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) a world model into ``out``; returns its record (``report.json``).

    Runs through the shared skeleton (:func:`metadt.train.loop.run_training`: run
    directory, resume, checkpoints, logging, progress, DDP, final files); this trainer
    supplies :func:`build_world_model_trainer`, :func:`world_model_step` and the final
    payload. ``report(wm, dataset, cfg)`` (given by the caller, e.g.
    :func:`metadt.evaluate.world_model_report.world_model_report`: training never scores
    on the test tasks itself) makes the record; without it the record is the model's
    description (family, quality, context_len, z_dim). ``stop_after`` stops (after
    checkpointing) once that many steps are done, as an interruption would.
    """
    cfg.validate()
    ds = open_dataset(data, cfg.family, cfg.quality, missing_hint=(
        "; a dataset without random-policy episodes (e.g. imported): train on what it has, "
        "e.g. --quality mixed (and --set task_targets=0 for the paper's recipe)"))
    if cfg.probe_quality:
        try:
            ds.check_quality(cfg.probe_quality)
        except ValueError as e:
            raise ValueError(f"{data}: probe_quality: {e}") from None
    store = ds.store(cfg.quality)  # memory-mapped: ranks share one copy
    ctx, dev = start_process(cfg)
    test: dict[str, np.ndarray] = {}

    def test_steps(table: StepTable) -> np.ndarray:
        if "idx" not in test:
            test_ids = [int(t) for t in ds.card.test_ids]
            test["idx"] = subsample_steps(table, table.steps_of_tasks(test_ids), 4096, cfg.seed)
        return test["idx"]

    def step(tr: WorldModelTrainer, i: int) -> dict[str, float]:
        parts, gnorm = world_model_step(tr, i)
        return {**parts, "grad_norm": gnorm}

    def log_extra(tr: WorldModelTrainer, step: int) -> dict[str, Any]:
        if not ctx.is_main() or not (step % cfg.checkpoint_every == 0 or step == cfg.num_steps):
            return {}
        loss = loss_on_steps(tr.model, tr.table, test_steps(tr.table), cfg)  # report only
        tr.model.train()
        return {"test_task_loss": loss}

    def finalize(tr: WorldModelTrainer, summary: dict[str, Any]) -> Final:
        wm = tr.model.eval()
        record = (report(wm, ds, cfg) if report is not None else
                  {"family": ds.card.family, "quality": cfg.quality,
                   "context_len": cfg.context_len, "z_dim": wm.z_dim})
        return Final(world_model_payload(wm, ds.card.family, str(Path(data).resolve())),
                     "report.json", record,
                     curves=("loss", "reward_loss", "transition_loss", "test_task_loss"),
                     title=f"world model ({cfg.family}, {cfg.quality})")

    job = TrainingJob(cfg, "world-model training", "world model",
                      build=lambda: build_world_model_trainer(ds, store, cfg, dev,
                                                              where=str(data), ctx=ctx),
                      step=step, finalize=finalize, log_extra=log_extra)
    result, summary = run_training(job, out, ctx=ctx, device=dev, overwrite=overwrite,
                                   progress=progress, on_log=on_log, stop_after=stop_after)
    return result if result is not None else summary


# ----------------------------------------------------- held-out loss (logged as test_task_loss)
def subsample_steps(table: StepTable, idx: np.ndarray, max_steps: int, seed: int) -> np.ndarray:
    """At most ~max_steps of ``idx``, by whole episodes (deterministic)."""
    if len(idx) <= max_steps:
        return idx
    eps = np.unique(table.episode[idx])
    rng = np.random.default_rng(seed)
    rng.shuffle(eps)
    per_ep = max(1, len(idx) // len(eps))
    keep = eps[: max(1, max_steps // per_ep)]
    return idx[np.isin(table.episode[idx], keep)]


@torch.no_grad()
def loss_on_steps(wm: WorldModel, table: StepTable, idx: np.ndarray,
                  cfg: WorldModelConfig) -> float | None:
    """The world-model loss on the steps ``idx`` of ``table`` (eval mode; None if empty)."""
    if len(idx) == 0:
        return None
    wm.eval()
    dev = next(wm.parameters()).device
    total = 0.0
    for part, b in table.batches(cfg.context_len, cfg.report_batch_size, idx, dev):
        loss, _ = wm.loss(b)
        total += float(loss) * len(part)
    return total / len(idx)
