"""Type stubs for `metadt._core`, the Rust trajectory store (see docs/store.md)."""
from __future__ import annotations

import os
from typing import Any, Iterator, Literal, Mapping, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

FORMAT_VERSION: int
"""On-disk format version written by `TrajectoryStore.save`."""
ACTION_PAD: float
"""Value of padded actions in windows and prompts (-10.0)."""

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Tasks = Union[int, Sequence[int], npt.NDArray[np.integer], None]
_Prompt = Union[Any, Mapping[str, Any], Tuple[int, str | None, str], Tuple[int, str | None, str, int], None]
Batch = dict[str, np.ndarray]

def derive_seed(seed: int, index: int) -> int:
    """Seed of batch `index` of `prefetch(seed=seed)`."""

def parallel_available() -> bool:
    """False in a process forked after its parent used the rayon pool (then sampling runs serially)."""

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
    def reseed(self, seed: int) -> None: ...
    def sample_transitions(self, batch: int, context: int = 4, tasks: _Tasks = None, seed: int | None = None) -> Batch: ...
    def sample_windows(
        self,
        batch: int,
        length: int = 20,
        context: int = 0,
        return_scale: float = 1.0,
        columns: str | Sequence[str] | None = None,
        prompt: _Prompt = None,
        tasks: _Tasks = None,
        seed: int | None = None,
        anchor: Literal["start", "end"] = "end",
    ) -> Batch:
        """K-step windows around a step drawn uniformly over the steps: anchor="end" ends the window
        there, anchor="start" starts it there (clipped at the episode end); see docs/store.md.
        `return_scale` must be finite, > 0, representable in float32 and keep every
        return-to-go / return_scale finite in float32 (else ValueError)."""
    def segment_scores(
        self, column: str, length: int, start_min: int = 0, episodes: Sequence[int] | npt.NDArray[np.integer] | None = None
    ) -> dict[str, np.ndarray]: ...
    def best_segments(
        self,
        column: str,
        length: int,
        start_min: int = 0,
        per: Literal["task", "episode"] = "task",
        mode: Literal["argmax", "proportional"] = "argmax",
        seed: int | None = None,
        episodes: Sequence[int] | npt.NDArray[np.integer] | None = None,
    ) -> dict[str, np.ndarray]: ...
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
