"""Loading finished runs: :func:`load_run` (Meta-DT / baselines) and :func:`load_world_model`.

A world model file (``WM/model.safetensors``) and a run's final model
(``RUN/model.safetensors``) are self-describing: they hold the config, the
dims, the family and the dataset they were trained on. ``RUN/model.safetensors``
also embeds its world model, so a run keeps working if the world-model
directory moves. Both are tensor files (:mod:`metadt.tensorfile`: safetensors
weights, JSON for the rest, SHA-256 checked): loading never unpickles.

Run directories of older metadt versions hold ``model.pt`` (``torch.save``);
it is still read, with ``torch.load(weights_only=True)``, which builds only
tensors and plain containers: a file holding anything else is refused.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metadt import tensorfile
from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.models import MetaDT, WorldModel
from metadt.runtime import resolve_device

WM_FORMAT = "metadt-world-model"
RUN_FORMAT = "metadt-run"
MODEL_FILE = "model.safetensors"
"""The final model of a finished run or world-model directory."""
LEGACY_MODEL_FILE = "model.pt"
"""The final model written by older metadt versions (``torch.save``; read with
``weights_only=True``)."""


def model_file(run_dir: str | os.PathLike) -> Path | None:
    """The final model file of ``run_dir`` (``model.safetensors``, else an old
    ``model.pt``), or None when the run is not finished."""
    run_dir = Path(run_dir)
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def save_model(run_dir: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a final model payload (``world_model_payload`` or a run's) atomically as
    ``run_dir/model.safetensors``; an old ``model.pt`` beside it is removed."""
    path = tensorfile.save(Path(run_dir) / MODEL_FILE, payload, str(payload["format"]))
    legacy = Path(run_dir) / LEGACY_MODEL_FILE
    if legacy.is_file():
        legacy.unlink()
    return path


def read_model(file: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """The payload of a final model file of format ``fmt`` (checked), never unpickled."""
    file = Path(file)
    if file.name != LEGACY_MODEL_FILE or not tensorfile.looks_like_pickle(file):
        payload = tensorfile.load(file, fmt, hint="retrain it (or restore an intact copy)")
    else:
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
            raise ValueError(
                f"{file}: refused: this old-format (pickle) model file holds objects other than "
                f"tensors and plain data, and metadt never unpickles them since that can run "
                f"code ({first}). If you trained this run yourself with an older metadt, "
                f"retrain it with this version") from None
        except Exception as exc:  # truncated zip, bad header, ...
            raise ValueError(f"{file}: not a readable model file ({type(exc).__name__}: "
                             f"{exc}); retrain it (or restore an intact copy)") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{file}: not a {fmt} file")
    return payload


def _payload_error(where: str, exc: BaseException) -> ValueError:
    return ValueError(f"{where}: malformed model file ({type(exc).__name__}: {exc})")


def world_model_payload(wm: WorldModel, family: str, dataset: str | None) -> dict[str, Any]:
    return {"format": WM_FORMAT, "config": wm.cfg.to_dict(), "obs_dim": wm.obs_dim,
            "act_dim": wm.act_dim, "family": family, "dataset": dataset,
            "state_dict": {k: v.detach().cpu() for k, v in wm.state_dict().items()}}


def world_model_from_payload(payload: dict[str, Any], where: str = "world model",
                             device: str | torch.device = "cpu") -> WorldModel:
    if not isinstance(payload, dict) or payload.get("format") != WM_FORMAT:
        raise ValueError(f"{where}: not a metadt world model (make one with "
                         "`metadt train-world-model`)")
    try:
        cfg = WorldModelConfig.from_dict(payload["config"]).validate()
        wm = WorldModel(_dim(payload["obs_dim"]), _dim(payload["act_dim"]), cfg,
                        family=payload.get("family", cfg.family), dataset=payload.get("dataset"))
        wm.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise _payload_error(where, exc) from None
    return wm.to(resolve_device(device)).eval()


def load_world_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> WorldModel:
    """A trained world model (eval mode) from its directory or its model file.

    The returned module also carries ``.family`` and ``.dataset`` (what it was
    trained on).
    """
    path = Path(path)
    file = (model_file(path) or path / MODEL_FILE) if path.is_dir() else path
    if not file.is_file():
        hint = " (training not finished?)" if _has_checkpoint(path) else ""
        raise FileNotFoundError(f"{path}: no world model found at {file}{hint}")
    return world_model_from_payload(read_model(file, WM_FORMAT), str(file), device)


def _has_checkpoint(run_dir: Path) -> bool:
    from metadt.train.checkpoint import CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE

    return any((run_dir / n).is_file() for n in (CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE))


def _dim(x: Any) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 < x <= 1 << 20:
        raise ValueError(f"dimension {x!r} out of range")
    return x


@dataclass
class LoadedRun:
    """A finished Meta-DT (or baseline) run, ready to evaluate."""

    config: MetaDTConfig
    model: MetaDT
    world_model: WorldModel | None
    dataset_path: str
    quality: str
    family: str
    return_scale: float
    device: torch.device
    run_dir: Path
    obs_dim: int
    act_dim: int
    context_len: int | None


def load_run(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> LoadedRun:
    """Load ``RUN/model.safetensors`` (the final model; eval mode) with its world model."""
    run_dir = Path(run_dir)
    file = model_file(run_dir)
    if file is None:
        hint = (" (training not finished: run `metadt train` again to resume)"
                if _has_checkpoint(run_dir) else "")
        raise FileNotFoundError(f"{run_dir}: no finished run (no {MODEL_FILE}){hint}")
    payload = read_model(file, RUN_FORMAT)
    try:
        cfg = MetaDTConfig.from_dict(payload["config"]).validate()
        dev = resolve_device(device if device is not None else cfg.device)
        model = MetaDT(_dim(payload["obs_dim"]), _dim(payload["act_dim"]), cfg)
        model.load_state_dict(payload["state_dict"])
        if not isinstance(payload["dataset"], str):
            raise TypeError("dataset is not a path")
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise _payload_error(str(file), exc) from None
    model.to(dev).eval()
    wm = None
    if payload.get("world_model") is not None:
        wm = world_model_from_payload(payload["world_model"], f"{file} (world model)", dev)
    return LoadedRun(config=cfg, model=model, world_model=wm, dataset_path=payload["dataset"],
                     quality=cfg.quality, family=cfg.family,
                     return_scale=float(cfg.return_scale or 1.0), device=dev, run_dir=run_dir,
                     obs_dim=int(payload["obs_dim"]), act_dim=int(payload["act_dim"]),
                     context_len=None if wm is None else wm.context_len)
