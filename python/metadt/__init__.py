"""metadt: Meta-DT (offline meta-RL as conditional sequence modeling).

The fast trajectory store is `metadt.TrajectoryStore` (Rust, via
`metadt._core`); task families are in `metadt.envs`, models in
`metadt.models`, training loops in `metadt.train`, evaluation in
`metadt.evaluate`, and fused kernels in `metadt.kernels`.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("metadt")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"

from metadt.data.store import PromptSpec, TrajectoryStore  # noqa: E402

__all__ = ["PromptSpec", "TrajectoryStore", "__version__"]
