"""Data: the trajectory store (Rust core) and its typed Python face.

``TrajectoryStore`` and ``PromptSpec`` are documented in ``docs/store.md``.
"""
from __future__ import annotations

from metadt.data import store as _store
from metadt.data.store import *  # noqa: F401,F403 - the public names are store's

__all__ = list(_store.__all__)
