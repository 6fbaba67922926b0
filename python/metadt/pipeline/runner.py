"""`metadt run`: the whole pipeline, resumable stage by stage.

Stages, in order, each skipped when its output is complete and each itself
resumable (an interrupted stage continues from its last checkpoint):

1. **collect** the dataset if ``data`` holds none (`metadt.collect.collector.collect`;
   complete = ``card.json``; shared by every seed);
2. per seed, **world model** (`metadt.train.world_model.train_world_model`;
   complete = ``seed-S/world-model/model.pt``), only if a method needs one;
3. per seed and method, **train** (`metadt.train.meta_dt.train_meta_dt`;
   complete = ``seed-S/<method>/model.pt``), then **evaluate**
   (`metadt.evaluate.evaluator.evaluate_run`; complete = every setting of the
   method in ``seed-S/<method>/eval.json`` with the same evaluation config);
4. **report** (`metadt.report.build.build_report`), rebuilt after every seed
   from whatever is evaluated so far, into ``OUT/report``.

Under ``torchrun`` (docs/distributed.md) every rank runs the pipeline: collection,
world-model and Meta-DT training are split across the ranks by those stages
themselves; rank 0 alone writes ``pipeline.json`` and ``stages.jsonl``, prints,
evaluates and builds the report, and the other ranks wait for it (so a stage
never starts before the previous one is complete on disk).

Layout of OUT::

    pipeline.json          the pipeline config (family / preset / data are fixed
                           for an OUT; seeds and methods may be added later)
    stages.jsonl           one line per stage run: stage, seed, method, seconds
    seed-S/world-model/    a `metadt train-world-model` output
    seed-S/<method>/       a `metadt train` run + eval.json
    report/                results.json, results.md, *.png
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from metadt import distributed as dist
from metadt.config.pipeline import PipelineConfig
from metadt.fileio import append_jsonl, atomic_write_json, read_json

PIPELINE_FILE = "pipeline.json"
STAGES_FILE = "stages.jsonl"
REPORT_DIR = "report"
#: Fields of the pipeline config that must not change for an existing OUT.
FIXED_FIELDS = ("family", "preset", "data", "collect_seed", "collect_overrides",
                "world_model_overrides", "train_overrides", "evaluate_overrides")

Progress = Callable[[str], None]


class Pipeline:
    """See the module docstring."""

    def __init__(self, cfg: PipelineConfig, out: str | Path, *, progress: Progress | None = None,
                 bars: bool = False) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out)
        self.data = Path(cfg.data_dir())
        self.ctx = dist.init()  # world size 1 unless launched by torchrun
        self.main = self.ctx.is_main()
        self.say = (progress if self.main else None) or (lambda msg: None)
        self.bars = bars and self.main

    # ---------------------------------------------------------------- configs
    def collect_config(self):
        from metadt.config.collect import CollectConfig

        return CollectConfig.for_family(self.cfg.family, self.cfg.preset).with_overrides(
            list(self.cfg.collect_overrides)).validate()

    def world_model_config(self, seed: int):
        from metadt.config.world_model import WorldModelConfig

        cfg = WorldModelConfig.for_family(self.cfg.family, self.cfg.preset)
        return cfg.with_overrides(list(self.cfg.world_model_overrides)).replace(seed=seed).validate()

    def train_config(self, method: str, seed: int):
        from metadt.config.meta_dt import MetaDTConfig

        cfg = MetaDTConfig.for_family(self.cfg.family, self.cfg.preset, method)
        return cfg.with_overrides(list(self.cfg.train_overrides)).replace(seed=seed).validate()

    def evaluate_config(self):
        from metadt.config.evaluate import EvaluateConfig

        return EvaluateConfig.for_family(self.cfg.family, self.cfg.preset).with_overrides(
            list(self.cfg.evaluate_overrides)).validate()

    # ------------------------------------------------------------------ paths
    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed-{seed}"

    def world_model_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "world-model"

    def run_dir(self, method: str, seed: int) -> Path:
        return self.seed_dir(seed) / method

    # ------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Run (or resume) every stage; returns the report dict."""
        from metadt.evaluate.evaluator import torch_threads

        with torch_threads(self.cfg.torch_threads):
            return self._run()

    def _run(self) -> dict[str, Any]:
        t_all = time.perf_counter()
        dist.main_first(self._check_out, self.ctx)
        self.stage_collect()
        ev_cfg = self.evaluate_config()
        report: dict[str, Any] = {}
        for seed in self.cfg.seed_list:
            needs_wm = any(self.train_config(m, seed).needs_world_model for m in self.cfg.methods)
            if needs_wm:
                self.stage_world_model(seed)
            for method in self.cfg.methods:
                self.stage_train(method, seed, needs_wm)
                self.stage_evaluate(method, seed, ev_cfg)
            report = self.stage_report()
        self.say(f"pipeline finished in {time.perf_counter() - t_all:.0f}s; "
                 f"report: {self.out / REPORT_DIR / 'results.md'}")
        return report

    def _check_out(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / PIPELINE_FILE
        mine = json.loads(json.dumps(self.cfg.to_dict()))
        seeds, methods = list(self.cfg.seed_list), list(self.cfg.methods)
        if path.is_file():
            old = read_json(path)
            prev = old.get("config", {})
            diff = [k for k in FIXED_FIELDS if prev.get(k) != mine.get(k)]
            if diff:
                raise ValueError(
                    f"{self.out} holds a pipeline with a different {', '.join(diff)} "
                    f"({', '.join(f'{k}={prev.get(k)!r}' for k in diff)}); use another --out")
            seeds = sorted(set(old.get("all_seeds", [])) | set(seeds))
            methods = list(dict.fromkeys(list(old.get("all_methods", [])) + methods))
            self.say(f"resuming the pipeline in {self.out}")
        atomic_write_json(path, {"format": "metadt-pipeline", "version": 1, "config": mine,
                                 "all_seeds": seeds, "all_methods": methods})

    def _log(self, stage: str, t0: float, **fields: Any) -> None:
        if not self.main:
            return
        append_jsonl(self.out / STAGES_FILE, {"stage": stage, **fields,
                                              "seconds": round(time.perf_counter() - t0, 2),
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())})

    # ----------------------------------------------------------------- stages
    def stage_collect(self) -> None:
        if (self.data / "card.json").is_file():
            self.say(f"[collect] {self.data}: dataset present, skipped")
            self._warn_data_config()
            return
        from metadt.collect.collector import collect

        self.say(f"[collect] {self.cfg.family} ({self.cfg.preset}) into {self.data}")
        t0 = time.perf_counter()
        last = {"phase": None}

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("phase") != last["phase"]:
                last["phase"] = ev.get("phase")
                self.say(f"[collect] phase {ev.get('phase')}")

        collect(self.collect_config(), self.data, seed=self.cfg.collect_seed, progress=on_event)
        self._log("collect", t0, path=str(self.data))

    def _warn_data_config(self) -> None:
        """Say so when an existing dataset was collected with another config than this preset's."""
        from metadt.data.dataset import Dataset

        try:
            made = Dataset.open(self.data).card.collection.get("config")
        except (ValueError, FileNotFoundError):
            return
        want = json.loads(json.dumps(self.collect_config().to_dict()))
        if isinstance(made, dict) and made != want:
            diff = sorted(k for k in set(made) | set(want) if made.get(k) != want.get(k))
            self.say(f"[collect] note: {self.data} was collected with a different config than "
                     f"the {self.cfg.preset} preset's (fields {', '.join(diff)}); using it as is "
                     f"(pass --data DIR for a fresh collection)")

    def stage_world_model(self, seed: int) -> None:
        out = self.world_model_dir(seed)
        if (out / "model.pt").is_file():
            self.say(f"[world model] seed {seed}: done, skipped")
            return
        from metadt.train.world_model import train_world_model

        self.say(f"[world model] seed {seed} -> {out}")
        t0 = time.perf_counter()
        train_world_model(self.data, self.world_model_config(seed), out, progress=self.bars)
        self._log("world-model", t0, seed=seed)

    def stage_train(self, method: str, seed: int, have_wm: bool) -> None:
        out = self.run_dir(method, seed)
        if (out / "model.pt").is_file():
            self.say(f"[train] {method} seed {seed}: done, skipped")
            return
        from metadt.train.meta_dt import train_meta_dt

        cfg = self.train_config(method, seed)
        wm = self.world_model_dir(seed) if (cfg.needs_world_model and have_wm) else None
        self.say(f"[train] {method} seed {seed} -> {out}")
        t0 = time.perf_counter()
        train_meta_dt(self.data, cfg, out, world_model=wm, progress=self.bars)
        self._log("train", t0, seed=seed, method=method)

    def stage_evaluate(self, method: str, seed: int, ev_cfg: Any) -> None:
        """Rank 0 evaluates; the others wait (its error is raised on every rank)."""
        dist.main_first(lambda: self._evaluate(method, seed, ev_cfg), self.ctx)

    def _evaluate(self, method: str, seed: int, ev_cfg: Any) -> None:
        from metadt.evaluate.evaluator import EVAL_FILE, evaluate_run, is_complete

        run = self.run_dir(method, seed)
        if is_complete(run / EVAL_FILE, ev_cfg, method):
            self.say(f"[evaluate] {method} seed {seed}: done, skipped")
            return
        self.say(f"[evaluate] {method} seed {seed}")
        t0 = time.perf_counter()
        evaluate_run(run, ev_cfg, progress=lambda m: self.say(f"[evaluate] {m}"))
        self._log("evaluate", t0, seed=seed, method=method)

    def stage_report(self) -> dict[str, Any]:
        """Rank 0 builds the report; every rank returns it."""
        return dist.main_first(self._report, self.ctx)

    def _report(self) -> dict[str, Any]:
        from metadt.report.build import build_report

        t0 = time.perf_counter()
        rep = build_report([self.out], self.out / REPORT_DIR, names=[self.out.name],
                           title=f"metadt: {self.cfg.family} ({self.cfg.preset} preset)",
                           reps=self.cfg.report_reps)
        self._log("report", t0)
        return rep


def run_pipeline(cfg: PipelineConfig, out: str | Path, *, progress: Progress | None = None,
                 bars: bool = False) -> dict[str, Any]:
    """Run or resume the pipeline of `cfg` into `out`; returns the report dict."""
    return Pipeline(cfg, out, progress=progress, bars=bars).run()
