"""Config of `metadt run`: the whole pipeline for one family and preset."""
from __future__ import annotations

from dataclasses import dataclass

from metadt.config.base import Config, check_preset, check_seed
from metadt.config.meta_dt import METHODS


@dataclass
class PipelineConfig(Config):
    """Collect (if missing) -> world model -> Meta-DT and baselines -> evaluate -> report."""

    family: str = "point-robot"
    """Task family."""
    preset: str = "cpu"
    """Preset of every stage (`paper`, `cpu`, `smoke`)."""
    seeds: int = 1
    """Training seeds (each gets its own world model and policies)."""
    first_seed: int = 0
    """Seeds are first_seed .. first_seed + seeds - 1."""
    methods: tuple[str, ...] = tuple(METHODS)
    """Methods trained and evaluated (Meta-DT, baselines and ablations)."""
    data: str = ""
    """Dataset directory (collected there if missing); empty: data/<family>-<preset>."""
    collect_seed: int = 0
    """Seed of the data collection (shared by every training seed)."""
    overrides: tuple[str, ...] = ()
    """``field=value`` overrides applied to every stage's config that has the field
    (`metadt run --set`); a field no stage has is an error. The per-stage overrides
    below are applied after these (they win)."""
    collect_overrides: tuple[str, ...] = ()
    """``field=value`` overrides of the CollectConfig."""
    world_model_overrides: tuple[str, ...] = ()
    """``field=value`` overrides of the WorldModelConfig."""
    train_overrides: tuple[str, ...] = ()
    """``field=value`` overrides of every method's MetaDTConfig."""
    evaluate_overrides: tuple[str, ...] = ()
    """``field=value`` overrides of the EvaluateConfig."""
    report_reps: int = 2000
    """Bootstrap resamples of the report's rliable confidence intervals."""
    torch_threads: int = 1
    """torch intra-op threads for every stage (0 = torch's default). The cpu-preset models
    are small: on the shared 2-core machine under load, Meta-DT training ran 5.3 steps/s
    with one thread and 0.6 with two (docs/evaluate.md)."""

    device: str = ""
    """Torch device of every stage (`metadt run --device`; empty: each preset's)."""

    jobs: int = 1
    """Independent stages run at once in separate processes (`metadt run --jobs`, whose
    default is the machine's cores): the world models of the seeds, then every method's
    training + evaluation of a seed once its world model is done. Results equal jobs=1."""

    def validate(self) -> "PipelineConfig":
        check_preset(self.preset)
        if self.jobs < 1:
            raise ValueError(f"pipeline: jobs must be >= 1, got {self.jobs}")
        if self.seeds < 1 or self.first_seed < 0:
            raise ValueError("pipeline: seeds must be >= 1 and first_seed >= 0")
        check_seed(self.first_seed + self.seeds - 1, "pipeline: first_seed + seeds - 1")
        check_seed(self.collect_seed, "pipeline: collect_seed")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"pipeline: unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise ValueError("pipeline: no methods")
        if self.report_reps < 1:
            raise ValueError("pipeline: report_reps must be >= 1")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def data_dir(self) -> str:
        return self.data or f"data/{self.family}-{self.preset}"
