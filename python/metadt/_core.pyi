"""Type stubs for `metadt._core`, the Rust trajectory store (see docs/store.md)."""
from __future__ import annotations

import os
from typing import Any, Iterator, Literal, Mapping, NotRequired, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

FORMAT_VERSION: int
"""On-disk format version written by `TrajectoryStore.save`."""
ACTION_PAD: float
"""Value of padded actions in windows and prompts (-10.0); every other padded entry of every batch is 0 / False."""

# ---------------------------------------------------------------- names (one definition each)
PromptStrategy = Literal["argmax", "proportional", "random", "last"]
"""How a prompt segment is chosen (`PromptSpec.strategy`; the Rust enum `Strategy`)."""
PROMPT_STRATEGIES: tuple[PromptStrategy, ...]
"""The strategy names at run time, from the Rust enum: ("argmax", "proportional", "random", "last")."""
SegmentMode = Literal["argmax", "proportional"]
"""The strategies that score segments (`best_segments(mode=)`; need a score column)."""
Anchor = Literal["start", "end"]
"""Which step of a `sample_windows` window is drawn uniformly over the steps."""
ANCHORS: tuple[Anchor, ...]
Per = Literal["task", "episode"]

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Tasks = Union[int, Sequence[int], npt.NDArray[np.integer], None]
_Ints = Union[int, Sequence[int], npt.NDArray[np.integer]]
_Prompt = Union[Any, Mapping[str, Any], Tuple[int, str | None, str], Tuple[int, str | None, str, int], None]
_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]
_Bool = npt.NDArray[np.bool_]

# ---------------------------------------------------------------- batch schemas
# B = batch rows, K = window length, h = context length, k = prompt length.
# Keys marked NotRequired are present only when asked for (context h > 0, prompt=...).

class TransitionBatch(TypedDict):
    """`sample_transitions` (and `gather_steps` / `iter_steps`, plus `steps`)."""

    obs: _F32                        # [B, obs_dim]
    actions: _F32                    # [B, act_dim]
    rewards: _F32                    # [B]
    next_obs: _F32                   # [B, obs_dim]
    terminals: _F32                  # [B]
    tasks: _I64                      # [B]
    episodes: _I64                   # [B] (-1: an open episode)
    timesteps: _I64                  # [B] step t within its episode
    ctx_obs: NotRequired[_F32]       # [B, h, obs_dim]: the h steps strictly before t, oldest first
    ctx_actions: NotRequired[_F32]   # [B, h, act_dim]
    ctx_rewards: NotRequired[_F32]   # [B, h]
    ctx_mask: NotRequired[_Bool]     # [B, h] False on left padding (zeros)

class StepBatch(TransitionBatch):
    """`gather_steps` / `iter_steps`: given steps of the complete episodes, in order."""

    steps: _I64                      # [B] global step index (row of every column)

class PromptBatch(TypedDict):
    """The prompt keys of `sample_windows(prompt=...)`, and `prompt_segments`."""

    prompt_obs: _F32                 # [B, k, obs_dim] (padding 0)
    prompt_actions: _F32             # [B, k, act_dim] (padding ACTION_PAD)
    prompt_rewards: _F32             # [B, k]
    prompt_rtg: _F32                 # [B, k] return-to-go / return_scale (padding 0)
    prompt_timesteps: _I64           # [B, k] (padding 0)
    prompt_mask: _Bool               # [B, k] False on padding
    prompt_episodes: _I64            # [B]
    prompt_starts: _I64              # [B]

class WindowBatch(TypedDict):
    """`sample_windows` (training) and `live_windows` (evaluation): one layout.

    Each requested attached column is also returned under its own name, [B, K, d]
    (not part of this schema: read it as ``batch[name]``)."""

    obs: _F32                        # [B, K, obs_dim] (padding 0)
    actions: _F32                    # [B, K, act_dim] (padding ACTION_PAD)
    rewards: _F32                    # [B, K]
    rtg: _F32                        # [B, K] return-to-go / return_scale (padding 0)
    timesteps: _I64                  # [B, K] (padding 0)
    mask: _Bool                      # [B, K] False on left padding
    tasks: _I64                      # [B]
    episodes: _I64                   # [B] (-1: a live episode)
    ctx_obs: NotRequired[_F32]       # [B, K+h, obs_dim]; position j's context is ctx_*[:, j:j+h]
    ctx_actions: NotRequired[_F32]   # [B, K+h, act_dim] (padding 0)
    ctx_rewards: NotRequired[_F32]   # [B, K+h]
    ctx_mask: NotRequired[_Bool]     # [B, K+h]
    prompt_obs: NotRequired[_F32]
    prompt_actions: NotRequired[_F32]
    prompt_rewards: NotRequired[_F32]
    prompt_rtg: NotRequired[_F32]
    prompt_timesteps: NotRequired[_I64]
    prompt_mask: NotRequired[_Bool]
    prompt_episodes: NotRequired[_I64]
    prompt_starts: NotRequired[_I64]

