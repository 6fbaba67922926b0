"""Phase timers for one training step.

A trainer step calls its timer hook once at the **end** of each phase with the
phase's name (``hook("sample")``, ``hook("h2d")``, ...). Phases are therefore
contiguous: every instant between :meth:`PhaseTimer.begin_step` and the last
mark belongs to exactly one phase, and ``other`` (the time after the last mark
until :meth:`PhaseTimer.end_step`: the loss read-back, Python bookkeeping) is
the wall time of the step minus the named phases. The parts add up to the
measured wall time exactly, by construction.

- :class:`WallTimer` (CPU): every phase is wall clock (``time.perf_counter``);
  CPU kernels run synchronously, so wall clock is the true cost.
- :class:`CudaTimer` (GPU): host phases (batch sampling, which never touches
  the GPU) are wall clock; device phases are the time between CUDA events
  recorded on the current stream at the phase marks, i.e. the GPU timeline
  (wall clock around asynchronous launches would only measure the launch).
  The step is synchronized at :meth:`~PhaseTimer.begin_step` (the GPU is idle
  when the step starts, so the first event fires when it is recorded) and at
  :meth:`~PhaseTimer.end_step` (the step's wall time includes all its GPU work),
  so host phases + event intervals + other = the step's wall time.

The trainer's default hook is a no-op function (:func:`no_timer`): nothing is
measured and nothing is synchronized in a normal run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from metadt.train.common import STEP_PHASES, no_timer

#: The phases of a training step, in order (the trainers' own; ``other`` is derived).
PHASES: tuple[str, ...] = tuple(STEP_PHASES)
OTHER = "other"
ALL_PHASES: tuple[str, ...] = PHASES + (OTHER,)

#: Human names of the phases (the table's rows).
PHASE_LABELS: dict[str, str] = {
    "sample": "batch sampling",
    "h2d": "host-to-device copy",
    "z": "z computation",
    "forward": "forward (+loss)",
    "backward": "backward",
    "optimizer": "optimizer step",
    "other": "other",
}

#: Phases that run on the host only (wall clock on every device).
HOST_PHASES: frozenset[str] = frozenset({"sample"})


@dataclass
class StepTimes:
    """Seconds of one step: each named phase, ``wall`` and ``other = wall - sum``."""

    phases: dict[str, float]
    wall: float

    @property
    def measured(self) -> float:
        return float(sum(self.phases.values()))

    @property
    def other(self) -> float:
        return self.wall - self.measured

    def as_dict(self) -> dict[str, float]:
        return {**{p: self.phases.get(p, 0.0) for p in PHASES}, OTHER: self.other}


@dataclass
class PhaseStats:
    """Accumulated :class:`StepTimes` of many steps (one profiled mode)."""

    steps: list[StepTimes] = field(default_factory=list)

    def add(self, st: StepTimes) -> None:
        self.steps.append(st)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def wall(self) -> float:
        return float(sum(s.wall for s in self.steps))

    def totals(self) -> dict[str, float]:
        """Seconds per phase (``other`` included) summed over the steps."""
        out = {p: 0.0 for p in ALL_PHASES}
        for s in self.steps:
            for p, v in s.as_dict().items():
                out[p] += v
        return out

    def coverage(self) -> float:
        """Share of the wall time covered by the named phases (without ``other``)."""
        w = self.wall
        return float(sum(s.measured for s in self.steps) / w) if w > 0 else 0.0


class PhaseTimer:
    """Base of the timers: ``begin_step()``, ``timer(phase)`` at each phase end,
    ``end_step() -> StepTimes``; steps accumulate in :attr:`stats`."""

    timing = "none"

    def __init__(self) -> None:
        self.stats = PhaseStats()
        self._phases: dict[str, float] = {}

    def reset(self) -> None:
        self.stats = PhaseStats()

    def begin_step(self) -> None:
        raise NotImplementedError

    def __call__(self, phase: str) -> None:
        raise NotImplementedError

    def end_step(self) -> StepTimes:
        raise NotImplementedError

    def _add(self, phase: str, dt: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        self._phases[phase] = self._phases.get(phase, 0.0) + dt


class WallTimer(PhaseTimer):
    """Wall clock for every phase (CPU training)."""

    timing = "wall-clock"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.clock = clock
        self._t0 = self._last = 0.0

    def begin_step(self) -> None:
        self._phases = {}
        self._t0 = self._last = self.clock()

    def __call__(self, phase: str) -> None:
        now = self.clock()
        self._add(phase, now - self._last)
        self._last = now

    def end_step(self) -> StepTimes:
        st = StepTimes(dict(self._phases), self.clock() - self._t0)
        self.stats.add(st)
        return st


class CudaTimer(PhaseTimer):
    """Host phases by wall clock, device phases by CUDA events (GPU training).

    ``event_factory`` and ``synchronize`` are injectable for tests; by default
    ``torch.cuda.Event(enable_timing=True)`` and ``torch.cuda.synchronize``.
    """

    timing = "cuda-events"

    def __init__(self, device: Any = None, clock: Callable[[], float] = time.perf_counter,
                 event_factory: Callable[[], Any] | None = None,
                 synchronize: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.clock = clock
        if event_factory is None or synchronize is None:
            import torch

            dev = torch.device(device) if device is not None else torch.device("cuda")
            event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            synchronize = synchronize or (lambda: torch.cuda.synchronize(dev))
        self._event = event_factory
        self._sync = synchronize
        self._marks: list[tuple[str, Any, float]] = []
        self._t0 = 0.0

    def begin_step(self) -> None:
        self._sync()  # the GPU is idle: the step's first event fires when recorded
        self._phases = {}
        self._marks = []
        self._t0 = self.clock()
        ev = self._event()
        ev.record()
        self._marks.append(("", ev, self._t0))

    def __call__(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        now = self.clock()
        ev = self._event()
        ev.record()
        self._marks.append((phase, ev, now))

    def end_step(self) -> StepTimes:
        self._sync()
        wall = self.clock() - self._t0
        # A host phase (batch sampling) never touches the GPU and runs while it is
        # idle (first in the step, which began synchronized): wall clock. Its end
        # event then fires as soon as it is recorded, so the next device phase's
        # interval (event to event, the GPU timeline) starts where it ended.
        _, prev_ev, prev_t = self._marks[0]
        for phase, ev, t in self._marks[1:]:
            if phase in HOST_PHASES:
                self._add(phase, t - prev_t)
            else:
                self._add(phase, prev_ev.elapsed_time(ev) / 1e3)  # ms -> s
            prev_ev, prev_t = ev, t
        st = StepTimes(dict(self._phases), wall)
        self.stats.add(st)
        return st


def make_timer(device: Any) -> PhaseTimer:
    """The right timer for a torch device: events on CUDA, wall clock otherwise."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return CudaTimer(dev)
    return WallTimer()


