"""Run the trainers' own step under a phase timer.

:func:`profile_meta_dt` and :func:`profile_world_model` build the training
state exactly as ``train_meta_dt`` / ``train_world_model`` do
(:func:`metadt.train.meta_dt.build_trainer`,
:func:`metadt.train.world_model.build_world_model_trainer`) and call the same
step function (:func:`metadt.train.meta_dt.train_step`,
:func:`metadt.train.world_model.world_model_step`) with a phase-timer hook, in
each requested *mode* (where the step's batches come from):

- ``sampler``: the trainer as it runs: ``store.sample_windows`` /
  ``sample_transitions`` called in the step (Rust, synchronous);
- ``prefetch``: ``store.prefetch(...)``: batches prepared on a Rust thread while
  the step computes; the sampling phase is the wait for the next batch;
- ``dataloader``: a plain ``torch.utils.data.DataLoader`` over a NumPy gather of
  the same batches (:mod:`metadt.profile.compare`).

Each mode has its own trainer (same seed, same initial weights). The modes run
interleaved, ``block`` steps at a time, so a change of machine load during the
run affects them alike. Nothing is written to a run directory.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.profile.compare import NumpyTransitions, NumpyWindows, numpy_loader
from metadt.profile.table import mode_dict, result_dict
from metadt.profile.timer import PhaseTimer, TraceHook, make_timer
from metadt.runtime import check_device, resolve_device, set_threads
from metadt.seeding import seed_everything

#: Profiled modes, in table order, and their column labels.
MODES: dict[str, str] = {
    "sampler": "Rust sampler",
    "prefetch": "Rust prefetch",
    "dataloader": "DataLoader+NumPy",
}
DEFAULT_MODES: tuple[str, ...] = ("sampler", "prefetch")

#: step(i, next_batch, hook): one training step of index i.
StepFn = Callable[[int, Callable[[int], dict] | None, Callable[[str], None]], Any]


def _check_modes(modes: Sequence[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown profile mode(s) {bad or list(modes)}; choose from "
                         f"{', '.join(MODES)}")
    return [m for m in MODES if m in modes]


@dataclass
class _Run:
    """One mode being profiled: its step, its batch source and its timer."""

    mode: str
    step: StepFn
    next_batch: Callable[[int], dict] | None
    close: Callable[[], None]
    timer: PhaseTimer
    extra: dict[str, Any]
    done: int = 0


def _iter_source(iterable) -> Callable[[int], dict]:
    it = iter(iterable)
    return lambda _i: next(it)


def _environment(dev: torch.device) -> dict[str, Any]:
    env = {"device": str(dev), "timing": "cuda-events" if dev.type == "cuda" else "wall-clock",
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version(),
           "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(dev)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def _run_interleaved(runs: list[_Run], first: int, warmup: int, steps: int, block: int) -> None:
    """``warmup`` steps (then the timers reset) and ``steps`` timed steps per run,
    ``block`` steps of one run at a time, round robin."""
    total = warmup + steps
    block = max(1, int(block))
    try:
        while any(r.done < total for r in runs):
            for r in runs:
                for _ in range(min(block, total - r.done)):
                    if r.done == warmup:
                        r.timer.reset()
                    r.timer.begin_step()
                    r.step(first + r.done, r.next_batch, r.timer)
                    r.timer.end_step()
                    r.done += 1
    finally:
        for r in runs:
            r.close()


def _trace(step: StepFn, first: int, steps: int, dev: torch.device, path: str | Path) -> str:
    """A PyTorch profiler trace (Chrome/Perfetto JSON) of ``steps`` steps, each phase a
    ``metadt/<phase>`` range inside a ``metadt/step <i>`` range."""
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hook = TraceHook()
    step(first, None, hook)  # one untraced step (lazy initialization)
    with profile(activities=acts, record_shapes=False) as prof:
        for j in range(1, steps + 1):
            with record_function(f"metadt/step {first + j}"):
                hook.begin_step()
                step(first + j, None, hook)
                hook.end_step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            prof.step()
    tmp = path.with_name(f".{path.name}.tmp")
    prof.export_chrome_trace(str(tmp))
    os.replace(tmp, path)
    return str(path)


def untrained_world_model(family: str, preset: str, obs_dim: int, act_dim: int):
    """A world model of the preset's size with random weights (the cost of z and of the
    error column does not depend on the weights)."""
    from metadt.models import WorldModel

    return WorldModel(obs_dim, act_dim, WorldModelConfig.for_family(family, preset),
                      family=family)


def _make_run(mode: str, step: StepFn, dev: torch.device, store, kind: str, kw: dict[str, Any],
              batch_size: int, seed: int, first: int, n: int, workers: int,
              prefetch_depth: int) -> _Run:
    extra: dict[str, Any] = {"loader": "numpy-dataloader" if mode == "dataloader" else "rust",
                             "prefetch": mode == "prefetch"}
    close: Callable[[], None] = lambda: None  # noqa: E731
    next_batch = None
    if mode == "prefetch":
        it = store.prefetch(kind, depth=prefetch_depth, num_batches=n, seed=seed,
                            batch=batch_size, **kw)
        next_batch, close = _iter_source(it), it.close
        extra["prefetch_depth"] = prefetch_depth
    elif mode == "dataloader":
        cls = NumpyWindows if kind == "windows" else NumpyTransitions
        data = cls(store, batch_size, seed=seed, num_batches=first + n, **kw)
        next_batch = _iter_source(numpy_loader(data, range(first, first + n), workers,
                                               pin_memory=dev.type == "cuda"))
        extra["workers"] = workers
    return _Run(mode, step, next_batch, close, make_timer(dev), extra)


def _check_sizes(steps: int, warmup: int) -> None:
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0 (got {steps}, {warmup})")


# --------------------------------------------------------------------------- Meta-DT
def profile_meta_dt(data: str | Path, cfg: MetaDTConfig, world_model: Any = None, *,
                    steps: int = 50, warmup: int = 5, modes: Sequence[str] = DEFAULT_MODES,
                    start_step: int | None = None, workers: int = 0, prefetch_depth: int = 2,
                    block: int = 10, trace: str | Path | None = None, trace_steps: int = 3,
                    on_mode: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Profile ``steps`` Meta-DT training steps per mode; returns the JSON document.

    ``world_model`` None with a method that needs one: an untrained world model of
    the preset's size. ``start_step`` (default: ``warm_train`` when the method uses
    prompts, else 0) is the index of the first step: it decides prompt or not and
    the batch seeds; every profiled step samples with that step's arguments.
    """
    from metadt.data.dataset import Dataset
    from metadt.train.meta_dt import build_trainer, prepare, train_step

    modes = _check_modes(modes)
    _check_sizes(steps, warmup)
    dev = check_device(resolve_device(cfg.device))
    set_threads(cfg.num_threads)  # as the trainer does
    wm_desc = str(world_model) if world_model is not None else None
    if world_model is None and cfg.needs_world_model:
        card = Dataset.open(data).card
        world_model = untrained_world_model(card.family, cfg.preset, card.obs_dim, card.act_dim)
        wm_desc = "untrained (random weights, the preset's size)"
    t0 = time.perf_counter()
    ds, store, cfg, wm, _info = prepare(data, cfg, world_model, dev)
    prep_s = time.perf_counter() - t0
    first = int(start_step if start_step is not None
                else (cfg.warm_train if cfg.use_prompt else 0))
    n = warmup + steps

    def trainer_step():
        seed_everything(cfg.seed)
        tr = build_trainer(ds, store, cfg, wm, dev)
        tr.model.train()
        return tr, (lambda i, nb, hook: train_step(tr, i, next_batch=nb, timer=hook))

    runs = []
    for mode in modes:
        if on_mode is not None:
            on_mode(mode)
        tr, step = trainer_step()
        runs.append(_make_run(mode, step, dev, store, "windows", tr.sample_kwargs(first),
                              cfg.batch_size, cfg.seed, first, n, workers, prefetch_depth))
    _run_interleaved(runs, first, warmup, steps, block)
    results = [mode_dict(r.mode, MODES[r.mode], r.timer.stats, cfg.batch_size, **r.extra)
               for r in runs]
    del runs
    trace_path = None
    if trace is not None:
        trace_path = _trace(trainer_step()[1], first, trace_steps, dev, trace)
    meta = {"stage": "meta-dt", "method": cfg.method, "family": ds.card.family,
            "dataset": str(Path(data).resolve()), "quality": cfg.quality, "preset": cfg.preset,
            **_environment(dev), "steps": steps, "warmup_steps": warmup,
            "batch_size": cfg.batch_size, "start_step": first, "block": block,
            "prompt": bool(cfg.use_prompt and first >= cfg.warm_train),
            "z_source": cfg.z_source if cfg.use_z else None, "world_model": wm_desc,
            "prepare_s": prep_s, "config": cfg.to_dict()}
    return result_dict(meta, results, trace_path)


