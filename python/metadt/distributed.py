"""Data-parallel runs with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

One code path for every world size: a plain ``python -m metadt ...`` is world
size 1 (no process group, nothing here does any communication), and
``torchrun --nproc_per_node N -m metadt ...`` makes N ranks.

- :func:`init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), creates the process group
  once with the backend chosen automatically (NCCL when CUDA is available,
  gloo otherwise; ``METADT_DIST_BACKEND`` overrides) and returns a
  :class:`DistContext`. Without those variables it returns the world-size-1
  context.
- Seeds: rank ``r`` of ``W`` draws batch ``i`` with
  ``batch_seed(seed, i * W + r)`` (:func:`metadt.seeding.rank_batch_seed`); with ``W = 1`` that
  is ``batch_seed(seed, i)``, the single-process seed, so a single process is
  unchanged, every rank draws different batches, and a run resumed on another
  number of ranks is well defined (step ``i`` of ``W`` ranks reads the seeds
  ``iW .. iW+W-1``).
- The config's batch size is the *global* batch: each rank draws
  ``batch_size / W`` samples (:func:`per_rank_batch`), so 2 ranks of B equal
  one process of 2B.
- Only rank 0 writes (:meth:`DistContext.is_main`); others wait at
  :func:`barrier` where a file must exist before they read it.
- :func:`shard` gives the contiguous block of ``n`` items (tasks, steps) of a
  rank.

docs/distributed.md explains launching and the guarantees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from metadt.runtime import resolve_device, to_numpy, to_torch
from metadt.seeding import rank_batch_seed, rank_torch_seed

BACKEND_ENV = "METADT_DIST_BACKEND"


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device choice of this process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True with more than one rank (a process group exists)."""
        return self.world > 1

    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and progress bars."""
        return self.rank == 0

    def device(self, name: str | torch.device = "auto") -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA (or ``auto`` with CUDA)."""
        return resolve_device(name, self.local_rank if self.distributed else None)


SINGLE = DistContext()


def env_world() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def choose_backend() -> str:
    """NCCL when CUDA is available, gloo otherwise (``METADT_DIST_BACKEND`` overrides)."""
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        return forced
    return "nccl" if torch.cuda.is_available() else "gloo"


def init() -> DistContext:
    """The context of this process, creating the process group when launched by torchrun.

    Idempotent: a second call returns the context of the existing group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                           dist.get_backend())
    rank, world, local = env_world()
    if world == 1:
        return SINGLE
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = choose_backend()
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    import atexit

    atexit.register(_exit_cleanup)
    return DistContext(rank, world, local, backend)


def _exit_cleanup() -> None:
    """At interpreter exit: free DDP wrappers, then destroy the process group (exiting
    with them alive can abort the process: "terminate called without an active exception")."""
    import gc

    gc.collect()
    shutdown()


def context() -> DistContext:
    """The current context without creating a group (world size 1 when none exists)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                           dist.get_backend())
    return SINGLE


def rank() -> int:
    return context().rank


def world_size() -> int:
    return context().world


def is_main() -> bool:
    """True on rank 0 (and in a single process); before the process group exists,
    from torchrun's ``RANK`` (so a CLI can print on rank 0 only from the start)."""
    ctx = context()
    return ctx.rank == 0 if ctx.distributed else env_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op with one rank)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group if one exists."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------ seeds, batches, shards
# rank_batch_seed and rank_torch_seed are derived in metadt.seeding (re-exported here)


