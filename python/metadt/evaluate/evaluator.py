"""Evaluate one trained policy in the settings its method calls for.

Settings (protocol sections 6 and 7; defaults per method in
`metadt.config.evaluate.METHOD_SETTINGS`):

- ``zero-shot``: no prompt; z online from the agent's own last h transitions;
- ``few-shot``: the agent first collects its own episodes per task in
  `few_shot_rounds` rounds of `few_shot_episodes` noisy episodes (round 1
  zero-shot, later rounds prompted by its best episode so far); its best
  episode, scored by the world model, gives the prompt
  (`metadt.evaluate.few_shot.own_prompts`); then `episodes` noise-free
  episodes with it;
- ``expert-prompt``: a segment of the dataset's best expert episode of the
  task as prompt (Prompt-DT as published).

Tasks: every test task plus a few training tasks. Target return: the max
return of the task in the dataset (times ``target_scale``). All tasks and
episodes of a setting are stepped together in one vector env.

Results (``eval.json``, written atomically after every setting so an
interrupted evaluation resumes with the next one)::

    {"format": "metadt-eval", "version": 1, "method", "seed", "family", "quality",
     "config": EvaluateConfig, "tasks": {id: {"split", "target", "dataset_max",
     "dataset_mean", "random"}},
     "settings": {name: {"returns": {id: [episode returns]},
                         "success": {id: [bool]} (if the env reports it),
                         "prompts": {id: {...}} (prompted settings),
                         "collect_returns": {id: [...]} (few-shot: the zero-shot episodes),
                         "seconds": wall time}}}
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from metadt.config.evaluate import EvaluateConfig
from metadt.evaluate.few_shot import Scorer, expert_prompts, own_prompts, stack_prompts
from metadt.evaluate.rollout import Trajectories, rollout
from metadt.fileio import atomic_write_json, read_json

EVAL_FORMAT = "metadt-eval"
EVAL_VERSION = 1
EVAL_FILE = "eval.json"

Progress = Callable[[str], None]


def config_json(cfg: EvaluateConfig) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(cfg.to_dict()))


@dataclass
class Subject:
    """What is evaluated: a policy with the dimensions of its windows."""

    method: str
    policy: Any
    family: Any
    window: int
    """K: steps per window."""
    context: int
    """h: transitions in the world model's context."""
    prompt_len: int
    """k: prompt length."""
    return_scale: float
    world_model: Any = None
    device: Any = "cpu"
    seed: int = 0
    """The training seed of the run (offsets the evaluation seeds)."""
    prompt_strategy: str = "argmax"
    """Few-shot segment selection the policy was trained with (argmax, random, ...)."""
    prompt_start_min: int | None = None
    """Smallest prompt segment start (None: h, as in protocol section 5)."""

    @property
    def start_min(self) -> int:
        return self.context if self.prompt_start_min is None else int(self.prompt_start_min)


@dataclass
class TaskTargets:
    """Per evaluated task: split, target return and the dataset's reference returns."""

    split: dict[int, str]
    target: dict[int, float]
    dataset_max: dict[int, float]
    dataset_mean: dict[int, float]
    random: dict[int, float | None] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return list(self.split)

    def to_json(self) -> dict[str, Any]:
        return {str(t): {"split": self.split[t], "target": self.target[t],
                         "dataset_max": self.dataset_max[t], "dataset_mean": self.dataset_mean[t],
                         "random": self.random.get(t)} for t in self.ids}


def eval_task_ids(train_ids: list[int], test_ids: list[int], num_train: int) -> dict[int, str]:
    """Test tasks plus `num_train` training tasks evenly spaced over the train ids."""
    split = {int(t): "test" for t in test_ids}
    if num_train > 0 and train_ids:
        idx = np.unique(np.linspace(0, len(train_ids) - 1, min(num_train, len(train_ids)))
                        .round().astype(int))
        for i in idx:
            split.setdefault(int(train_ids[i]), "train")
    return split


def targets_from_card(card: Any, quality: str, cfg: EvaluateConfig) -> TaskTargets:
    """Targets and reference returns of the evaluated tasks from a dataset card."""
    split = eval_task_ids(list(card.train_ids), list(card.test_ids), cfg.num_train_tasks)
    tq = cfg.target_quality or quality
    stats = card.returns(quality)
    target, dmax, dmean, rnd = {}, {}, {}, {}
    for t in split:
        if t not in stats:
            raise ValueError(f"the dataset's {quality!r} data has no episodes of task {t}: "
                             f"its max return (the target) is unknown")
        target[t] = float(card.max_return(t, tq)) * cfg.target_scale
        dmax[t] = float(stats[t]["max"])
        dmean[t] = float(stats[t]["mean"])
        rnd[t] = card.random_return(t)
    return TaskTargets(split, target, dmax, dmean, rnd)


def _per_task(trajs: Trajectories) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t, r in zip(trajs.tasks.tolist(), trajs.returns.tolist()):
        out.setdefault(str(int(t)), []).append(float(r))
    return out


