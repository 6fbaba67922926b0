"""The one trainer of Meta-DT and of every baseline/ablation (protocol sections 4, 5, 7).

What a method does is decided by its config flags only (``use_z``,
``use_prompt``, ``prompt_strategy``, ``warm_train``; presets in
:data:`metadt.config.meta_dt.METHODS`). Batches come from
``TrajectoryStore.sample_windows`` on the training tasks; batch ``i`` is drawn
with seed ``batch_seed(cfg.seed, i)``, so a resumed run reproduces the
uninterrupted one exactly.

Under ``torchrun`` (docs/distributed.md) the same code runs data-parallel: rank
``r`` of ``W`` draws ``batch_size / W`` windows of batch ``i`` with seed
``batch_seed(cfg.seed, i * W + r)`` from its memory-mapped store, DDP averages
the gradients (losses are weighted so W ranks of B equal one process of W*B),
and only rank 0 writes. With one process nothing changes.

Before the first step: the dataset's family and dims are checked against the
config and the world model, z (``z_source="column"``) and the per-step
world-model errors (complementary prompt) are computed for every step and
attached as store columns, and every column the run needs is checked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from metadt import distributed as dist
from metadt.config.meta_dt import MetaDTConfig
from metadt.models import MetaDT, WorldModel
from metadt.seeding import PROMPT_DROPOUT_KEY, keyed_rng
from metadt.train.columns import StepTable, attach_z, compute_step_errors, compute_z
from metadt.train.common import check_return_scale, no_timer, obs_stats, open_dataset, to_tensors
from metadt.train.loop import Final, TrainingJob, run_training, start_process
from metadt.train.prompts import attach_step_errors, prompt_spec
from metadt.train.run import RUN_FORMAT, load_world_model, world_model_payload

BASE_COLUMNS = ("obs", "actions", "rewards", "next_obs", "rtg")
#: Config fields :func:`prepare` fills in from the dataset and the world model (the run
#: directory's ``config.json`` holds the resolved values).
RESOLVED_FIELDS = ("return_scale", "max_timestep", "action_scale", "z_dim", "prompt_start_min")


def _has_column(store, name: str) -> bool:
    try:
        store.column(name)
    except Exception:
        return False
    return True


def uses_scores(cfg: MetaDTConfig) -> bool:
    """Whether the prompt strategy reads the world-model error column."""
    from metadt.config.meta_dt import SCORED_STRATEGIES

    return cfg.use_prompt and cfg.prompt_strategy in SCORED_STRATEGIES


def check_world_model(wm: WorldModel, family: str, obs_dim: int, act_dim: int, where: str) -> None:
    """Clear errors for a world model of another family or with other dims."""
    wm_family = wm.family
    if wm_family != family:
        raise ValueError(f"{where}: world model was trained on family {wm_family!r}, "
                         f"the dataset is {family!r}")
    if (wm.obs_dim, wm.act_dim) != (obs_dim, act_dim):
        raise ValueError(f"{where}: world model dims (obs {wm.obs_dim}, act {wm.act_dim}) differ "
                         f"from the dataset's (obs {obs_dim}, act {act_dim})")


def prepare(data: str | Path, cfg: MetaDTConfig, world_model: str | Path | WorldModel | None,
            device: torch.device, ctx: dist.DistContext = dist.SINGLE
            ) -> tuple[Any, Any, MetaDTConfig, WorldModel | None, dict]:
    """Open and check everything a run needs; attach the z / error columns.

    With several ranks (``ctx``) every rank memory-maps the store, and the z / error
    columns are computed in whole chunks split across ranks and all-gathered, so
    every rank attaches the same (single-process) columns.

    Returns ``(dataset, store, resolved config, world model or None, info)``.
    """
    cfg.validate()
    ds = open_dataset(data, cfg.family, cfg.quality)
    store = ds.store(cfg.quality, mmap=ctx.distributed)
    obs_dim, act_dim = int(store.obs_dim), int(store.act_dim)
    info: dict[str, Any] = {}
    wm = None
    if cfg.needs_world_model:
        if world_model is None:
            raise ValueError(f"method {cfg.method!r} (use_z={cfg.use_z}, prompt_strategy="
                             f"{cfg.prompt_strategy!r}) needs a world model: pass --world-model WM")
        wm = world_model if isinstance(world_model, WorldModel) else load_world_model(world_model)
        check_world_model(wm, ds.card.family, obs_dim, act_dim, str(world_model if not
                                                                 isinstance(world_model, WorldModel)
                                                                 else "world model"))
        wm = wm.to(device).eval()
        for p in wm.parameters():
            p.requires_grad_(False)
    missing = [c for c in BASE_COLUMNS if not _has_column(store, c)]
    if missing:
        raise ValueError(f"{data}/{cfg.quality}: store lacks column(s) {', '.join(missing)}")
    fam = ds.family
    cfg = cfg.replace(
        return_scale=float(cfg.return_scale if cfg.return_scale is not None else fam.return_scale),
        max_timestep=int(cfg.max_timestep if cfg.max_timestep is not None else ds.card.horizon),
        action_scale=float(cfg.action_scale if cfg.action_scale is not None else fam.action_bound),
        z_dim=int(wm.z_dim) if wm is not None else cfg.z_dim,
        prompt_start_min=int(cfg.prompt_start_min if cfg.prompt_start_min is not None
                             else (wm.context_len if wm is not None else 0)),
    )
    check_return_scale(store, cfg.return_scale, f"{data}/{cfg.quality}")
    if cfg.max_timestep < ds.card.horizon:
        raise ValueError(f"max_timestep {cfg.max_timestep} < the dataset's horizon {ds.card.horizon}")
    t0 = time.perf_counter()
    table = StepTable.of(store) if ctx.distributed else None

    def sharded(fn):
        return dist.sharded_rows(table.num_steps, cfg.column_batch_size,
                                 lambda idx: fn(table, wm, cfg.column_batch_size, idx), ctx)

    if cfg.use_z and cfg.z_source == "column":
        if ctx.distributed:
            store.attach_column(cfg.z_column, sharded(compute_z))
        else:
            attach_z(store, wm, cfg.z_column, cfg.column_batch_size)
    info["time_z_column_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cfg.use_prompt:
        if uses_scores(cfg) and ctx.distributed:
            store.attach_column(cfg.prompt_score_column,
                                sharded(compute_step_errors).reshape(-1, 1))
        elif uses_scores(cfg):
            attach_step_errors(store, wm, cfg.prompt_score_column, cfg.column_batch_size)
    info["time_error_column_s"] = time.perf_counter() - t0
    needed = ([cfg.z_column] if cfg.use_z and cfg.z_source == "column" else []) + \
             ([cfg.prompt_score_column] if uses_scores(cfg) else [])
    missing = [c for c in needed if not _has_column(store, c)]
    if missing:
        raise ValueError(f"store lacks the column(s) {', '.join(missing)} this run needs")
    return ds, store, cfg, wm, info


def sampler_kwargs(cfg: MetaDTConfig, wm: WorldModel | None, train_ids: list[int],
                   with_prompt: bool) -> dict[str, Any]:
    """Keyword arguments of ``store.sample_windows`` for one phase of training."""
    kw: dict[str, Any] = {"window_len": cfg.window_len, "return_scale": cfg.return_scale,
                          "tasks": train_ids, "context_len": 0, "columns": (),
                          "anchor": cfg.window_anchor}
    if cfg.use_z:
        if cfg.z_source == "column":
            kw["columns"] = (cfg.z_column,)
        else:
            kw["context_len"] = wm.context_len
    if with_prompt:
        kw["prompt"] = prompt_spec(cfg.prompt_len,
                                   cfg.prompt_score_column if uses_scores(cfg) else None,
                                   cfg.prompt_strategy, cfg.prompt_start_min)
    return kw


@dataclass
class MetaDTTrainer:
    """Everything a training step needs (from :func:`build_trainer`)."""

    cfg: MetaDTConfig
    store: Any
    model: MetaDT
    optimizer: torch.optim.Optimizer
    scheduler: Any
    world_model: WorldModel | None
    device: torch.device
    kw_plain: dict[str, Any]
    kw_prompt: dict[str, Any] | None
    ctx: dist.DistContext = dist.SINGLE
    """Rank and world size (one process: rank 0 of 1)."""
    loss_fn: Callable[..., torch.Tensor] | None = None
    """``model.loss``, through DDP with several ranks (None: ``model.loss``)."""

    def with_prompt(self, i: int) -> bool:
        """Whether step ``i`` trains with the prompt (after ``warm_train`` steps)."""
        return self.cfg.use_prompt and i >= self.cfg.warm_train

    def sample_kwargs(self, i: int) -> dict[str, Any]:
        """``sample_windows`` keyword arguments of step ``i``."""
        return self.kw_prompt if self.with_prompt(i) else self.kw_plain  # type: ignore[return-value]

    def batch_seed(self, i: int) -> int:
        """Sampler seed of this rank's part of batch ``i``: ``batch_seed(cfg.seed, i * W + r)``
        (one process: ``batch_seed(cfg.seed, i)``)."""
        return dist.rank_batch_seed(self.cfg.seed, i, self.ctx.rank, self.ctx.world)

    def sample(self, i: int) -> dict[str, Any]:
        """This rank's part of batch ``i``: ``batch_size / W`` windows (seed :meth:`batch_seed`)."""
        return self.store.sample_windows(dist.per_rank_batch(self.cfg.batch_size, self.ctx.world),
                                         seed=self.batch_seed(i), **self.sample_kwargs(i))