def per_rank_batch(batch_size: int, world: int) -> int:
    """The batch each rank draws: the config's (global) batch split evenly across ranks."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} (the global batch) is not divisible by the "
                         f"{world} ranks; pick a multiple of {world}")
    return batch_size // world


def shard(n: int, rank: int, world: int) -> range:
    """The contiguous block of ``range(n)`` of rank ``rank`` (sizes differ by at most 1,
    the first ``n % world`` ranks get one more)."""
    base, extra = divmod(int(n), int(world))
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))


# ------------------------------------------------------------------ communication helpers
def _comm_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" \
        else torch.device("cpu")


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over ranks (a new tensor; ``value`` itself with one rank)."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    t = value.detach().to(_comm_device(ctx)).clone()
    dist.all_reduce(t)
    return t.to(value.device)


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src,
                               device=_comm_device(ctx) if ctx.backend == "nccl" else None)
    return box[0]


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def sharded_rows(n: int, block: int, compute: Callable[[np.ndarray], np.ndarray],
                 ctx: DistContext) -> np.ndarray:
    """``compute(arange(n))`` with the work split across ranks, gathered on every rank.

    Rows are split in contiguous blocks of whole ``block``-row chunks, so every rank runs
    the same chunks (same shapes) a single process would and the gathered array is the
    single-process one on the same hardware. ``compute(idx)`` returns one row per index.
    """
    if not ctx.distributed:
        return compute(np.arange(n))
    import torch.distributed as dist

    chunks = shard((n + block - 1) // block, ctx.rank, ctx.world)
    lo, hi = chunks.start * block, min(n, chunks.stop * block)
    mine = np.ascontiguousarray(compute(np.arange(lo, hi, dtype=np.int64)))
    sizes = [len(shard((n + block - 1) // block, r, ctx.world)) * block for r in range(ctx.world)]
    width = max(sizes)
    shape = mine.shape[1:]
    dev = _comm_device(ctx)
    mine_t = to_torch(mine, dev)
    buf = torch.zeros((width, *shape), dtype=mine_t.dtype, device=dev)
    buf[: len(mine)] = mine_t
    parts = [torch.empty_like(buf) for _ in range(ctx.world)]
    dist.all_gather(parts, buf)
    out = []
    for r, p in enumerate(parts):
        c = shard((n + block - 1) // block, r, ctx.world)
        rows = max(0, min(n, c.stop * block) - c.start * block)
        out.append(to_numpy(p[:rows]))
    return np.concatenate(out)


def main_first(fn: Callable[[], Any], ctx: DistContext) -> Any:
    """Run ``fn`` on rank 0 only (e.g. prepare an output directory) and return its
    result on every rank; an exception on rank 0 is raised on every rank (no hang)."""
    if not ctx.distributed:
        return fn()
    result: Any = None
    error: BaseException | None = None
    if ctx.is_main():
        try:
            result = fn()
        except BaseException as exc:  # re-raised on every rank below
            error = exc
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise error
    return result


class NullLogger:
    """What non-main ranks log to: nothing."""

    def log(self, step: int, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def mean_over_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """``values`` averaged over ranks (same keys on every rank); unchanged with one rank."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = all_reduce_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64), ctx)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


# ------------------------------------------------------------------ DDP
class LossModule(torch.nn.Module):
    """``forward(*args) = module.<method>(*args)``: lets DDP wrap a module's loss method
    (DDP synchronises gradients of what runs inside its ``forward``)."""

    def __init__(self, module: torch.nn.Module, method: str = "loss") -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


def ddp_loss(module: torch.nn.Module, ctx: DistContext, method: str = "loss",
             device: torch.device | None = None, find_unused: bool = True) -> Callable[..., Any]:
    """``module.<method>`` as a callable, run through DDP with several ranks.

    With one rank, the bound method itself (no wrapper, no communication). With
    several, a :class:`DistributedDataParallel` around :class:`LossModule`:
    construction broadcasts rank 0's parameters and buffers, and every backward
    averages gradients across ranks. ``find_unused``: some steps leave parameters
    unused (e.g. prompt embeddings during warm-up); costs one graph traversal per
    step. Checkpoints keep saving
    ``module`` itself (the unwrapped state).
    """
    if not ctx.distributed:
        return getattr(module, method)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device is not None and device.type == "cuda" else None
    return DDP(LossModule(module, method), device_ids=ids, find_unused_parameters=find_unused)


def global_mean_scale(count: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Factor turning a rank's mean over ``count`` items into its share of the global mean.

    DDP averages gradients over ranks; multiplying rank r's mean loss by
    ``W * count_r / sum(count)`` makes that average the gradient of the mean over
    every rank's items (masked means with different counts per rank), so W ranks
    of B equal one process of W*B.
    """
    if not ctx.distributed:
        return torch.ones((), dtype=count.dtype, device=count.device)
    total = all_reduce_sum(count.to(torch.float64), ctx).to(count.dtype)
    return count * ctx.world / total.clamp_min(1)


def ranks_equal(tensors: Sequence[torch.Tensor], ctx: DistContext) -> bool:
    """Whether every rank holds bit-identical ``tensors`` (for tests and checks)."""
    if not ctx.distributed:
        return True
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    digests = all_gather_object(digest.hexdigest(), ctx)
    return len(set(digests)) == 1


__all__ = ["DistContext", "SINGLE", "init", "context", "rank", "world_size", "is_main",
           "barrier", "shutdown", "choose_backend", "env_world", "rank_batch_seed",
           "rank_torch_seed", "per_rank_batch", "shard", "all_reduce_sum", "broadcast_object",
           "all_gather_object", "sharded_rows", "main_first", "NullLogger", "mean_over_ranks", "LossModule", "ddp_loss", "global_mean_scale",
           "ranks_equal"]