class SegmentScores(TypedDict):
    episodes: _I64                   # [M]
    starts: _I64                     # [M]
    scores: npt.NDArray[np.float64]  # [M]

class BestSegments(SegmentScores):
    keys: _I64                       # [M] task ids or episode indices, ascending

Batch = Union[WindowBatch, TransitionBatch]

def derive_seed(seed: int, index: int) -> int:
    """Seed of batch `index` of `prefetch(seed=seed)`."""

def parallel_available() -> bool:
    """False in a process forked after its parent used the rayon pool (then sampling runs serially)."""

def segment_range(steps: int, length: int, start_min: int = 0) -> tuple[int, int] | None:
    """The short-episode rule (the one definition): candidate starts (lo, hi) of a length-`length`
    segment of an episode of `steps` steps: [start_min, steps-length], or [0, steps-length] when
    steps < start_min + length; None when steps < length (the whole episode, start 0, left-padded)."""

class StepIter(Iterator[StepBatch]):
    """`TrajectoryStore.iter_steps`: every step (or the given steps) in order, in chunks."""

    def __iter__(self) -> StepIter: ...
    def __next__(self) -> StepBatch: ...
    def __len__(self) -> int: ...
    @property
    def num_steps(self) -> int: ...

class Prefetch(Iterator[Batch]):
    """Batches prepared on a Rust thread; batch i == sampler(seed=derive_seed(seed, i))."""

    @property
    def index(self) -> int:
        """Index of the next batch to be returned."""
    @property
    def seed(self) -> int: ...
    def __iter__(self) -> Prefetch: ...
    def __next__(self) -> Batch: ...
    def close(self) -> None:
        """Stop and join the background thread (idempotent); the iterator then ends."""
    def __enter__(self) -> Prefetch: ...
    def __exit__(self, *args: object) -> bool: ...