def build_trainer(ds, store, cfg: MetaDTConfig, wm: WorldModel | None,
                  dev: torch.device, ctx: dist.DistContext = dist.SINGLE) -> MetaDTTrainer:
    """Policy (normalized on the training tasks), AdamW, warm-up schedule and sampler
    arguments, from :func:`prepare`'s outputs (seed first for reproducible weights).
    With several ranks the loss goes through DDP (rank 0's weights broadcast)."""
    train_ids = [int(t) for t in ds.card.train_ids]
    table = StepTable.of(store)
    model = MetaDT(store.obs_dim, store.act_dim, cfg)
    model.set_normalization(*obs_stats(table, table.steps_of_tasks(train_ids)))
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0)
    kw_plain = sampler_kwargs(cfg, wm, train_ids, with_prompt=False)
    kw_prompt = sampler_kwargs(cfg, wm, train_ids, with_prompt=True) if cfg.use_prompt else None
    dist.per_rank_batch(cfg.batch_size, ctx.world)  # divisible, or a clear error
    return MetaDTTrainer(cfg, store, model, opt, sched, wm, dev, kw_plain, kw_prompt, ctx,
                         dist.ddp_loss(model, ctx, "loss", dev,  # prompt unused in warm-up:
                                       find_unused=cfg.use_prompt and cfg.warm_train > 0))


