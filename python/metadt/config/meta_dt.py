"""Config of Meta-DT and of every baseline/ablation (protocol sections 4, 5 and 7).

One trainer and one policy serve all methods; a method is a preset of these
flags (see :data:`METHODS`), never a copy of the code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from metadt.config.base import Config, check_loggers, check_preset, check_seed

#: The prompt strategy names: the Python mirror of the store's (the Rust enum ``Strategy``,
#: ``metadt._core.PROMPT_STRATEGIES`` and the ``PromptStrategy`` Literal of ``_core.pyi``; config
#: imports nothing, and tests/test_batch_format.py checks the three agree). Every Python use reads it here.
PROMPT_STRATEGIES = ("argmax", "proportional", "random", "last")
#: The strategies that choose a segment by world-model error (they need a world model).
SCORED_STRATEGIES = PROMPT_STRATEGIES[:2]
#: Mixed precision of the policy: "off" (float32), "auto" (bfloat16 autocast on CUDA,
#: float32 elsewhere), "bf16" (bfloat16 autocast on any device; on the CPU only for checks).
AMP_MODES = ("off", "auto", "bf16")
WINDOW_ANCHORS = ("start", "end")
Z_SOURCES = ("column", "on_the_fly")

#: method name -> the flags it sets (everything else comes from the preset).
METHODS: dict[str, dict[str, Any]] = {
    # full method: z from the world model + complementary prompt after warm-up
    "meta-dt": dict(use_z=True, use_prompt=True, prompt_strategy="argmax"),
    # multi-task decision transformer: neither z nor prompt
    "dt": dict(use_z=False, use_prompt=False),
    # Prompt-DT: a prompt segment from the task's data from the first step, no z
    "prompt-dt": dict(use_z=False, use_prompt=True, prompt_strategy="random", warm_train=0),
    # ablations
    "meta-dt-no-z": dict(use_z=False, use_prompt=True, prompt_strategy="argmax"),
    # the official zero-shot model (`--zero_shot`): z, never prompted ("Meta-DT zero-shot")
    "meta-dt-no-prompt": dict(use_z=True, use_prompt=False),
    "meta-dt-random-prompt": dict(use_z=True, use_prompt=True, prompt_strategy="random"),
}

# Families whose published window/prompt lengths differ from K=20, k=5.
_SHORT_WINDOWS = ("hopper-param", "walker-param")


@dataclass
class MetaDTConfig(Config):
    """Meta-DT policy and its trainer."""

    RENAMED: ClassVar[Mapping[str, str]] = {"seq_len": "window_len"}
    """``seq_len`` (metadt before the names were unified) is ``window_len``: read with a
    DeprecationWarning from a config dict (an older run's config.json) and from ``--set``."""

    family: str = "point-robot"
    """Task family (checked against the dataset's and the world model's)."""
    preset: str = "cpu"
    """Preset these values came from (informational)."""
    method: str = "meta-dt"
    """Method preset the flags came from: one of METHODS (informational once built)."""
    seed: int = 0
    """Seed of parameters, dropout and of every sampled batch."""
    quality: str = "medium"
    """Dataset quality (store) trained on; its tasks' prompts come from the same store."""

    # -- conditioning
    use_z: bool = True
    """Condition state tokens on the world model's task representation z_t."""
    use_prompt: bool = True
    """Prepend a k-step prompt segment (after `warm_train` steps)."""
    prompt_strategy: str = "argmax"
    """Segment choice within an episode: argmax (paper), proportional (authors' code), random, last."""
    prompt_score_column: str = "wm_error"
    """Store column holding per-step world-model errors (segment scores)."""
    prompt_start_min: int | None = None
    """Smallest segment start (None = the world model's context length h)."""
    z_source: str = "column"
    """How z_t reaches the batch: "column" (precomputed per step, attached to the store
    and sampled with the window) or "on_the_fly" (encoded from the batch's context
    windows each step). "column" measured faster on the cpu preset (docs/train.md)."""
    z_column: str = "wm_z"
    """Store column name for precomputed z."""

    # -- sequence
    window_len: int = 20
    """K: steps per training window."""
    prompt_len: int = 5
    """k: steps per prompt segment."""
    return_scale: float | None = None
    """RTG divisor (None = the family's: Point 10, MuJoCo/Meta-World 500)."""
    max_timestep: int | None = None
    """Size of the timestep embedding (None = the dataset's horizon)."""
    action_scale: float | None = None
    """Actions are divided by this inside the model and the tanh head is scaled by it
    (None = the family's action bound)."""

    # -- architecture
    embed_dim: int = 128
    """Transformer width."""
    n_layers: int = 3
    """Transformer blocks."""
    n_heads: int = 1
    """Attention heads."""
    mlp_dim: int = 512
    """Hidden width of each block's MLP."""
    dropout: float = 0.1
    """Dropout on embeddings, attention probabilities and residual branches."""
    state_embed_dim: int = 16
    """Width of Linear(s_norm) before it is concatenated with z_t."""
    z_dim: int = 16
    """Dimension of z (set from the world model by the trainer; checked)."""

    # -- optimization
    lr: float = 1e-4
    """AdamW learning rate (after warm-up)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 10000
    """Linear learning-rate warm-up steps."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    batch_size: int = 128
    """Windows per batch."""
    num_steps: int = 100000
    """Gradient steps."""
    warm_train: int = 20000
    """Steps trained without prompt before the complementary prompt is switched on."""
    prompt_dropout: float = 0.0
    """After warm-up, the fraction of samples per batch trained with their prompt masked
    out (= no prompt). 0 = the official schedule (every sample prompted after
    warm_train): the zero-shot model is a separate, never-prompted run
    (`meta-dt-no-prompt`, the official `--zero_shot`). The former default 0.25 kept one
    model usable without a prompt; its measured effect is in docs/evaluate.md."""
    window_anchor: str = "start"
    """Which step of a training window is drawn uniformly over the steps
    (`TrajectoryStore.sample_windows(anchor=...)`): "start" (the official
    `parse_trajectory_segment` and kzl's rule: [start, start+K) clipped at the episode
    end, left-padded) or "end" (the window ends at the drawn step; with K >= T every
    window then starts at t = 0). Measured effect in docs/evaluate.md."""

    # -- bookkeeping
    log_every: int = 100
    """Steps between metrics lines (JSONL)."""
    train_eval_every: int = 0
    """Steps between evaluations of the return during training (0: never): one zero-shot
    episode (no prompt, z online as in evaluation) on each of ``train_eval_tasks`` test
    tasks, logged as ``eval_return`` in metrics.jsonl / csv and drawn in curves.png. On for
    point-robot's cpu preset (20-step episodes: cheap). Training is unchanged by it."""
    train_eval_tasks: int = 5
    """Tasks of those evaluations (the dataset's first test tasks)."""
    loggers: str = ""
    """Extra metric sinks: "", "tensorboard", "wandb" or both, comma-separated
    (`metadt.config.base.LOGGERS_DOC`); JSON lines and CSV are always written."""
    checkpoint_every: int = 1000
    """Steps between atomic checkpoints (resume point)."""
    column_batch_size: int = 4096
    """Steps per forward pass when computing the z / error columns."""
    device: str = "cpu"
    """Torch device ("cpu", "cuda", "auto" = cuda when available)."""
    amp: str = "off"
    """Mixed precision of the policy's forward (training and evaluation): "off" (float32),
    "auto" (bfloat16 autocast on CUDA, float32 elsewhere; the paper preset), "bf16"
    (bfloat16 autocast on any device). Weights, optimizer state and the loss stay float32;
    float32 matmuls use TF32 exactly when PyTorch's own switch allows it."""
    num_threads: int = 1
    """torch CPU threads for training (0 = torch's default). 1 on the cpu/smoke presets:
    on a shared 2-core machine, 2 threads measured 20-100x slower per step than 1."""

    @property
    def needs_world_model(self) -> bool:
        """z, or a prompt chosen by world-model error, needs a trained world model."""
        return self.use_z or (self.use_prompt and self.prompt_strategy in SCORED_STRATEGIES)

    @classmethod
    def for_family(cls, family: str, preset: str = "cpu", method: str = "meta-dt") -> "MetaDTConfig":
        """Defaults for a family, a preset (`paper`, `cpu`, `smoke`) and a method."""
        check_preset(preset)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        cfg = cls(family=family, preset=preset, method=method)
        if family in _SHORT_WINDOWS:
            cfg = cfg.replace(window_len=8, prompt_len=3)
        if preset == "paper":
            cfg = cfg.replace(device="auto", num_threads=0, log_every=200, checkpoint_every=5000,
                              amp="auto")
        elif preset == "cpu":
            # ~25x cheaper per step than `paper`; finishes in minutes on 2 cores.
            cfg = cfg.replace(embed_dim=64, n_layers=2, mlp_dim=256, batch_size=32,
                              num_steps=2000, warmup_steps=200, warm_train=800, lr=1e-3,
                              log_every=50, checkpoint_every=500,
                              train_eval_every=250 if family == "point-robot" else 0)
        else:  # smoke
            cfg = cfg.replace(embed_dim=16, n_layers=1, mlp_dim=32, batch_size=8,
                              num_steps=6, warmup_steps=2, warm_train=3, lr=1e-3, window_len=5,
                              prompt_len=3, log_every=2, checkpoint_every=3,
                              column_batch_size=1024)
        return cfg.replace(**METHODS[method]).validate()

    def with_method(self, method: str) -> "MetaDTConfig":
        """The same sizes with another method's flags."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        return self.replace(method=method, **METHODS[method]).validate()

    def validate(self) -> "MetaDTConfig":
        if self.prompt_strategy not in PROMPT_STRATEGIES:
            raise ValueError(f"prompt_strategy {self.prompt_strategy!r} is not one of "
                             f"{', '.join(PROMPT_STRATEGIES)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp {self.amp!r} is not one of {', '.join(AMP_MODES)}")
        if self.z_source not in Z_SOURCES:
            raise ValueError(f"z_source {self.z_source!r} is not one of {', '.join(Z_SOURCES)}")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by n_heads {self.n_heads}")
        for name in ("window_len", "prompt_len", "embed_dim", "n_layers", "n_heads", "mlp_dim",
                     "batch_size", "num_steps", "log_every", "checkpoint_every",
                     "state_embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warm_train < 0 or self.warmup_steps < 0:
            raise ValueError("warm_train and warmup_steps must be >= 0")
        if self.window_anchor not in WINDOW_ANCHORS:
            raise ValueError(f"window_anchor {self.window_anchor!r} is not one of "
                             f"{', '.join(WINDOW_ANCHORS)}")
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1], got {self.prompt_dropout}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_seed(self.seed)
        for name in ("return_scale", "action_scale"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0 (or None for the "
                                 f"family's), got {v!r}")
        for name in ("lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        check_loggers(self.loggers)
        if self.train_eval_every < 0 or self.train_eval_tasks < 1:
            raise ValueError("train_eval_every must be >= 0 and train_eval_tasks >= 1")
        return self
