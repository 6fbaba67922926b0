"""Shared behaviour of all config dataclasses: dict round trip and overrides."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from typing import Any, ClassVar, Literal, Mapping, TypeVar

Preset = Literal["paper", "cpu", "smoke"]
PRESETS: tuple[str, ...] = ("paper", "cpu", "smoke")

T = TypeVar("T", bound="Config")


MAX_SEED = 2**64 - 1
"""Seeds are 64-bit (torch and the store take at most this): a larger seed is refused,
never silently reduced."""


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2**64); a clear ``ValueError`` otherwise (bools refused)."""
    import operator

    try:
        if isinstance(seed, bool):
            raise TypeError
        value = operator.index(seed)  # int and NumPy integers; not floats or strings
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {seed!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**64 - 1], got {value}")
    return value


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return preset


class Config:
    """Mixin for config dataclasses (subclasses must be `@dataclass`)."""

    RENAMED: ClassVar[Mapping[str, str]] = {}
    """Renamed fields: old name -> name now. The old name is still read (from a JSON dict
    such as an older run's config.json, or a ``--set``) with a ``DeprecationWarning``; both
    names with different values is a ``ValueError``. See docs/train.md, "Names"."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def current_names(cls, data: Mapping[str, Any], where: str = "a config dict",
                      stacklevel: int = 2) -> dict[str, Any]:
        """``data`` (field name -> value) with every old name of :attr:`RENAMED` replaced by
        the name now (a ``DeprecationWarning`` naming ``where``); both names with different
        values is a ``ValueError``, with equal values one entry."""
        out = dict(data)
        for old, new in cls.RENAMED.items():
            if old not in out:
                continue
            value = out.pop(old)
            if new in out and out[new] != value:
                raise ValueError(f"{cls.__name__}: {old!r} is the deprecated name of {new!r}, and "
                                 f"{where} gives both with different values ({old}={value!r}, "
                                 f"{new}={out[new]!r}): give only {new!r}")
            warnings.warn(f"{cls.__name__} field {old!r} is deprecated: use {new!r} (in {where})",
                          DeprecationWarning, stacklevel=stacklevel + 1)
            out[new] = value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """The config of a JSON dict; a clear ``ValueError`` for unknown fields and values of
        the wrong type (a config read from a file is checked, not trusted). A field's old
        name (:attr:`RENAMED`) is read as its name now, with a ``DeprecationWarning``."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        data = cls.current_names(data)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(map(str, unknown))}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            hint = hints.get(name)
            if isinstance(value, list) and typing.get_origin(hint) is tuple:
                value = tuple(value)
            if hint is not None and not _fits(value, hint):
                raise ValueError(f"{cls.__name__}: field {name!r} has a value of the wrong type "
                                 f"({value!r:.80}; expected {_hint_name(hint)})")
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a nested config given as a non-object, ...
            raise ValueError(f"{cls.__name__}: {exc}") from None

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_overrides(self: T, overrides: list[str] | None) -> T:
        """Apply ``field=value`` strings (from ``--set`` on the command line).

        Values are parsed with the field's type: ints, floats, bools
        (true/false/1/0), strings, and comma-separated tuples. A later override of a field
        replaces an earlier one; a field's old name (:attr:`RENAMED`) sets the field, with a
        ``DeprecationWarning``, and overrides giving it different values under both names
        are a ``ValueError``.
        """
        if not overrides:
            return self
        hints = typing.get_type_hints(type(self))
        changes: dict[str, Any] = {}
        spelled: dict[str, dict[str, Any]] = {}  # field -> {name given: its last value}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form field=value")
            name, raw = item.split("=", 1)
            name = given = name.strip().replace("-", "_")
            if name in self.RENAMED:
                name = self.RENAMED[name]
                warnings.warn(f"{type(self).__name__} field {given!r} is deprecated: use "
                              f"{name!r} (in --set {item})", DeprecationWarning, stacklevel=2)
            if name not in hints:
                fields = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
                raise ValueError(f"{type(self).__name__} has no field {name!r}"
                                 f"{did_you_mean(name, fields)}; fields: {', '.join(fields)}")
            changes[name] = _parse(raw.strip(), hints[name], name)
            spelled.setdefault(name, {})[given] = changes[name]
        for name, values in spelled.items():
            if len(values) > 1 and len({repr(v) for v in values.values()}) > 1:
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise ValueError(f"{type(self).__name__}: overrides give the field {name!r} different "
                                 f"values under its name and its deprecated name ({shown}): "
                                 f"give only {name!r}")
        return self.replace(**changes)


LOGGERS = {"tensorboard": ("tensorboard", 'pip install "metadt[tensorboard]"'),
           "wandb": ("wandb", "pip install wandb")}
"""Optional metric sinks (config field ``loggers``) and the module each needs."""

LOGGERS_DOC = ("""Extra metric sinks, comma-separated (JSON lines and CSV are always written):
    "tensorboard" (event files in OUT/tb; pip install "metadt[tensorboard]"), "wandb"
    (Weights & Biases, project $WANDB_PROJECT or "metadt"). A sink asked for but not
    installed is an error before training starts.""")


def check_loggers(value: str) -> tuple[str, ...]:
    """The sink names of a ``loggers`` field; ``ValueError`` for an unknown one or one
    whose package is not installed (found without importing it)."""
    import importlib.util

    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for n in names:
        if n not in LOGGERS:
            raise ValueError(f"loggers: unknown sink {n!r}{did_you_mean(n, LOGGERS)}; "
                             f"choose from {', '.join(LOGGERS)}")
        module, hint = LOGGERS[n]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"loggers: {n} asked for but {module!r} is not installed ({hint})")
    return names


def did_you_mean(name: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``name`` (difflib), or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON-decoded ``value`` has the type ``hint`` names (ints for floats ok)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args))
    if origin in (dict, list):
        return isinstance(value, origin)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True


def _parse(raw: str, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if raw.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(raw, inner[0], name)
    if origin is tuple:
        elem = args[0] if args else str
        return tuple(_parse(x.strip(), elem, name) for x in raw.split(",") if x.strip())
    if origin is Literal:
        if raw not in args:
            raise ValueError(f"{name}: {raw!r} is not one of {', '.join(map(str, args))}")
        return raw
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"{name}: {raw!r} is not a finite number")
            return value
    except ValueError as exc:
        if "finite" in str(exc):
            raise
        raise ValueError(f"{name}: cannot parse {raw!r} as {hint.__name__}") from None
    return raw