def drop_prompts(prompt_mask: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Mask the whole prompt of a fraction ``p`` of the samples (deterministic in
    ``seed``). A fully masked prompt is exactly "no prompt" for the main sequence
    (masked keys are never attended), so the one model keeps acting zero-shot."""
    rng = keyed_rng(seed, PROMPT_DROPOUT_KEY)
    keep = torch.from_numpy(rng.random(prompt_mask.shape[0]) >= p).to(prompt_mask.device)
    return prompt_mask & keep[:, None]


def train_step(tr: MetaDTTrainer, i: int, next_batch: Callable[[int], dict] | None = None,
               timer: Callable[[str], None] = no_timer) -> tuple[float, float]:
    """One gradient step on batch ``i``; returns ``(loss, grad norm)``.

    Phases: sample batch -> host-to-device -> z -> forward+loss -> backward ->
    optimizer step; ``timer(phase)`` is called as each ends (no-op by default).
    ``next_batch(i)`` replaces the sampler (e.g. a ``store.prefetch`` iterator).
    """
    cfg, model, ctx = tr.cfg, tr.model, tr.ctx
    raw = tr.sample(i) if next_batch is None else next_batch(i)
    timer("sample")
    b = to_tensors(raw, tr.device)
    if "prompt_mask" in b and cfg.prompt_dropout > 0:
        b["prompt_mask"] = drop_prompts(b["prompt_mask"], cfg.prompt_dropout, tr.batch_seed(i))
    timer("h2d")
    if ctx.distributed:  # dropout: a pure function of (seed, step, rank) on each rank
        torch.manual_seed(dist.rank_torch_seed(cfg.seed, i, ctx.rank, ctx.world))
    z = None
    if cfg.use_z:
        z = b[cfg.z_column] if cfg.z_source == "column" else model.compute_z(b, tr.world_model)
    timer("z")
    loss = (tr.loss_fn or model.loss)(b, z)
    timer("forward")
    tr.optimizer.zero_grad(set_to_none=True)
    if ctx.distributed:  # this rank's share of the mean over every rank's real steps
        (loss * dist.global_mean_scale(b["mask"].sum().to(loss.dtype), ctx)).backward()
    else:
        loss.backward()
    timer("backward")
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    tr.optimizer.step()
    tr.scheduler.step()
    timer("optimizer")
    return float(loss.detach()), float(gnorm)


def train_meta_dt(data: str | Path, cfg: MetaDTConfig, out: str | Path,
                  world_model: str | Path | WorldModel | None = None, *, overwrite: bool = False,
                  progress: bool = True,
                  on_log: Callable[[dict[str, Any]], None] | None = None,
                  stop_after: int | None = None,
                  evaluate_return: Callable[[Any, Any, MetaDTConfig], float] | None = None
                  ) -> dict[str, Any]:
    """Train (or resume) Meta-DT / a baseline into ``out``; returns the run summary.

    Runs through the shared skeleton (:func:`metadt.train.loop.run_training`: run
    directory, resume, checkpoints, logging, progress, DDP, final files); this trainer
    supplies :func:`prepare` + :func:`build_trainer`, :func:`train_step` and the final
    payload (``model.safetensors`` with its world model, ``run.json``).

    ``evaluate_return(model, world_model, cfg)`` (given by the caller, e.g.
    `metadt.evaluate.evaluator.training_return_probe`: training knows no envs) is called
    every ``cfg.train_eval_every`` steps (0: never) on rank 0 with the model in eval mode;
    its value is logged as ``eval_return``.

    ``stop_after`` stops (after checkpointing) once that many steps are done, as
    an interruption would (for tests of resuming).
    """
    ctx, dev = start_process(cfg)
    ds, store, cfg, wm, info = prepare(data, cfg, world_model, dev, ctx)
    run_info = {"dataset": str(Path(data).resolve()), "quality": cfg.quality,
                "family": ds.card.family, "method": cfg.method,
                "world_model": None if wm is None or isinstance(world_model, WorldModel)
                else str(Path(world_model).resolve()),
                "obs_dim": int(store.obs_dim), "act_dim": int(store.act_dim), **info}

    def log_extra(tr: MetaDTTrainer, step: int) -> dict[str, Any]:
        return {"lr": float(tr.scheduler.get_last_lr()[0]), "prompt": int(tr.with_prompt(step - 1))}

    def periodic(tr: MetaDTTrainer, step: int) -> dict[str, Any] | None:
        if (evaluate_return is None or ctx.distributed or cfg.train_eval_every <= 0
                or not (step % cfg.train_eval_every == 0 or step == cfg.num_steps)):
            return None
        tr.model.eval()
        value = float(evaluate_return(tr.model, wm, cfg))
        tr.model.train()
        return {"eval_return": value}

    def finalize(tr: MetaDTTrainer, summary: dict[str, Any]) -> Final:
        payload = {"format": RUN_FORMAT, "config": cfg.to_dict(), "obs_dim": int(store.obs_dim),
                   "act_dim": int(store.act_dim), "family": ds.card.family,
                   "dataset": run_info["dataset"],
                   "state_dict": {k: v.detach().cpu() for k, v in tr.model.state_dict().items()},
                   "world_model": None if wm is None else
                   world_model_payload(wm, wm.family, wm.dataset)}
        record = {**run_info, **{k: v for k, v in summary.items() if k != "losses"}}
        return Final(payload, "run.json", record, curves=("loss", "lr", "eval_return"),
                     title=f"{cfg.method} ({cfg.family}, {cfg.quality})")

    def step(tr: MetaDTTrainer, i: int) -> dict[str, float]:
        loss, gnorm = train_step(tr, i)
        return {"loss": loss, "grad_norm": gnorm}

    job = TrainingJob(cfg, "training run", cfg.method,
                      build=lambda: build_trainer(ds, store, cfg, wm, dev, ctx),
                      step=step, finalize=finalize, log_extra=log_extra, periodic=periodic)
    _, summary = run_training(job, out, ctx=ctx, device=dev, overwrite=overwrite,
                              progress=progress, on_log=on_log, stop_after=stop_after)
    return {**run_info, **summary}
