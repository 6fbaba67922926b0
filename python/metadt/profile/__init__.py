"""Where a training step's time goes (``metadt profile``; docs/profile.md).

- :mod:`metadt.profile.timer`: phase timers (wall clock on CPU, CUDA events on GPU);
- :mod:`metadt.profile.step`: runs the trainers' own step under a timer, per mode
  (Rust sampler, Rust prefetch, DataLoader over a NumPy gather);
- :mod:`metadt.profile.compare`: the NumPy-gather datasets of the comparison mode;
- :mod:`metadt.profile.table`: the JSON document and the table.
"""
from metadt.profile.table import SCHEMA, check_result, format_table
from metadt.profile.timer import ALL_PHASES, PHASES, CudaTimer, WallTimer, make_timer

__all__ = ["ALL_PHASES", "PHASES", "SCHEMA", "CudaTimer", "WallTimer", "check_result",
           "format_table", "make_timer"]
