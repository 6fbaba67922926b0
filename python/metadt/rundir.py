"""The one run-directory type: "is this directory the same run, and is it finished".

Every stage that writes a directory it may later resume (``metadt collect``, both
trainers, ``metadt evaluate``, ``metadt run``) describes it with a :class:`RunDir`:

- **identity**: a JSON object stored in one file of the directory (the config,
  plus what else makes the run what it is: a seed, the tasks); two identities are
  the same run when they agree on every field except the *runtime* fields (how a
  run executes, not what it computes: device, threads, logging cadence), which a
  resumed run may change. Nested objects compare field by field (dotted names,
  e.g. ``config.sac.lr``); ``only`` restricts the comparison to some fields
  (the pipeline fixes a few and lets seeds and methods grow), ``defaults`` gives
  the value of a field an older metadt did not write (else it reads as None),
  ``renamed`` the name now of a field an older metadt wrote under another name
  (``seq_len`` -> ``window_len``: the same run, resumed and rewritten under the new name);
- **completion marker**: the file(s) whose presence means the run is finished
  (a final model, a dataset card); each stage writes its marker last and
  atomically;
- **atomic writes**: the identity is written with :func:`metadt.fileio.atomic_write_json`
  (a crash keeps the previous file); the stages write everything else through
  :mod:`metadt.fileio` / :mod:`metadt.tensorfile`.

A directory holding another run is refused with :class:`RunDirMismatch` (a
``FileExistsError`` and a ``ValueError``) naming each differing field with both values.
This module is the bottom layer: it imports only :mod:`metadt.fileio`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from metadt.fileio import atomic_write_json, read_json

State = Literal["new", "resume", "finished"]
"""What :meth:`RunDir.start` found: nothing (now started), an unfinished run of the same
identity, or a finished one."""


class RunDirMismatch(FileExistsError, ValueError):
    """A directory holds another run (or something that is not a run of this kind)."""


def json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj))


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested JSON objects by dotted name (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``);
    lists and scalars are leaves, an empty object is a leaf ``{}``."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj} if prefix else {"": obj}


def _under(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class RunDir:
    """A run directory: where its identity is stored, which file(s) mark it finished,
    which identity fields are not compared. See the module docstring."""

    path: Path
    what: str
    """What the run is, for messages ("training run", "collection", ...)."""
    identity_file: str = "config.json"
    """Where the identity is stored, relative to :attr:`path`."""
    markers: tuple[str, ...] = ()
    """Completion markers relative to :attr:`path` (any present: finished)."""
    runtime: frozenset[str] = frozenset()
    """Identity fields (dotted names) a run may change and stay the same run."""
    only: tuple[str, ...] | None = None
    """When given, only these identity fields (and what is under them) are compared."""
    defaults: Mapping[str, Any] | None = None
    """Identity of an older metadt's field that is absent from the stored identity."""
    renamed: Mapping[str, str] | None = None
    """Fields an older metadt stored under another name: old dotted name -> name now (a
    stored identity is compared as if written with the names now)."""
    hint: str = "use another --out or --overwrite"
    """What to do about a refused directory (ends every refusal)."""
    exclusive: bool = False
    """Refuse to start in a non-empty directory that holds no identity (a directory of
    something else)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------- reading
    @property
    def identity_path(self) -> Path:
        return self.path / self.identity_file

    def stored(self) -> dict[str, Any] | None:
        """The stored identity (None when there is none); ``RunDirMismatch`` if the file is
        not a JSON object."""
        if not self.identity_path.is_file():
            return None
        try:
            obj = read_json(self.identity_path)
        except ValueError as exc:
            raise RunDirMismatch(f"{exc}; {self.hint}") from None
        if not isinstance(obj, dict):
            raise RunDirMismatch(f"{self.identity_path}: not a config of {_a(self.what)} (a "
                                 f"JSON object expected); {self.hint}")
        return obj

    def marker(self) -> Path | None:
        """The completion marker present (the first of :attr:`markers`), else None."""
        for name in self.markers:
            if (self.path / name).is_file():
                return self.path / name
        return None

    @property
    def finished(self) -> bool:
        return self.marker() is not None

    # ---------------------------------------------------------- comparing
    def differences(self, mine: Mapping[str, Any], stored: Mapping[str, Any]
                    ) -> list[tuple[str, Any, Any]]:
        """``(field, mine, stored)`` of every compared field that differs (dotted names)."""
        a, b = flatten(json_normal(mine)), self._current_names(flatten(json_normal(stored)))
        dflt = flatten(json_normal(self.defaults)) if self.defaults else {}
        out = []
        for key in sorted(set(a) | set(b)):
            if self.only is not None and not _under(key, self.only):
                continue
            if _under(key, self.runtime):
                continue
            theirs = b.get(key, dflt.get(key))
            if a.get(key) != theirs:
                out.append((key, a.get(key), theirs))
        return out

    def _current_names(self, flat: dict[str, Any]) -> dict[str, Any]:
        """A flattened stored identity with the old names of :attr:`renamed` replaced by the
        names now (a name present under both keeps the value of the name now)."""
        if not self.renamed:
            return flat
        out: dict[str, Any] = {}
        for key, value in flat.items():
            for old, new in self.renamed.items():
                if key == old or key.startswith(old + "."):
                    now = new + key[len(old):]
                    if now not in flat:  # (the name now stored too wins)
                        out[now] = value
                    break
            else:
                out[key] = value
        return out

    def check(self, mine: Mapping[str, Any], stored: Mapping[str, Any] | None = None,
              source: Path | None = None) -> dict[str, Any] | None:
        """Refuse (``RunDirMismatch``) when the stored identity (``stored`` read from
        ``source``, default: the identity file) is another run's; returns it (None when
        there is none)."""
        if stored is None:
            stored = self.stored()
            source = self.identity_path
        if stored is None:
            return None
        diff = self.differences(mine, stored)
        if diff:
            state = "" if not self.markers else ("finished " if self.finished else "unfinished ")
            where = (source or self.identity_path).name
            shown = ", ".join(f"different {k.removeprefix('config.') or 'identity'} "
                              f"({_short(m)} here, {_short(s)} in {where})"
                              for k, m, s in diff[:6])
            more = f" and {len(diff) - 6} more field(s)" if len(diff) > 6 else ""
            raise RunDirMismatch(f"{self.path} holds {_a(state + self.what)} with a different "
                                 f"config: {shown}{more}; {self.hint}")
        return dict(stored)

    def matches(self, mine: Mapping[str, Any]) -> bool:
        """Whether the stored identity exists and is ``mine``'s (never raises for a
        different or unreadable one)."""
        try:
            stored = self.stored()
        except RunDirMismatch:
            return False
        return stored is not None and not self.differences(mine, stored)

    # ------------------------------------------------------------ writing
    def write_identity(self, mine: Mapping[str, Any]) -> Path:
        """Store ``mine`` as the identity (atomically)."""
        return atomic_write_json(self.identity_path, dict(mine))

    def start(self, mine: Mapping[str, Any], *, overwrite: bool = False) -> State:
        """Open the directory for the run ``mine``: ``"new"`` (created, identity written),
        ``"resume"`` (an unfinished run of the same identity) or ``"finished"`` (a finished
        one). With ``overwrite`` an existing directory is removed first. Refuses another
        run's directory, a finished run without an identity, and (``exclusive``) a
        non-empty directory holding no run."""
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        stored = self.check(mine)
        if stored is None:
            if self.finished:
                raise RunDirMismatch(f"{self.path} holds a finished {self.what} without its "
                                     f"{self.identity_file}; {self.hint}")
            if self.exclusive and self.path.exists():
                own = Path(self.identity_file).parts[0]
                if any(p.name != own for p in self.path.iterdir()):
                    raise RunDirMismatch(f"{self.path} exists and is not {_a(self.what)}; "
                                         f"{self.hint}")
        if stored is not None and self.finished:
            return "finished"  # left as it is
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_identity(mine)  # same identity: refreshes the runtime fields
        return "new" if stored is None else "resume"


__all__ = ["RunDir", "RunDirMismatch", "State", "flatten", "json_normal"]
