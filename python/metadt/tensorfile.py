"""Pickle-free, checksummed files of tensors and plain data (safetensors + JSON).

Every model, training checkpoint and collection state metadt writes is a
*tensor file*: a standard safetensors file whose tensors are the tensor leaves
of a nested structure (dicts, lists, tuples, numbers, strings, None, torch
tensors, NumPy arrays of numbers) and whose header metadata holds:

- ``metadt.kind``: what the file is (e.g. ``metadt-run``), checked on load;
- ``metadt.version``: the layout version (``1``);
- ``metadt.tree``: the structure as JSON, each tensor leaf replaced by
  ``{"$t": name}`` (NumPy arrays: ``{"$np": name, "dtype": ..., "shape": ...}``,
  stored as raw bytes), tuples as ``{"$tuple": [...]}``, dicts whose keys are
  not plain strings as ``{"$items": [[key, value], ...]}`` and non-finite
  floats as ``{"$float": "nan"}``;
- ``metadt.sha256``: the SHA-256 of the header without this field (canonical
  JSON: sorted keys, no spaces) followed by every byte after the header, so
  a changed byte anywhere in the file is detected before anything is used.

Loading parses JSON and raw little-endian numbers only: a file cannot run
code, whoever made it. Tensor names are the ``/``-joined paths of the leaves
(``state_dict/<key>``), so any safetensors reader can read the weights too.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from metadt.fileio import atomic_write_bytes, read_file_bytes

KIND, VERSION, TREE, DIGEST = "metadt.kind", "metadt.version", "metadt.tree", "metadt.sha256"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 << 20
_NP_KINDS = frozenset("biufc")


class TensorFileError(ValueError):
    """A tensor file is missing, damaged, of another kind or holds something unexpected."""


# --------------------------------------------------------------------------- encoding


def _encode(obj: Any, path: str, tensors: dict[str, Any]) -> Any:
    import torch

    def name_for(p: str) -> str:
        name, k = p or "tensor", 1
        while name in tensors:
            k += 1
            name = f"{p}#{k}"
        return name

    def sub(key: Any) -> str:
        return f"{path}/{key}" if path else str(key)

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else {"$float": repr(x)}
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse or obj.is_quantized:
            raise TypeError(f"{path}: sparse or quantized tensors are not supported")
        name = name_for(path)
        # an independent contiguous CPU copy (safetensors refuses shared storage)
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
        return {"$t": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NP_KINDS:
            raise TypeError(f"{path}: NumPy arrays of dtype {obj.dtype} are not supported")
        name = name_for(path)
        raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
        tensors[name] = torch.from_numpy(raw.copy())
        return {"$np": name, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, sub(i), tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, sub(i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, sub(k), tensors) for k, v in obj.items()}
        return {"$items": [[_encode(k, sub(f"key{i}"), tensors), _encode(v, sub(k), tensors)]
                           for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"{path or 'value'}: cannot store a {type(obj).__name__} in a tensor file "
                    "(only tensors, NumPy arrays, numbers, strings, None, lists, tuples, dicts)")


def _decode(node: Any, tensors: dict[str, Any]) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        raise ValueError(f"unexpected JSON value {type(node).__name__}")
    if "$t" in node:
        return tensors[_str(node["$t"])]
    if "$np" in node:
        dtype = np.dtype(_str(node["dtype"]))
        if dtype.kind not in _NP_KINDS:
            raise ValueError(f"NumPy dtype {dtype} is not allowed")
        shape = tuple(int(s) for s in node["shape"])
        raw = tensors[_str(node["$np"])].numpy().tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if "$tuple" in node:
        return tuple(_decode(v, tensors) for v in node["$tuple"])
    if "$items" in node:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in node["$items"]}
    if "$float" in node:
        x = float(_str(node["$float"]))
        if math.isfinite(x):
            raise ValueError("a $float entry must be nan or ±inf")
        return x
    if any(k.startswith("$") for k in node):
        raise ValueError(f"unknown entry {sorted(node)}")
    return {k: _decode(v, tensors) for k, v in node.items()}


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"expected a string, got {type(x).__name__}")
    return x


def _hashable(x: Any) -> Any:
    if isinstance(x, (int, float, str, bool, type(None), tuple)):
        return x
    raise ValueError(f"a {type(x).__name__} cannot be a dict key")


# --------------------------------------------------------------------------- bytes


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The parsed header and the data bytes of a safetensors buffer (checked bounds)."""
    if len(data) < 8:
        raise ValueError(f"truncated: {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise ValueError(f"truncated or not a safetensors file (header claims {n} bytes, "
                         f"file has {len(data)})")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, data[8 + n:]


def _digest(header: dict[str, Any], body: bytes) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    h.update(body)
    return h.hexdigest()


def dumps(obj: Any, kind: str) -> bytes:
    """``obj`` (plain data and tensors) as the bytes of a tensor file of ``kind``."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    tree = _encode(obj, "", tensors)
    meta = {KIND: kind, VERSION: FORMAT_VERSION, TREE: json.dumps(tree, allow_nan=False)}
    header, body = _split(save(tensors, metadata=meta))
    data = save(tensors, metadata={**meta, DIGEST: _digest(header, body)})
    if _split(data)[1] != body:  # pragma: no cover - a safetensors invariant
        raise RuntimeError("safetensors laid out the same tensors differently twice")
    return data


def loads(data: bytes, kind: str | None, where: str = "file", hint: str = "") -> Any:
    """The structure stored by :func:`dumps`; ``TensorFileError`` (naming ``where``,
    ending with ``hint``) for anything damaged, of another kind or unexpected."""
    from safetensors.torch import load

    suffix = f"; {hint}" if hint else ""
    try:
        header, body = _split(data)
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or DIGEST not in meta:
            raise TensorFileError(f"{where}: not a metadt tensor file (no checksum in its "
                                  f"header){suffix}")
        stored = meta.pop(DIGEST)
        if not isinstance(stored, str) or not hmac.compare_digest(stored, _digest(header, body)):
            raise TensorFileError(f"{where}: checksum mismatch: the file is damaged (changed "
                                  f"or truncated since it was written){suffix}")
        if meta.get(VERSION) != FORMAT_VERSION:
            raise TensorFileError(f"{where}: tensor file version {meta.get(VERSION)!r} is not "
                                  f"supported (this metadt reads {FORMAT_VERSION}){suffix}")
        if kind is not None and meta.get(KIND) != kind:
            raise TensorFileError(f"{where}: holds a {meta.get(KIND)!r}, expected a "
                                  f"{kind!r}{suffix}")
        tensors = load(data)
        return _decode(json.loads(_str(meta.get(TREE))), tensors)
    except TensorFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, UnicodeDecodeError,
            OverflowError, MemoryError, struct.error) as exc:
        raise TensorFileError(f"{where}: damaged or not a metadt tensor file "
                              f"({type(exc).__name__}: {exc}){suffix}") from None
    except Exception as exc:  # safetensors' own error type (SafetensorError)
        if type(exc).__name__ != "SafetensorError":
            raise
        raise TensorFileError(f"{where}: damaged tensor data ({exc}){suffix}") from None


def save(path: str | os.PathLike, obj: Any, kind: str) -> Path:
    """Write ``obj`` to ``path`` as a tensor file, atomically."""
    return atomic_write_bytes(path, dumps(obj, kind))


def load(path: str | os.PathLike, kind: str | None, hint: str = "") -> Any:
    """Read a tensor file written by :func:`save` (checksum verified first)."""
    path = Path(path)
    try:
        data = read_file_bytes(path, what="tensor file")
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise TensorFileError(f"{path}: cannot read ({exc}){'; ' + hint if hint else ''}") \
            from None
    return loads(data, kind, str(path), hint)


def looks_like_pickle(path: str | os.PathLike) -> bool:
    """True for a ``torch.save`` file (a zip archive or a raw pickle): metadt's old format."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


__all__ = ["TensorFileError", "dumps", "loads", "save", "load", "looks_like_pickle"]
