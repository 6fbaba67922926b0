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

Nothing is written to a run directory: no checkpoints, no metrics.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.profile.compare import NumpyTransitions, NumpyWindows, numpy_loader
from metadt.profile.table import mode_dict, result_dict
from metadt.profile.timer import PhaseTimer, TraceHook, make_timer
from metadt.seeding import seed_everything

#: Profiled modes, in table order, and their column labels.
MODES: dict[str, str] = {
    "sampler": "Rust sampler",
    "prefetch": "Rust prefetch",
    "dataloader": "DataLoader+NumPy",
}
DEFAULT_MODES: tuple[str, ...] = ("sampler", "prefetch")


def _check_modes(modes: Sequence[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown profile mode(s) {bad or modes}; choose from {', '.join(MODES)}")
    return [m for m in MODES if m in modes]


class _Source:
    """Where the step's batches come from in one mode (``next_batch(i)`` or None)."""

    def __init__(self, next_batch: Callable[[int], dict] | None, close: Callable[[], None]
                 = lambda: None):
        self.next_batch, self.close = next_batch, close


def _iter_source(iterable, closer=None) -> _Source:
    it = iter(iterable)

    def nxt(_i: int) -> dict:
        return next(it)

    def close() -> None:
        if closer is not None:
            closer()

    return _Source(nxt, close)


def _environment(dev: torch.device) -> dict[str, Any]:
    env = {"device": str(dev), "timing": "cuda-events" if dev.type == "cuda" else "wall-clock",
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version()}
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(dev)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def _run_steps(step: Callable[[int, Callable | None, Callable], Any], source: _Source,
               first: int, warmup: int, steps: int, timer: PhaseTimer,
               on_step: Callable[[int], None] | None = None) -> None:
    """``warmup`` untimed-for-the-result steps, then ``steps`` timed ones."""
    for j in range(warmup + steps):
        if j == warmup:
            timer.reset()
        timer.begin_step()
        step(first + j, source.next_batch, timer)
        timer.end_step()
        if on_step is not None:
            on_step(j)


def _trace(step: Callable, first: int, steps: int, dev: torch.device, path: str | Path) -> str:
    """A PyTorch profiler trace (Chrome/Perfetto JSON) of ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hook = TraceHook()
    step(first, None, hook)  # one untraced step (lazy inits)
    with profile(activities=acts, record_shapes=False) as prof:
        for j in range(steps):
            with record_function(f"metadt/step {first + 1 + j}"):
                hook.begin_step()
                step(first + 1 + j, None, hook)
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

    wcfg = WorldModelConfig.for_family(family, preset)
    wm = WorldModel(obs_dim, act_dim, wcfg)
    wm.family = family  # type: ignore[attr-defined]
    return wm


# --------------------------------------------------------------------------- Meta-DT
def profile_meta_dt(data: str | Path, cfg: MetaDTConfig, world_model: Any = None, *,
                    steps: int = 50, warmup: int = 5, modes: Sequence[str] = DEFAULT_MODES,
                    start_step: int | None = None, workers: int = 0, prefetch_depth: int = 2,
                    trace: str | Path | None = None, trace_steps: int = 3,
                    on_mode: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Profile ``steps`` Meta-DT training steps per mode; returns the JSON document.

    ``world_model`` None with a method that needs one: an untrained world model of
    the preset's size. ``start_step`` (default: ``warm_train`` when the method uses
    prompts, else 0) is the index of the first step: it decides prompt or not and
    the batch seeds; every profiled step samples with that step's arguments.
    """
    from metadt.data.dataset import Dataset
    from metadt.train.meta_dt import build_trainer, prepare, train_step
    from metadt.train.run import resolve_device

    modes = _check_modes(modes)
    if steps < 1 or warmup < 0:
        raise ValueError("steps must be >= 1 and warmup >= 0")
    dev = resolve_device(cfg.device)
    wm_desc = str(world_model) if world_model is not None else None
    if world_model is None and cfg.needs_world_model:
        ds0 = Dataset.open(data)
        world_model = untrained_world_model(ds0.card.family, cfg.preset, ds0.card.obs_dim,
                                            ds0.card.act_dim)
        wm_desc = "untrained (random weights, preset size)"
    t0 = time.perf_counter()
    ds, store, cfg, wm, info = prepare(data, cfg, world_model, dev)
    prep_s = time.perf_counter() - t0
    first = int(start_step if start_step is not None
                else (cfg.warm_train if cfg.use_prompt else 0))
    n = warmup + steps
    results = []
    for mode in modes:
        if on_mode is not None:
            on_mode(mode)
        seed_everything(cfg.seed)
        tr = build_trainer(ds, store, cfg, wm, dev)
        tr.model.train()
        kw = tr.sample_kwargs(first)
        if mode == "sampler":
            src = _Source(None)
        elif mode == "prefetch":
            it = store.prefetch("windows", depth=prefetch_depth, num_batches=n, seed=cfg.seed,
                                batch=cfg.batch_size, **kw)
            src = _iter_source(it, it.close)
        else:
            nw = NumpyWindows(store, cfg.batch_size, seed=cfg.seed, num_batches=first + n, **kw)
            src = _iter_source(numpy_loader(nw, range(first, first + n), workers,
                                            pin_memory=dev.type == "cuda"))

        def step(i, next_batch, hook, tr=tr):
            return train_step(tr, i, next_batch=next_batch, timer=hook)

        timer = make_timer(dev)
        try:
            _run_steps(step, src, first, warmup, steps, timer)
        finally:
            src.close()
        extra = {"loader": "numpy-dataloader" if mode == "dataloader" else "rust",
                 "prefetch": mode == "prefetch"}
        if mode == "prefetch":
            extra["prefetch_depth"] = prefetch_depth
        if mode == "dataloader":
            extra["workers"] = workers
        results.append(mode_dict(mode, MODES[mode], timer.stats, cfg.batch_size, **extra))
    trace_path = None
    if trace is not None:
        seed_everything(cfg.seed)
        tr = build_trainer(ds, store, cfg, wm, dev)
        tr.model.train()
        trace_path = _trace(lambda i, nb, hook: train_step(tr, i, next_batch=nb, timer=hook),
                            first, trace_steps, dev, trace)
    meta = {"stage": "meta-dt", "method": cfg.method, "family": ds.card.family,
            "dataset": str(Path(data).resolve()), "quality": cfg.quality, "preset": cfg.preset,
            **_environment(dev), "steps": steps, "warmup_steps": warmup,
            "batch_size": cfg.batch_size, "start_step": first,
            "prompt": bool(cfg.use_prompt and first >= cfg.warm_train),
            "z_source": cfg.z_source if cfg.use_z else None, "world_model": wm_desc,
            "prepare_s": prep_s, "config": cfg.to_dict()}
    return result_dict(meta, results, trace_path)


# --------------------------------------------------------------------------- world model
def profile_world_model(data: str | Path, cfg: WorldModelConfig, *, steps: int = 50,
                        warmup: int = 5, modes: Sequence[str] = DEFAULT_MODES,
                        start_step: int = 0, workers: int = 0, prefetch_depth: int = 2,
                        trace: str | Path | None = None, trace_steps: int = 3,
                        on_mode: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Profile ``steps`` world-model training steps per mode; returns the JSON document.

    The world model computes z inside its forward pass, so its ``z`` phase is 0
    (z is part of ``forward``)."""
    from metadt.train.common import open_dataset
    from metadt.train.run import resolve_device
    from metadt.train.world_model import build_world_model_trainer, world_model_step

    modes = _check_modes(modes)
    if steps < 1 or warmup < 0:
        raise ValueError("steps must be >= 1 and warmup >= 0")
    cfg.validate()
    dev = resolve_device(cfg.device)
    ds = open_dataset(data, cfg.family, cfg.quality)
    store = ds.store(cfg.quality)
    first = int(start_step)
    n = warmup + steps
    results = []
    for mode in modes:
        if on_mode is not None:
            on_mode(mode)
        seed_everything(cfg.seed)
        tr = build_world_model_trainer(ds, store, cfg, dev)
        tr.model.train()
        kw = tr.sample_kwargs()
        if mode == "sampler":
            src = _Source(None)
        elif mode == "prefetch":
            it = store.prefetch("transitions", depth=prefetch_depth, num_batches=n,
                                seed=cfg.seed, batch=cfg.batch_size, **kw)
            src = _iter_source(it, it.close)
        else:
            nt = NumpyTransitions(store, cfg.batch_size, seed=cfg.seed, num_batches=first + n, **kw)
            src = _iter_source(numpy_loader(nt, range(first, first + n), workers,
                                            pin_memory=dev.type == "cuda"))

        def step(i, next_batch, hook, tr=tr):
            return world_model_step(tr, i, next_batch=next_batch, timer=hook)

        timer = make_timer(dev)
        try:
            _run_steps(step, src, first, warmup, steps, timer)
        finally:
            src.close()
        extra = {"loader": "numpy-dataloader" if mode == "dataloader" else "rust",
                 "prefetch": mode == "prefetch"}
        if mode == "prefetch":
            extra["prefetch_depth"] = prefetch_depth
        if mode == "dataloader":
            extra["workers"] = workers
        results.append(mode_dict(mode, MODES[mode], timer.stats, cfg.batch_size, **extra))
    trace_path = None
    if trace is not None:
        seed_everything(cfg.seed)
        tr = build_world_model_trainer(ds, store, cfg, dev)
        tr.model.train()
        trace_path = _trace(lambda i, nb, hook: world_model_step(tr, i, next_batch=nb, timer=hook),
                            first, trace_steps, dev, trace)
    meta = {"stage": "world-model", "method": None, "family": ds.card.family,
            "dataset": str(Path(data).resolve()), "quality": cfg.quality, "preset": cfg.preset,
            **_environment(dev), "steps": steps, "warmup_steps": warmup,
            "batch_size": cfg.batch_size, "start_step": first, "config": cfg.to_dict()}
    return result_dict(meta, results, trace_path)
