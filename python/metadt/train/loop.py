"""The one training skeleton: every trainer of metadt runs through :func:`run_training`.

A trainer (:mod:`metadt.train.meta_dt`, :mod:`metadt.train.world_model`) supplies a
:class:`TrainingJob`: its **build** (model, optimizer, scheduler, sampler), its
**step** (one gradient step on batch ``i``, returning the values to log) and its
**finalize** (the final payload). The skeleton owns everything else, the same for
every trainer:

- the run directory (:func:`training_run_dir`: config identity minus
  :data:`RUNTIME_FIELDS`, ``model.safetensors`` as completion marker) and resuming:
  the build is seeded with ``cfg.seed``, and a checkpoint of the same config is
  loaded (model, optimizer, scheduler, every RNG state, step); batch ``i`` is drawn
  with a seed that is a pure function of ``(cfg.seed, i)``, so a resumed run equals
  the uninterrupted one;
- checkpoints every ``cfg.checkpoint_every`` steps and at the last step (rank 0,
  atomic, :mod:`metadt.train.checkpoint`);
- logging every ``cfg.log_every`` steps and at the last one: the mean of each step
  value over the steps since the previous log line (the divisor is the number of
  steps accumulated, also after a resume), averaged over ranks, then the trainer's
  extra values and ``steps_per_s``; JSON lines + CSV + optional sinks
  (:class:`metadt.train.metrics.MetricsLogger`), ``on_log`` on rank 0;
- the progress bar (loss and steps/s);
- DDP: rank 0 alone creates the directory, writes checkpoints, metrics and the final
  files; its errors are raised on every rank and every rank returns its result;
- the final files, written by rank 0 once every step is done: the trainer's record
  (``run.json`` / ``report.json``, with :func:`metadt.provenance.provenance`), the
  PNG curves, and last the completion marker ``model.safetensors`` (the payload).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from metadt import distributed as dist
from metadt.fileio import atomic_write_json
from metadt.provenance import provenance
from metadt.rundir import RunDir
from metadt.seeding import seed_everything
from metadt.train.checkpoint import (CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE, load_checkpoint,
                                     legacy_checkpoint_error, save_checkpoint)
from metadt.runtime import set_threads
from metadt.train.common import RUNTIME_FIELDS, Progress
from metadt.train.metrics import MetricsLogger, plot_curves
from metadt.train.run import LEGACY_MODEL_FILE, MODEL_FILE, resolve_device, save_model


def training_run_dir(out: str | Path, what: str, renamed: Mapping[str, str] | None = None) -> RunDir:
    """The run directory of a trainer: identity ``config.json`` (the config, resolved),
    finished when its final model file exists; :data:`RUNTIME_FIELDS` may change;
    ``renamed``: the config class's renamed fields (``Config.RENAMED``: an older run's
    config.json with an old name is the same run)."""
    return RunDir(Path(out), what, identity_file="config.json",
                  markers=(MODEL_FILE, LEGACY_MODEL_FILE), runtime=RUNTIME_FIELDS,
                  renamed=dict(renamed or {}))


def start_process(cfg: Any) -> tuple[dist.DistContext, torch.device]:
    """The process set-up of a trainer: the rank context (world size 1 unless launched by
    torchrun), the device of ``cfg.device`` and ``cfg.num_threads`` torch threads."""
    ctx = dist.init()
    dev = ctx.device(cfg.device) if ctx.distributed else resolve_device(cfg.device)
    set_threads(cfg.num_threads)
    return ctx, dev


@dataclass
class Final:
    """What a trainer's finalize returns: the final model payload (written last, as the
    completion marker), its record file and the curves to plot."""

    payload: dict[str, Any]
    record_file: str
    record: dict[str, Any]
    curves: tuple[str, ...]
    title: str
    result: Any = None
    """What :func:`run_training` returns (default: the record with its provenance)."""


@dataclass
class TrainingJob:
    """What a trainer supplies to :func:`run_training`."""

    cfg: Any
    """Its config: ``seed``, ``num_steps``, ``log_every``, ``checkpoint_every``,
    ``loggers`` are read here."""
    what: str
    """The run, for messages ("training run", "world-model training")."""
    label: str
    """The progress bar's label."""
    build: Callable[[], Any]
    """Builds the trainer (after ``seed_everything(cfg.seed)``): an object with
    ``model``, ``optimizer`` and ``scheduler`` (None: none)."""
    step: Callable[[Any, int], dict[str, float]]
    """One gradient step on batch ``i``: the values to average into the log (``loss``
    first; it also goes to the progress bar and the summary's ``losses``)."""
    finalize: Callable[[Any, dict[str, Any]], Final]
    """Rank 0, after the last step: the final payload and record (given the summary)."""
    log_extra: Callable[[Any, int], dict[str, Any]] | None = None
    """Values added to the log line of step ``step`` (after the means)."""
    periodic: Callable[[Any, int], dict[str, Any] | None] | None = None
    """Rank 0, after every step: a record to log at that step, or None."""
    identity: dict[str, Any] = field(default_factory=dict)
    """The run's identity (default: ``cfg.to_dict()``)."""


