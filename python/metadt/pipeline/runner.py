"""`metadt run`: the whole pipeline, resumable stage by stage.

Stages, in order, each skipped when its output is complete and each itself
resumable (an interrupted stage continues from its last checkpoint):

1. **collect** the dataset if ``data`` holds none (`metadt.collect.collector.collect`;
   complete = ``card.json``; shared by every seed);
2. per seed, **world model** (`metadt.train.world_model.train_world_model`;
   complete = ``seed-S/world-model/model.safetensors``), only if a method needs one;
3. per seed and method, **train** (`metadt.train.meta_dt.train_meta_dt`;
   complete = ``seed-S/<method>/model.safetensors``), then **evaluate**
   (`metadt.evaluate.evaluator.evaluate_run`; complete = every setting of the
   method in ``seed-S/<method>/eval.json`` with the same evaluation config);
4. **report** (`metadt.report.build.build_report`), rebuilt after every seed
   from whatever is evaluated so far, into ``OUT/report``.

With ``jobs > 1`` (``metadt run --jobs N``) stages 2-3 run in ``N`` worker
processes (spawned; each with ``torch_threads`` threads): every seed's world
model at once, every method that needs none at once, and a method that needs
its seed's world model as soon as that is written; train + evaluate of a
method is one job. Each job runs exactly the stage of the one-process run, so
the models and evaluations are the same (``tests/test_pipeline.py``). The main
process alone writes ``stages.jsonl`` (the workers return their records) and
builds the report once every job is done; a failed job lets the running ones
finish, starts nothing new and is raised.

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

from metadt.provenance import provenance
from metadt import distributed as dist
from metadt.config.pipeline import PipelineConfig
from metadt.fileio import append_jsonl, atomic_write_json
from metadt.rundir import RunDir, json_normal

PIPELINE_FILE = "pipeline.json"
STAGES_FILE = "stages.jsonl"
REPORT_DIR = "report"
#: Fields of the pipeline config that must not change for an existing OUT.
FIXED_FIELDS = ("family", "preset", "data", "collect_seed", "overrides", "collect_overrides",
                "world_model_overrides", "train_overrides", "evaluate_overrides")

Progress = Callable[[str], None]


def pipeline_dir(out: str | Path) -> RunDir:
    """OUT as a run directory: its identity is ``pipeline.json``'s config, of which only
    :data:`FIXED_FIELDS` are compared (seeds and methods may be added, how it runs may
    change); a field an older metadt did not record had its default then. Each stage
    has its own run directory (dataset, world model, runs, results files)."""
    return RunDir(Path(out), "pipeline", identity_file=PIPELINE_FILE,
                  only=tuple(f"config.{k}" for k in FIXED_FIELDS),
                  defaults={"config": json_normal(PipelineConfig().to_dict())},
                  hint="use another --out")


class Pipeline:
    """See the module docstring."""

    def __init__(self, cfg: PipelineConfig, out: str | Path, *, progress: Progress | None = None,
                 bars: bool = False, verify: bool = True,
                 records: list[dict[str, Any]] | None = None,
                 collect_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg.validate()
        #: stage records kept here instead of appended to stages.jsonl (a `--jobs` worker
        #: returns them to the main process, the one writer of the file)
        self.records = records
        self.out = Path(out)
        self.data = Path(cfg.data_dir())
        self.ctx = dist.init()  # world size 1 unless launched by torchrun
        self.main = self.ctx.is_main()
        self.say = (progress if self.main else None) or (lambda msg: None)
        self.bars = bars and self.main
        self.verify = verify
        #: receives the collector's progress events (the CLI shows them as bars)
        self.collect_progress = collect_progress if self.main else None

    # ---------------------------------------------------------------- configs
    def _configured(self, cfg: Any, stage_overrides: tuple[str, ...]) -> Any:
        """``cfg`` with the shared ``--set`` overrides it has a field for, ``--device``,
        then the stage's own overrides."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cfg)} | set(cfg.RENAMED)
        shared = [o for o in self.cfg.overrides if _override_field(o) in names]
        if self.cfg.device and "device" in names:
            shared.append(f"device={self.cfg.device}")
        return cfg.with_overrides(shared + list(stage_overrides))

    def collect_config(self):
        from metadt.config.collect import CollectConfig

        return self._configured(CollectConfig.for_family(self.cfg.family, self.cfg.preset),
                                self.cfg.collect_overrides).validate()

    def world_model_config(self, seed: int):
        from metadt.config.world_model import WorldModelConfig

        cfg = WorldModelConfig.for_family(self.cfg.family, self.cfg.preset)
        return self._configured(cfg, self.cfg.world_model_overrides).replace(seed=seed).validate()

    def train_config(self, method: str, seed: int):
        from metadt.config.meta_dt import MetaDTConfig

        cfg = MetaDTConfig.for_family(self.cfg.family, self.cfg.preset, method)
        return self._configured(cfg, self.cfg.train_overrides).replace(seed=seed).validate()

    def evaluate_config(self):
        from metadt.config.evaluate import EvaluateConfig

        return self._configured(EvaluateConfig.for_family(self.cfg.family, self.cfg.preset),
                                self.cfg.evaluate_overrides).validate()

    def check_configs(self) -> None:
        """Build and validate every stage's config (every method and seed) and check every
        shared ``--set`` field exists in some stage: a typo fails here, before any stage
        runs and before anything is written."""
        import dataclasses

        from metadt.config.base import did_you_mean
        from metadt.config.collect import CollectConfig
        from metadt.config.evaluate import EvaluateConfig
        from metadt.config.meta_dt import MetaDTConfig
        from metadt.config.world_model import WorldModelConfig

        known: set[str] = set()
        for cls in (CollectConfig, WorldModelConfig, MetaDTConfig, EvaluateConfig):
            known |= {f.name for f in dataclasses.fields(cls)} | set(cls.RENAMED)
        for item in self.cfg.overrides:
            if "=" not in item:
                raise ValueError(f"--set {item!r} is not of the form field=value")
            name = _override_field(item)
            if name not in known:
                raise ValueError(f"--set: no stage config has a field {name!r}"
                                 f"{did_you_mean(name, known)}; see `metadt collect/train/"
                                 f"train-world-model --print-config` or the --set-STAGE options")
        self.collect_config()
        self.evaluate_config()
        for seed in self.cfg.seed_list:
            self.world_model_config(seed)
            for method in self.cfg.methods:
                self.train_config(method, seed)

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
        from metadt.runtime import torch_threads

        with torch_threads(self.cfg.torch_threads):
            return self._run()

    def _run(self) -> dict[str, Any]:
        t_all = time.perf_counter()
        self.check_configs()  # every override and name, before anything is written
        dist.main_first(self._check_out, self.ctx)
        self.stage_collect()
        ev_cfg = self.evaluate_config()
        report: dict[str, Any] = {}
        jobs = self.cfg.jobs
        if jobs > 1 and self.ctx.distributed:
            self.say("[jobs] under torchrun the stages run one after the other (--jobs 1)")
            jobs = 1
        if jobs > 1:
            self._run_parallel(jobs)
            report = self.stage_report()
            self.say(f"pipeline finished in {time.perf_counter() - t_all:.0f}s; "
                     f"report: {self.out / REPORT_DIR / 'results.md'}")
            return report
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

    def _run_parallel(self, jobs: int) -> None:
        """World models and (train + evaluate) of every method and seed in ``jobs`` worker
        processes; a method that needs its seed's world model starts once that is done.
        Each job is exactly the stage of the one-process run (same configs and seeds, the
        same torch thread count), so the results are the same."""
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no inherited torch/thread-pool state
        pending: dict[cf.Future, tuple[str, int, str | None]] = {}
        waiting: dict[int, list[str]] = {}
        error: BaseException | None = None
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            def submit(kind: str, seed: int, method: str | None = None,
                       have_wm: bool = False) -> None:
                fut = pool.submit(_stage_job, self.cfg, str(self.out), kind, seed, method,
                                  have_wm)
                pending[fut] = (kind, seed, method)
                self.say(f"[jobs] start {kind} seed {seed}" + (f" {method}" if method else ""))

            for seed in self.cfg.seed_list:
                needs = {m: self.train_config(m, seed).needs_world_model
                         for m in self.cfg.methods}
                if any(needs.values()):
                    submit("world-model", seed)
                    waiting[seed] = [m for m in self.cfg.methods if needs[m]]
                for m in self.cfg.methods:
                    if not needs[m]:
                        submit("method", seed, m, have_wm=any(needs.values()))
            try:
                while pending:
                    done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        kind, seed, method = pending.pop(fut)
                        try:
                            records, messages = fut.result()
                        except Exception as exc:  # the others finish; nothing new starts
                            error = error or exc
                            self.say(f"[jobs] {kind} seed {seed} {method or ''} failed: {exc!r}")
                            continue
                        for msg in messages:
                            self.say(msg)
                        for rec in records:  # jobs: these stages may have overlapped
                            append_jsonl(self.out / STAGES_FILE, {**rec, "jobs": jobs})
                        if kind == "world-model" and error is None:
                            for m in waiting.pop(seed, []):
                                submit("method", seed, m, have_wm=True)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if error is not None:
            raise error

    def _check_out(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        mine = json_normal(self.cfg.to_dict())
        seeds, methods = list(self.cfg.seed_list), list(self.cfg.methods)
        run = pipeline_dir(self.out)
        stored = run.stored()
        if stored is not None and not isinstance(stored.get("config", {}), dict):
            raise ValueError(f"{run.identity_path}: not a metadt pipeline record; use another --out")
        # overrides compare under the fields' names now (`seq_len=8` is `window_len=8`)
        old = None if stored is None else run.check(
            {"config": _current_override_names(mine)},
            {**stored, "config": _current_override_names(stored.get("config", {}))}, run.identity_path)
        if old is not None:
            seeds = sorted(set(old.get("all_seeds", [])) | set(seeds))
            methods = list(dict.fromkeys(list(old.get("all_methods", [])) + methods))
            self.say(f"resuming the pipeline in {self.out}")
        atomic_write_json(self.out / PIPELINE_FILE,
                          {"format": "metadt-pipeline", "version": 1, "config": mine,
                           "all_seeds": seeds, "all_methods": methods,
                           "provenance": provenance(self.cfg.device or None)})

    def _log(self, stage: str, t0: float, **fields: Any) -> None:
        if not self.main:
            return
        record = {"stage": stage, **fields, "seconds": round(time.perf_counter() - t0, 2),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.records is not None:
            self.records.append(record)
        else:
            append_jsonl(self.out / STAGES_FILE, record)

    # ----------------------------------------------------------------- stages
    def stage_collect(self) -> None:
        if (self.data / "card.json").is_file():
            self.say(f"[collect] {self.data}: dataset present, skipped")
            self._warn_data_config()
            from metadt.data.dataset import Dataset

            t0 = time.perf_counter()
            Dataset.open(self.data).check_stores(verify=self.verify)
            self.say(f"[collect] {self.data}: "
                     f"{'verified' if self.verify else 'checked (--no-verify)'} in "
                     f"{time.perf_counter() - t0:.2f}s")
            return
        from metadt.collect.collector import collect

        self.say(f"[collect] {self.cfg.family} ({self.cfg.preset}) into {self.data}")
        t0 = time.perf_counter()
        last = {"phase": None}

        def on_event(ev: dict[str, Any]) -> None:
            if self.collect_progress is not None:  # bars show the phases
                self.collect_progress(ev)
            elif ev.get("phase") != last["phase"]:
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
        from metadt.train.run import model_file

        if model_file(out) is not None:
            self.say(f"[world model] seed {seed}: done, skipped")
            return
        from metadt.evaluate.world_model_report import world_model_report
        from metadt.train.world_model import train_world_model

        self.say(f"[world model] seed {seed} -> {out}")
        t0 = time.perf_counter()
        train_world_model(self.data, self.world_model_config(seed), out, progress=self.bars,
                          report=world_model_report)
        self._log("world-model", t0, seed=seed)

    def stage_train(self, method: str, seed: int, have_wm: bool) -> None:
        out = self.run_dir(method, seed)
        from metadt.train.run import model_file

        if model_file(out) is not None:
            self.say(f"[train] {method} seed {seed}: done, skipped")
            return
        from metadt.train.meta_dt import train_meta_dt

        cfg = self.train_config(method, seed)
        wm = self.world_model_dir(seed) if (cfg.needs_world_model and have_wm) else None
        self.say(f"[train] {method} seed {seed} -> {out}")
        t0 = time.perf_counter()
        from metadt.evaluate.evaluator import training_return_probe

        probe = training_return_probe(self.data) if cfg.train_eval_every > 0 else None
        train_meta_dt(self.data, cfg, out, world_model=wm, progress=self.bars,
                      evaluate_return=probe)
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


def _stage_job(cfg: PipelineConfig, out: str, kind: str, seed: int, method: str | None,
               have_wm: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """One `--jobs` worker job: a seed's world model, or a method's training and evaluation.
    Returns the stage records and the progress messages (the main process writes them)."""
    from metadt.evaluate.evaluator import torch_threads

    records: list[dict[str, Any]] = []
    messages: list[str] = []
    pipe = Pipeline(cfg, out, progress=messages.append, records=records)
    with torch_threads(cfg.torch_threads):
        if kind == "world-model":
            pipe.stage_world_model(seed)
        else:
            pipe.stage_train(method, seed, have_wm)
            pipe._evaluate(method, seed, pipe.evaluate_config())
    return records, messages


def _override_field(item: str) -> str:
    return item.split("=", 1)[0].strip().replace("-", "_")


def _current_override_names(config: dict[str, Any]) -> dict[str, Any]:
    """A pipeline config dict whose ``*overrides`` name renamed fields (``Config.RENAMED`` of
    any stage) by their names now (for comparing identities; nothing is warned here: the
    stage configs warn when they read the overrides)."""
    from metadt.config.collect import CollectConfig
    from metadt.config.evaluate import EvaluateConfig
    from metadt.config.meta_dt import MetaDTConfig
    from metadt.config.world_model import WorldModelConfig

    renamed: dict[str, str] = {}
    for cls in (CollectConfig, WorldModelConfig, MetaDTConfig, EvaluateConfig):
        renamed.update(cls.RENAMED)

    def one(item: Any) -> Any:
        if not isinstance(item, str) or "=" not in item:
            return item
        name = _override_field(item)
        return f"{renamed[name]}={item.split('=', 1)[1]}" if name in renamed else item

    out = dict(config)
    for key in FIXED_FIELDS:
        if key.endswith("overrides") and isinstance(out.get(key), list):
            out[key] = [one(x) for x in out[key]]
    return out


def run_pipeline(cfg: PipelineConfig, out: str | Path, *, progress: Progress | None = None,
                 bars: bool = False, verify: bool = True,
                 collect_progress: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """Run or resume the pipeline of `cfg` into `out`; returns the report dict. An existing
    dataset is verified first (``verify``: CRC-32 and finite values, else cheap checks).
    ``collect_progress`` receives the collector's progress events (`collect`)."""
    return Pipeline(cfg, out, progress=progress, bars=bars, verify=verify,
                    collect_progress=collect_progress).run()