class TraceHook:
    """Wraps a hook so each phase also shows as a named range in a PyTorch profiler
    trace (``metadt/<phase>``)."""

    def __init__(self, inner: Callable[[str], None] = no_timer) -> None:
        self.inner = inner
        self._rf: Any = None

    def begin_step(self) -> None:
        self._open(PHASES[0])

    def _open(self, phase: str) -> None:
        from torch.autograd.profiler import record_function

        self._rf = record_function(f"metadt/{phase}")
        self._rf.__enter__()

    def _close(self) -> None:
        if self._rf is not None:
            self._rf.__exit__(None, None, None)
            self._rf = None

    def __call__(self, phase: str) -> None:
        self._close()
        self.inner(phase)
        i = PHASES.index(phase) if phase in PHASES else len(PHASES)
        self._open(PHASES[i + 1] if i + 1 < len(PHASES) else OTHER)

    def end_step(self) -> None:
        self._close()


def summarize(values: Sequence[float] | Iterable[float]) -> dict[str, float]:
    """mean / median / p90 / min / max of a list (seconds -> the same unit)."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0.0, "max": 0.0}
    n = len(v)
    mid = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
    return {"mean": sum(v) / n, "median": mid, "p90": v[min(n - 1, int(round(0.9 * (n - 1))))],
            "min": v[0], "max": v[-1]}
