"""Loading finished runs: :func:`load_run` (Meta-DT / baselines) and :func:`load_world_model`.

A world model file (``WM/model.pt``) and a run's final model (``RUN/model.pt``)
are self-describing: they hold the config, the dims, the family and the
dataset they were trained on. ``RUN/model.pt`` also embeds its world model,
so a run keeps working if the world-model directory moves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metadt.config.meta_dt import MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.models import MetaDT, WorldModel

WM_FORMAT = "metadt-world-model"
RUN_FORMAT = "metadt-run"


def resolve_device(name: str | torch.device) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def world_model_payload(wm: WorldModel, family: str, dataset: str | None) -> dict[str, Any]:
    return {"format": WM_FORMAT, "config": wm.cfg.to_dict(), "obs_dim": wm.obs_dim,
            "act_dim": wm.act_dim, "family": family, "dataset": dataset,
            "state_dict": {k: v.detach().cpu() for k, v in wm.state_dict().items()}}


def world_model_from_payload(payload: dict[str, Any], where: str = "world model",
                             device: str | torch.device = "cpu") -> WorldModel:
    if not isinstance(payload, dict) or payload.get("format") != WM_FORMAT:
        raise ValueError(f"{where}: not a metadt world model (make one with "
                         "`metadt train-world-model`)")
    cfg = WorldModelConfig.from_dict(payload["config"])
    wm = WorldModel(payload["obs_dim"], payload["act_dim"], cfg)
    wm.load_state_dict(payload["state_dict"])
    wm.family = payload.get("family", cfg.family)  # type: ignore[attr-defined]
    wm.dataset = payload.get("dataset")  # type: ignore[attr-defined]
    return wm.to(resolve_device(device)).eval()


def load_world_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> WorldModel:
    """A trained world model (eval mode) from its directory or its ``model.pt``.

    The returned module also carries ``.family`` and ``.dataset`` (what it was
    trained on).
    """
    path = Path(path)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        hint = " (training not finished?)" if (path / "checkpoint.pt").is_file() else ""
        raise FileNotFoundError(f"{path}: no world model found at {file}{hint}")
    payload = torch.load(file, map_location="cpu", weights_only=False)
    return world_model_from_payload(payload, str(file), device)


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
    """Load ``RUN/model.pt`` (the final model; eval mode) with its world model."""
    run_dir = Path(run_dir)
    file = run_dir / "model.pt"
    if not file.is_file():
        hint = (" (training not finished: run `metadt train` again to resume)"
                if (run_dir / "checkpoint.pt").is_file() else "")
        raise FileNotFoundError(f"{run_dir}: no finished run (no model.pt){hint}")
    payload = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != RUN_FORMAT:
        raise ValueError(f"{file}: not a metadt run")
    cfg = MetaDTConfig.from_dict(payload["config"])
    dev = resolve_device(device if device is not None else cfg.device)
    model = MetaDT(payload["obs_dim"], payload["act_dim"], cfg)
    model.load_state_dict(payload["state_dict"])
    model.to(dev).eval()
    wm = None
    if payload.get("world_model") is not None:
        wm = world_model_from_payload(payload["world_model"], f"{file} (world model)", dev)
    return LoadedRun(config=cfg, model=model, world_model=wm, dataset_path=payload["dataset"],
                     quality=cfg.quality, family=cfg.family,
                     return_scale=float(cfg.return_scale or 1.0), device=dev, run_dir=run_dir,
                     obs_dim=int(payload["obs_dim"]), act_dim=int(payload["act_dim"]),
                     context_len=None if wm is None else wm.context_len)
