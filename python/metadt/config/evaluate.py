"""Config of evaluation: zero-shot and few-shot rollouts (protocol sections 6-7)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from metadt.config.base import Config, check_preset, check_seed
from metadt.config.meta_dt import PROMPT_STRATEGIES

#: Evaluation settings. ``zero-shot``: no prompt, z online from the agent's
#: own last h transitions. ``few-shot``: the agent first runs zero-shot,
#: its best trajectory gives the prompt (segment chosen by
#: `few_shot_strategy`). ``expert-prompt``: the prompt is a segment of the
#: dataset's best expert episode of the task (Prompt-DT as published).
#: Diagnostics (does the policy use z / the prompt?): ``*-z-shuffled``: the
#: setting with every env given the z of another evaluated task (computed from
#: that task's env's context at the same step); ``few-shot-prompt-swapped``:
#: the few-shot prompt of another task. ``z-probe``: the world-model probe
#: scored on the agent's own zero-shot contexts and on random-action contexts
#: of the evaluated tasks (no returns).
SETTINGS = ("zero-shot", "few-shot", "expert-prompt", "zero-shot-z-shuffled",
            "few-shot-z-shuffled", "few-shot-prompt-swapped", "z-probe")

#: Default settings per method (protocol section 7). The paper's two Meta-DT
#: models are two runs: the few-shot model (`meta-dt`, prompted on every sample
#: after warm-up) and the zero-shot model (`meta-dt-no-prompt`, never prompted,
#: the official `--zero_shot`); the few-shot model is not evaluated without a
#: prompt by default (it never trained that way after warm-up).
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    # expert-prompt for Meta-DT is a diagnostic (an upper bound of its prompt pathway,
    # not the protocol's few-shot setting, which never sees a demonstration)
    "meta-dt": ("few-shot", "expert-prompt", "few-shot-z-shuffled", "few-shot-prompt-swapped"),
    "dt": ("zero-shot",),
    "prompt-dt": ("expert-prompt", "few-shot", "few-shot-prompt-swapped"),
    "meta-dt-no-z": ("few-shot",),
    "meta-dt-no-prompt": ("zero-shot", "zero-shot-z-shuffled", "z-probe"),
    "meta-dt-random-prompt": ("few-shot",),
}

STRATEGIES = PROMPT_STRATEGIES  # the one list of prompt strategy names (config/meta_dt.py)


@dataclass
class EvaluateConfig(Config):
    """How a trained policy is evaluated on test (and a few train) tasks."""

    family: str = "point-robot"
    """Task family (informational; the run's dataset decides)."""
    preset: str = "cpu"
    """Preset these values came from (informational)."""
    seed: int = 0
    """Evaluation seed: env reset seeds and random prompt segments (offset by the run's seed)."""
    episodes: int = 3
    """Evaluation episodes per task and setting (stepped together in one vector env)."""
    few_shot_episodes: int = 3
    """Episodes per task of each few-shot collection round (protocol: 3); the best of all
    the agent's own collected episodes gives the final prompt."""
    few_shot_rounds: int = 3
    """Collection rounds before the few-shot evaluation. Round 1 runs zero-shot (no prompt);
    each later round is prompted by the complementary segment of the best own episode so
    far, like the original code's growing buffer of the agent's evaluation trajectories.
    1 = the protocol as written (one zero-shot round only)."""
    few_shot_noise: float = 0.5
    """Exploration noise of the collection episodes: Gaussian, std = this x half the action
    range, added before clipping. A deterministic policy in a deterministic env collects
    identical episodes without it ("best of 3" would choose among copies); 0 disables it.
    The evaluation episodes themselves are always noise-free."""
    num_train_tasks: int = 3
    """Training tasks evaluated besides the test tasks (evenly spaced over train ids; 0 = none)."""
    settings: tuple[str, ...] = ()
    """Settings to evaluate (empty: the method's defaults, see METHOD_SETTINGS)."""
    few_shot_strategy: str = ""
    """Segment selection of the few-shot prompt: argmax (complementary), proportional,
    random, last; empty: the run's own `prompt_strategy` (Meta-DT and its no-z ablation:
    argmax on world-model error; Prompt-DT, which has no world model, and the
    random-prompt ablation: random)."""
    error_column: str = "wm_error"
    """Name of the per-step world-model error column on the agent's own trajectories."""
    expert_quality: str = "expert"
    """Dataset quality the expert-prompt setting takes its demonstration from."""
    expert_prompt_strategy: str = "random"
    """Segment of the best expert episode used as Prompt-DT's expert prompt (random, last)."""
    target_quality: str = ""
    """Quality whose per-task max return is the target return (empty: the run's quality)."""
    target_scale: float = 1.0
    """Target return = target_scale x dataset max return of the task."""
    eval_tasks: int = 0
    """Extra unseen tasks evaluated besides the protocol's test tasks (split "unseen"),
    sampled by the family from `eval_tasks_seed`, never in any dataset or training. Their
    reference returns are not from a dataset: random = `unseen_random_episodes` uniform-
    random episodes; "dataset max" (target and normalization) = random + c x (optimal -
    random), c the median of (dataset max - random) / (optimal - random) over the
    training tasks (families with an analytic optimal return: point-robot)."""
    eval_tasks_seed: int = 1_000_003
    """Seed of the extra tasks (must differ from the dataset's task seed)."""
    unseen_random_episodes: int = 20
    """Uniform-random episodes per extra task for its random return."""
    probe_episodes: int = 3
    """z-probe setting: uniform-random-action episodes per evaluated task (the agent's own
    contexts are its `episodes` zero-shot episodes)."""
    device: str = ""
    """Torch device for evaluation (empty: the run's device)."""
    torch_threads: int = 1
    """torch intra-op threads during evaluation (0 = leave as is). The per-step batches are
    tiny: on the shared 2-core machine under load, a small Linear took 13 ms with two
    threads and 17 us with one (thread spinning)."""

    @classmethod
    def for_family(cls, family: str, preset: str = "cpu") -> "EvaluateConfig":
        """Defaults for a family and preset (`paper`, `cpu`, `smoke`)."""
        check_preset(preset)
        cfg = cls(family=family, preset=preset)
        if preset == "paper":
            return cfg.replace(episodes=5, num_train_tasks=5)
        if preset == "cpu":
            return cfg
        return cfg.replace(episodes=1, few_shot_episodes=2, few_shot_rounds=2, num_train_tasks=1)

    def validate(self) -> "EvaluateConfig":
        for name in ("episodes", "few_shot_episodes", "few_shot_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"evaluate: {name} must be >= 1, got {getattr(self, name)}")
        if not (self.few_shot_noise >= 0 and self.few_shot_noise < float("inf")):
            raise ValueError(f"evaluate: few_shot_noise must be a finite number >= 0, "
                             f"got {self.few_shot_noise}")
        if self.eval_tasks < 0 or self.unseen_random_episodes < 1 or self.probe_episodes < 1:
            raise ValueError("evaluate: eval_tasks must be >= 0, unseen_random_episodes and "
                             "probe_episodes >= 1")
        if self.num_train_tasks < 0:
            raise ValueError("evaluate: num_train_tasks must be >= 0")
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad:
            raise ValueError(f"evaluate: unknown setting(s) {bad}; choose from {', '.join(SETTINGS)}")
        if self.few_shot_strategy and self.few_shot_strategy not in STRATEGIES:
            raise ValueError(f"evaluate: few_shot_strategy must be one of {', '.join(STRATEGIES)}")
        if self.expert_prompt_strategy not in ("random", "last"):
            raise ValueError("evaluate: expert_prompt_strategy must be random or last")
        if not (math.isfinite(self.target_scale) and self.target_scale > 0):
            raise ValueError("evaluate: target_scale must be a finite number > 0")
        check_seed(self.seed, "evaluate: seed")
        return self

    def settings_for(self, method: str) -> tuple[str, ...]:
        if self.settings:
            return tuple(self.settings)
        return METHOD_SETTINGS.get(method, ("zero-shot", "few-shot"))
