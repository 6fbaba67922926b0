"""Dataclass configs for every stage, with presets per family.

One module per stage (`collect`, `world_model`, `meta_dt`, `evaluate`, ...);
each config is a dataclass with a docstring per field and a
``for_family(family, preset)`` constructor. Presets:

- ``paper``: the published sizes (for GPU users);
- ``cpu``: a reduced budget that finishes on a 2-core CPU in minutes;
- ``smoke``: seconds, for tests.

A hyperparameter lives in exactly one config field, never as a literal in a
training loop.
"""
from metadt.config.base import PRESETS, Config, Preset, check_preset

__all__ = ["PRESETS", "Config", "Preset", "check_preset"]