def run_training(job: TrainingJob, out: str | Path, *, ctx: dist.DistContext,
                 device: torch.device, overwrite: bool = False, progress: bool = True,
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 stop_after: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) ``job`` into ``out``; returns ``(result, summary)``: the
    finalize result (rank 0's, on every rank; None when stopped early) and this rank's
    summary (``steps_done``, ``start_step``, ``train_time_s``, ``steps_per_s``, ``losses``).

    ``stop_after`` stops (after checkpointing) once that many steps are done, as an
    interruption would (for tests of resuming)."""
    cfg, out = job.cfg, Path(out)
    run = training_run_dir(out, job.what, getattr(cfg, "RENAMED", None))
    identity = job.identity or cfg.to_dict()

    def open_dir() -> bool:  # rank 0 only; the others get its answer (or its error)
        run.start(identity, overwrite=overwrite)
        if (out / CHECKPOINT_FILE).is_file():
            return True
        if (out / LEGACY_CHECKPOINT_FILE).is_file():
            raise legacy_checkpoint_error(out)
        return False

    resume = dist.main_first(open_dir, ctx)
    main = ctx.is_main()
    seed_everything(cfg.seed)
    tr = job.build()
    sched = getattr(tr, "scheduler", None)
    start = 0
    if resume:  # every rank loads the same checkpoint (any world size wrote it)
        start = int(load_checkpoint(out / CHECKPOINT_FILE, model=tr.model,
                                    optimizer=tr.optimizer, scheduler=sched,
                                    map_location=device)["step"])
    log = MetricsLogger(out / "metrics.jsonl", out / "tb", resume_step=start if resume else None,
                        loggers=cfg.loggers, run_name=str(out), config=cfg.to_dict()) \
        if main else dist.NullLogger()

    end = cfg.num_steps if stop_after is None else min(cfg.num_steps, stop_after)
    bar = Progress(cfg.num_steps, start, job.label, progress and main)
    tr.model.train()
    t_train = time.perf_counter()
    running: dict[str, float] = {}
    count = 0
    losses: list[float] = []
    for i in range(start, end):
        values = job.step(tr, i)
        losses.append(float(values["loss"]))
        for k, v in values.items():
            running[k] = running.get(k, 0.0) + float(v)
        count += 1
        step = i + 1
        last = step == cfg.num_steps
        if step % cfg.log_every == 0 or last:
            rec = dist.mean_over_ranks({k: v / count for k, v in running.items()}, ctx)
            if job.log_extra is not None:
                rec.update(job.log_extra(tr, step))
            rec["steps_per_s"] = bar.steps_per_s(step)
            log.log(step, rec)
            if on_log is not None and main:
                on_log({"step": step, **rec})
            running, count = {}, 0
        if job.periodic is not None and main:
            extra = job.periodic(tr, step)
            if extra:
                log.log(step, extra)
        bar.update(1, loss=float(values["loss"]), steps_s=bar.steps_per_s(step))
        if (step % cfg.checkpoint_every == 0 or step == end) and main:
            save_checkpoint(out / CHECKPOINT_FILE, step=step, model=tr.model,
                            optimizer=tr.optimizer, scheduler=sched)
    bar.close()
    log.close()
    train_time = time.perf_counter() - t_train
    summary = {"steps_done": end, "start_step": start, "train_time_s": train_time,
               "steps_per_s": (end - start) / train_time if train_time > 0 else None,
               "losses": losses}
    if end < cfg.num_steps:
        dist.barrier()  # rank 0's checkpoint exists when any rank returns
        return None, summary

    def finish() -> Any:  # rank 0; its result (or error) reaches every rank
        fin = job.finalize(tr, summary)
        record = {**fin.record, "provenance": provenance(str(device))}
        atomic_write_json(out / fin.record_file, record)
        plot_curves(out / "metrics.jsonl", out / "curves.png", keys=fin.curves, title=fin.title)
        save_model(out, fin.payload)  # the completion marker, last
        return record if fin.result is None else fin.result

    return dist.main_first(finish, ctx), summary


__all__ = ["Final", "TrainingJob", "run_training", "start_process", "training_run_dir"]