class TrajectoryStore:
    """Episodes of transitions in float32 columns, with Rust batch sampling."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int | None = None) -> None: ...

    # ---- building
    def add_episode(
        self,
        obs: _Floats,
        actions: _Floats,
        rewards: _Floats,
        next_obs: _Floats | None = None,
        task: int = 0,
        terminals: npt.ArrayLike | None = None,
        truncations: npt.ArrayLike | None = None,
    ) -> int:
        """Append a complete episode ([T,obs], [T,act], [T] or [T,1]); returns its index.

        `terminals`: true terminations (stop bootstrapping), None = all 0.
        `truncations`: time-limit cuts, [T] of 0/1; None = the last step unless it is terminal."""
    def add_step(
        self,
        obs: npt.ArrayLike,
        action: npt.ArrayLike,
        reward: float,
        next_obs: npt.ArrayLike,
        done: bool,
        task: int = 0,
        terminal: bool | None = None,
        stream: int | None = None,
        truncated: bool | None = None,
    ) -> int | None:
        """Append one transition to the open episode of `stream` (default: task); returns the
        episode index when `done` closes it, else None. `terminal` defaults to `done`;
        `truncated` (a time-limit cut, needs `done`) defaults to `done and not terminal`."""
    def close_episode(self, stream: int) -> int:
        """Close the open episode of `stream` without a `done` step (its last step becomes a
        truncation unless terminal); returns its index."""
    def attach_column(self, name: str, values: _Floats) -> None:
        """Attach/replace a per-step column, [num_steps, d] or [num_steps] (stored float32).

        ValueError for a taken name: built-in columns, episode tables, batch keys
        (tasks, episodes, timesteps, mask) and names starting with ctx_ or prompt_."""
    def detach_column(self, name: str) -> None: ...
    def column(self, name: str) -> npt.NDArray[np.float32]:
        """Read-only zero-copy view (snapshot): [num_steps, d]; [num_steps] for rewards, terminals, truncations, rtg."""
    def columns(self) -> list[str]:
        """Names of the attached columns."""

    # ---- queries
    @property
    def obs_dim(self) -> int: ...
    @property
    def act_dim(self) -> int: ...
    @property
    def capacity(self) -> int | None: ...
    @property
    def num_episodes(self) -> int: ...
    @property
    def num_steps(self) -> int: ...
    @property
    def num_open_steps(self) -> int: ...
    @property
    def num_evicted(self) -> int: ...
    def __len__(self) -> int: ...
    def episode_task(self, i: int) -> int: ...
    def episodes_of_task(self, task: int) -> npt.NDArray[np.int64]: ...
    def episode_returns(self) -> npt.NDArray[np.float64]: ...
    def episode_lengths(self) -> npt.NDArray[np.int64]: ...
    def episode_offsets(self) -> npt.NDArray[np.int64]: ...
    def episode_tasks(self) -> npt.NDArray[np.int64]: ...
    def top_episodes(self, task: int, n: int) -> npt.NDArray[np.int64]: ...
    def tasks(self) -> npt.NDArray[np.int64]: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None: ...
    def set_metadata(self, value: dict[str, Any]) -> None: ...

    # ---- files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save atomically; `path` must be absent, an empty directory or a store (else FileExistsError)."""
    @staticmethod
    def load(path: str | os.PathLike[str], mmap: bool = True, verify: bool | None = None) -> TrajectoryStore:
        """Load a saved store (hostile files are refused: see docs/store.md, file-trust model).

        `verify` (default `not mmap`) also checks every file's CRC-32, that every float
        column is finite, and that rtg and returns match the rewards (ValueError otherwise)."""

    # ---- sampling
    # The lengths are `window_len` (K) and `context_len` (h) everywhere. Before they were renamed,
    # `sample_windows`, `live_windows` and `prefetch` took `length=` / `context=` and
    # `sample_transitions`, `gather_steps` and `iter_steps` `context=`: those keywords are still
    # accepted at run time (keyword-only, with a DeprecationWarning; an old and a new name together
    # is a TypeError) but are left out of these stubs, so a type checker points at them.
    def reseed(self, seed: int) -> None: ...
    def sample_transitions(self, batch: int, context_len: int = 4, tasks: _Tasks = None, seed: int | None = None) -> TransitionBatch: ...
    def sample_windows(
        self,
        batch: int,
        window_len: int = 20,
        context_len: int = 0,
        return_scale: float = 1.0,
        columns: str | Sequence[str] | None = None,
        prompt: _Prompt = None,
        tasks: _Tasks = None,
        seed: int | None = None,
        anchor: Anchor = "end",
    ) -> WindowBatch:
        """K-step windows around a step drawn uniformly over the steps: anchor="end" ends the window
        there, anchor="start" starts it there (clipped at the episode end); see docs/store.md.
        `return_scale` must be finite, > 0, representable in float32 and keep every
        return-to-go / return_scale finite in float32 (else ValueError)."""
    def segment_scores(
        self, column: str, length: int, start_min: int = 0, episodes: Sequence[int] | npt.NDArray[np.integer] | None = None
    ) -> SegmentScores:
        """Every segment whose start is a candidate of `segment_range` (every episode has one)."""
    def best_segments(
        self,
        column: str,
        length: int,
        start_min: int = 0,
        per: Per = "task",
        mode: SegmentMode = "argmax",
        seed: int | None = None,
        episodes: Sequence[int] | npt.NDArray[np.integer] | None = None,
    ) -> BestSegments: ...
    def gather_steps(self, steps: _Ints, context_len: int = 4) -> StepBatch:
        """The given steps of the complete episodes (global indices: row n of every column), in order,
        each with its `context_len` transitions strictly before it (the `sample_transitions` layout)."""
    def iter_steps(self, context_len: int = 4, chunk: int = 4096, steps: _Ints | None = None) -> StepIter:
        """Every step of the complete episodes in order (or the given `steps`), `chunk` per batch:
        `gather_steps` batches, each filled with the GIL released."""
    def live_windows(
        self,
        streams: _Ints,
        obs: npt.ArrayLike,
        targets: npt.ArrayLike,
        tasks: _Ints,
        window_len: int = 20,
        context_len: int = 0,
        return_scale: float = 1.0,
    ) -> WindowBatch:
        """The policy input of live episodes (the open episodes of `add_step(stream=...)`): per stream,
        the `sample_windows` window ending at its current step t (the number of steps its open episode
        holds), whose observation is `obs[i]` and whose action and reward are unknown (0);
        rtg = (targets[i] - rewards received before each step) / return_scale."""
    def prompt_segments(self, episodes: _Ints, starts: _Ints, length: int, return_scale: float = 1.0) -> PromptBatch:
        """Prompts of given segments of complete episodes (the `prompt_*` layout of `sample_windows`)."""
    def prefetch(
        self,
        kind: Literal["windows", "transitions"] = "windows",
        depth: int = 2,
        num_batches: int | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Prefetch: ...

    # ---- memory
    def memory_bytes(self) -> int: ...
    def raw_bytes(self) -> int: ...
    def mapped_bytes(self) -> int: ...
    def shrink_to_fit(self) -> None: ...