# --------------------------------------------------------------------------- world model
def profile_world_model(data: str | Path, cfg: WorldModelConfig, *, steps: int = 50,
                        warmup: int = 5, modes: Sequence[str] = DEFAULT_MODES,
                        start_step: int = 0, workers: int = 0, prefetch_depth: int = 2,
                        block: int = 10, trace: str | Path | None = None, trace_steps: int = 3,
                        on_mode: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Profile ``steps`` world-model training steps per mode; returns the JSON document.

    The world model computes z inside its forward pass, so its ``z`` phase is 0
    (z is part of ``forward``)."""
    from metadt.train.common import open_dataset
    from metadt.train.world_model import build_world_model_trainer, world_model_step

    modes = _check_modes(modes)
    _check_sizes(steps, warmup)
    cfg.validate()
    dev = check_device(resolve_device(cfg.device))
    set_threads(cfg.num_threads)  # as the trainer does
    ds = open_dataset(data, cfg.family, cfg.quality)
    store = ds.store(cfg.quality)
    first = int(start_step)
    n = warmup + steps

    def trainer_step():
        seed_everything(cfg.seed)
        tr = build_world_model_trainer(ds, store, cfg, dev, where=str(data))
        tr.model.train()
        return tr, (lambda i, nb, hook: world_model_step(tr, i, next_batch=nb, timer=hook))

    runs = []
    for mode in modes:
        if on_mode is not None:
            on_mode(mode)
        tr, step = trainer_step()
        runs.append(_make_run(mode, step, dev, store, "transitions", tr.sample_kwargs(),
                              cfg.batch_size, cfg.seed, first, n, workers, prefetch_depth))
    _run_interleaved(runs, first, warmup, steps, block)
    results = [mode_dict(r.mode, MODES[r.mode], r.timer.stats, cfg.batch_size, **r.extra)
               for r in runs]
    del runs
    trace_path = None
    if trace is not None:
        trace_path = _trace(trainer_step()[1], first, trace_steps, dev, trace)
    meta = {"stage": "world-model", "method": None, "family": ds.card.family,
            "dataset": str(Path(data).resolve()), "quality": cfg.quality, "preset": cfg.preset,
            **_environment(dev), "steps": steps, "warmup_steps": warmup,
            "batch_size": cfg.batch_size, "start_step": first, "block": block,
            "config": cfg.to_dict()}
    return result_dict(meta, results, trace_path)
