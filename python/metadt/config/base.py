"""Shared behaviour of all config dataclasses: dict round trip and overrides."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal, TypeVar

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            hint = hints.get(name)
            if isinstance(value, list) and typing.get_origin(hint) is tuple:
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_overrides(self: T, overrides: list[str] | None) -> T:
        """Apply ``field=value`` strings (from ``--set`` on the command line).

        Values are parsed with the field's type: ints, floats, bools
        (true/false/1/0), strings, and comma-separated tuples.
        """
        if not overrides:
            return self
        hints = typing.get_type_hints(type(self))
        changes: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form field=value")
            name, raw = item.split("=", 1)
            name = name.strip().replace("-", "_")
            if name not in hints:
                valid = ", ".join(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
                raise ValueError(f"{type(self).__name__} has no field {name!r}; fields: {valid}")
            changes[name] = _parse(raw.strip(), hints[name], name)
        return self.replace(**changes)


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