def _per_task_success(trajs: Trajectories) -> dict[str, list[bool]] | None:
    if trajs.success is None:
        return None
    out: dict[str, list[bool]] = {}
    for t, s in zip(trajs.tasks.tolist(), trajs.success.tolist()):
        out.setdefault(str(int(t)), []).append(bool(s))
    return out


class Evaluator:
    """Runs the settings of one subject; see the module docstring."""

    def __init__(self, subject: Subject, cfg: EvaluateConfig, targets: TaskTargets, *,
                 expert_store: Callable[[], Any] | None = None, scorer: Scorer | None = None,
                 progress: Progress | None = None) -> None:
        self.s = subject
        self.cfg = cfg.validate()
        self.targets = targets
        self._expert_store = expert_store
        self._scorer = scorer
        self._progress = progress or (lambda msg: None)

    # ------------------------------------------------------------------ api
    def settings(self) -> tuple[str, ...]:
        return self.cfg.settings_for(self.s.method)

    def header(self) -> dict[str, Any]:
        return {
            "format": EVAL_FORMAT, "version": EVAL_VERSION, "method": self.s.method,
            "seed": int(self.s.seed), "family": getattr(self.s.family, "name", ""),
            "config": config_json(self.cfg), "tasks": self.targets.to_json(), "settings": {},
        }

    def run(self, results: dict[str, Any] | None = None,
            save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Evaluate every setting not already in `results` (resume), saving after each."""
        results = results if results is not None else self.header()
        for setting in self.settings():
            if setting in results["settings"]:
                self._progress(f"{self.s.method} seed {self.s.seed}: {setting} done already")
                continue
            t0 = time.perf_counter()
            res = self.run_setting(setting)
            res["seconds"] = round(time.perf_counter() - t0, 3)
            results["settings"][setting] = res
            if save is not None:
                save(results)
            self._progress(f"{self.s.method} seed {self.s.seed}: {setting} "
                           f"{_brief(res['returns'], self.targets)} ({res['seconds']:.1f}s)")
        return results

    def run_setting(self, setting: str) -> dict[str, Any]:
        if setting == "zero-shot":
            trajs = self._rollout(self.cfg.episodes, prompt=None, salt=1)
            return self._result(trajs)
        if setting == "few-shot":
            return self._few_shot()
        if setting == "expert-prompt":
            return self._expert()
        raise ValueError(f"unknown evaluation setting {setting!r}")

    # ------------------------------------------------------------- settings
    def _seed(self, salt: int) -> int:
        return int(self.cfg.seed) + 100_003 * int(self.s.seed) + 1_009 * salt

    def _rollout(self, episodes: int, prompt: dict | None, salt: int,
                 action_noise: float = 0.0) -> Trajectories:
        ids = np.repeat(np.asarray(self.targets.ids, dtype=np.int64), episodes)
        stacked = None if prompt is None else stack_prompts(prompt, ids)
        targets = np.array([self.targets.target[int(t)] for t in ids])
        return rollout(self.s.policy, self.s.family, ids, target_returns=targets,
                       window=self.s.window, context=self.s.context,
                       return_scale=self.s.return_scale, world_model=self.s.world_model,
                       prompt=stacked, seed=self._seed(salt), device=self.s.device,
                       action_noise=action_noise)

    def _result(self, trajs: Trajectories, **extra: Any) -> dict[str, Any]:
        res: dict[str, Any] = {"returns": _per_task(trajs)}
        succ = _per_task_success(trajs)
        if succ is not None:
            res["success"] = succ
        res.update(extra)
        return res

    def _own_prompts(self, own: Trajectories, salt: int) -> tuple[dict, dict]:
        """Best own episode per task -> (world-model scored) segment -> prompt."""
        return own_prompts(
            own, length=self.s.prompt_len, start_min=self.s.start_min,
            return_scale=self.s.return_scale,
            strategy=self.cfg.few_shot_strategy or self.s.prompt_strategy,
            rng=np.random.default_rng(self._seed(salt)), world_model=self.s.world_model,
            column=self.cfg.error_column, scorer=self._scorer)

    def _few_shot(self) -> dict[str, Any]:
        cfg = self.cfg
        # 1. collection: round 1 zero-shot, later rounds prompted by the best own episode
        #    so far; every collected episode is the agent's own (never a dataset episode)
        rounds: list[Trajectories] = []
        prompts = None
        for r in range(cfg.few_shot_rounds):
            rounds.append(self._rollout(cfg.few_shot_episodes, prompt=prompts,
                                        salt=2 if r == 0 else 100 + r,
                                        action_noise=cfg.few_shot_noise))
            if r + 1 < cfg.few_shot_rounds:
                prompts, _ = self._own_prompts(Trajectories.concat(rounds), salt=200 + r)
        own = Trajectories.concat(rounds)
        # 2. best of all own episodes by return -> complementary segment -> prompt
        prompts, info = self._own_prompts(own, salt=3)
        # 3. evaluate with that prompt (noise-free)
        trajs = self._rollout(cfg.episodes, prompt=prompts, salt=4)
        return self._result(trajs, prompts={str(t): v for t, v in info.items()},
                            collect_returns=_per_task(own),
                            collect_rounds=[_per_task(x) for x in rounds])

    def _expert(self) -> dict[str, Any]:
        if self._expert_store is None:
            raise ValueError("the expert-prompt setting needs the dataset's expert store")
        rng = np.random.default_rng(self._seed(5))
        src = f"dataset:{self.cfg.expert_quality}"
        prompts, info = expert_prompts(
            self._expert_store(), self.targets.ids, length=self.s.prompt_len,
            start_min=self.s.start_min, return_scale=self.s.return_scale,
            strategy=self.cfg.expert_prompt_strategy, rng=rng, source=src)
        trajs = self._rollout(self.cfg.episodes, prompt=prompts, salt=6)
        return self._result(trajs, prompts={str(t): v for t, v in info.items()})


def _brief(returns: dict[str, list[float]], targets: TaskTargets) -> str:
    test = [np.mean(v) for t, v in returns.items() if targets.split[int(t)] == "test"]
    dmax = [targets.dataset_max[int(t)] for t in returns if targets.split[int(t)] == "test"]
    if not test:
        return ""
    return f"test return {np.mean(test):.2f} (dataset max {np.mean(dmax):.2f})"


# ------------------------------------------------------------------- runs
def subject_from_run(loaded: Any, family: Any, *, seed: int | None = None,
                     world_model: Any = None, device: str = "") -> Subject:
    """A `Subject` from `metadt.train.run.load_run`'s `LoadedRun` and its dataset's family.

    K and k come from the run's `MetaDTConfig` (``seq_len``, ``prompt_len``),
    h from its world model (``context_len``; 0 without one), the prompt
    segments' smallest start and selection from ``prompt_start_min`` and
    ``prompt_strategy`` (as the run was trained).
    """
    cfg = loaded.config
    wm = loaded.world_model if world_model is None else world_model
    dev = device or loaded.device
    policy = loaded.model
    if device:
        if hasattr(policy, "to"):
            policy = policy.to(dev)
        if wm is not None and hasattr(wm, "to"):
            wm = wm.to(dev)
    h = getattr(wm, "context_len", None) or getattr(loaded, "context_len", None)
    if h is None:  # no world model (DT, Prompt-DT): no z, so no context windows
        h = 0
    return Subject(
        method=str(cfg.method),
        policy=policy,
        family=family,
        window=int(cfg.seq_len),
        context=int(h),
        prompt_len=int(cfg.prompt_len),
        return_scale=float(loaded.return_scale),
        world_model=wm,
        device=dev,
        seed=int(cfg.seed if seed is None else seed),
        prompt_strategy=str(getattr(cfg, "prompt_strategy", "argmax")),
        prompt_start_min=getattr(cfg, "prompt_start_min", None),
    )


def evaluate_run(run_dir: str | Path, cfg: EvaluateConfig, *, out: str | Path | None = None,
                 progress: Progress | None = None, fresh: bool = False) -> dict[str, Any]:
    """Evaluate a finished training run; results in ``RUN/eval.json`` (or `out`).

    Resumable: settings already in an existing results file with the same
    config are kept.
    """
    with torch_threads(cfg.torch_threads):
        return _evaluate_run(run_dir, cfg, out, progress, fresh)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (n <= 0: unchanged)."""
    import torch

    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


def _evaluate_run(run_dir: str | Path, cfg: EvaluateConfig, out: str | Path | None,
                  progress: Progress | None, fresh: bool) -> dict[str, Any]:
    from metadt.data.dataset import Dataset
    from metadt.train.run import load_run

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / EVAL_FILE
    loaded = load_run(run_dir, device=cfg.device or None)
    dataset = Dataset.open(loaded.dataset_path)
    subject = subject_from_run(loaded, dataset.family)
    targets = targets_from_card(dataset.card, loaded.quality, cfg)
    ev = Evaluator(subject, cfg, targets,
                   expert_store=lambda: dataset.store(cfg.expert_quality), progress=progress)
    results = None
    if out.is_file() and not fresh:
        prev = read_json(out)
        if (prev.get("format") == EVAL_FORMAT and prev.get("config") == config_json(cfg)
                and prev.get("seed") == subject.seed and prev.get("method") == subject.method):
            results = prev
    if results is None:
        results = ev.header()
    results["run"] = str(run_dir)
    results["dataset"] = str(loaded.dataset_path)
    results["quality"] = str(loaded.quality)
    return ev.run(results, save=lambda r: atomic_write_json(out, r))


def is_complete(path: str | Path, cfg: EvaluateConfig, method: str) -> bool:
    """True if `path` holds results of every setting `cfg` asks of `method`."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        res = read_json(path)
    except ValueError:
        return False
    if res.get("format") != EVAL_FORMAT or res.get("config") != config_json(cfg):
        return False
    return all(s in res.get("settings", {}) for s in cfg.settings_for(method))
