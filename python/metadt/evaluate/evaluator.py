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
  task as prompt (Prompt-DT as published);
- diagnostics (does the policy use z, the prompt?): ``zero-shot-z-shuffled``
  and ``few-shot-z-shuffled`` give every env the z computed from the env of
  *another* evaluated task (the next one in the evaluated order, same episode
  index) at the same step, everything else unchanged;
  ``few-shot-prompt-swapped`` gives every task the few-shot prompt of that other
  task (the few-shot prompts are the ones the ``few-shot`` setting uses);
- ``z-probe``: the world model's probe (fitted on the training tasks' dataset
  contexts, as in its report) scored on the agent's own zero-shot contexts and
  on uniformly random actions in the evaluated tasks (`metadt.evaluate.probe`).

Tasks: every test task plus a few training tasks, and `eval_tasks` extra
unseen tasks (split ``unseen``, see `EvaluateConfig.eval_tasks`). Target return:
the max return of the task in the dataset (times ``target_scale``). All tasks
and episodes of a setting are stepped together in one vector env.

Results (``eval.json``, written atomically after every setting so an
interrupted evaluation resumes with the next one)::

    {"format": "metadt-eval", "version": 1, "method", "seed", "family", "quality",
     "config": EvaluateConfig, "training": {the run's training flags},
     "tasks": {id: {"split", "target", "dataset_max", "dataset_mean", "random"}},
     "settings": {name: {"returns": {id: [episode returns]},
                         "success": {id: [bool]} (if the env reports it),
                         "prompts": {id: {...}} (prompted settings),
                         "collect_returns": {id: [...]} (few-shot: the zero-shot episodes),
                         "seconds": wall time}}}
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from metadt.provenance import provenance
from metadt.config.evaluate import EvaluateConfig
from metadt.evaluate.few_shot import Scorer, expert_prompts, own_prompts, stack_prompts
from metadt.evaluate.rollout import Trajectories, random_rollout, rollout
from metadt.fileio import atomic_write_json
from metadt.rundir import RunDir, json_normal
from metadt.fileio import atomic_write_json
from metadt.runtime import torch_threads
from metadt.seeding import evaluation_seed

EVAL_FORMAT = "metadt-eval"
EVAL_VERSION = 1
EVAL_FILE = "eval.json"

Progress = Callable[[str], None]

#: Config fields of a run recorded with its evaluation (report rows carry them).
TRAINING_FLAGS = ("method", "use_z", "use_prompt", "prompt_strategy", "prompt_dropout",
                  "window_anchor", "warm_train", "num_steps", "quality")


def config_json(cfg: EvaluateConfig) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists)."""
    return json_normal(cfg.to_dict())


EVAL_RUNTIME_FIELDS = frozenset({"config.device", "config.torch_threads"})
"""Fields of an evaluation's identity that say how it runs, not what it computes."""


def eval_identity(cfg: EvaluateConfig, method: str, seed: int | None = None) -> dict[str, Any]:
    """What makes a results file the same evaluation: its format, config, method and
    (when known) the run's seed."""
    out = {"format": EVAL_FORMAT, "config": config_json(cfg), "method": method}
    if seed is not None:
        out["seed"] = int(seed)
    return out


def results_dir(path: str | Path, identity: dict[str, Any]) -> RunDir:
    """The results file ``path`` as a run directory: its identity is the fields of
    ``identity`` (`eval_identity`) stored in the file itself, minus
    :data:`EVAL_RUNTIME_FIELDS`; a field an older metadt did not write reads as its
    default. Completion is per setting (`is_complete`)."""
    path = Path(path)
    return RunDir(path.parent, "evaluation", identity_file=path.name,
                  runtime=EVAL_RUNTIME_FIELDS, only=tuple(identity),
                  defaults={"config": config_json(EvaluateConfig())},
                  hint="rerun with --fresh (or --overwrite) to discard it, or give another --out")


@dataclass
class Subject:
    """What is evaluated: a policy with the dimensions of its windows."""

    method: str
    policy: Any
    family: Any
    window_len: int
    """K: steps per window."""
    context_len: int
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
    """Smallest prompt segment start (given None: h = `context_len`, as in protocol section 5;
    an int once constructed)."""
    training: dict[str, Any] = field(default_factory=dict)
    """What the policy was trained with (`TRAINING_FLAGS` of its config), for the report."""

    def __post_init__(self) -> None:
        self.prompt_start_min = int(self.context_len if self.prompt_start_min is None
                                    else self.prompt_start_min)


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

    def add(self, other: "TaskTargets") -> "TaskTargets":
        """These tasks followed by `other`'s (ids must be new)."""
        clash = set(self.split) & set(other.split)
        if clash:
            raise ValueError(f"task ids {sorted(clash)} evaluated twice")
        return TaskTargets({**self.split, **other.split}, {**self.target, **other.target},
                           {**self.dataset_max, **other.dataset_max},
                           {**self.dataset_mean, **other.dataset_mean},
                           {**self.random, **other.random})

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


def add_unseen_tasks(family: Any, card: Any, quality: str, cfg: EvaluateConfig,
                     targets: TaskTargets) -> tuple[Any, TaskTargets]:
    """The family with `cfg.eval_tasks` extra tasks appended (ids after the dataset's) and
    the targets with theirs (split ``unseen``); see `EvaluateConfig.eval_tasks`."""
    from metadt.envs.base import family_class, family_from_tasks

    n = int(cfg.eval_tasks)
    if n <= 0:
        return family, targets
    if family.seed is not None and int(cfg.eval_tasks_seed) == int(family.seed):
        raise ValueError(f"eval_tasks_seed {cfg.eval_tasks_seed} is the dataset's task seed: "
                         f"the extra tasks must come from another seed")
    extra = family_class(family.name)(seed=int(cfg.eval_tasks_seed), num_tasks=n,
                                      num_train=n, **dict(family.options)).tasks
    known = {json.dumps(t, sort_keys=True) for t in family.tasks}
    if any(json.dumps(t, sort_keys=True) in known for t in extra):
        raise ValueError("an extra evaluation task equals a dataset task")
    ext = family_from_tasks(family.name, list(family.tasks) + list(extra), family.num_train,
                            seed=family.seed, **dict(family.options))
    ids = list(range(len(family.tasks), len(ext.tasks)))
    # calibration on the training tasks only: dataset return above random, in units of
    # the optimal return above random
    stats = card.returns(quality)
    tq = cfg.target_quality or quality
    ratios: dict[str, list[float]] = {"max": [], "mean": [], "target": []}
    for t in card.train_ids:
        t = int(t)
        rnd, opt = card.random_return(t), family.oracle_return(family.tasks[t])
        if rnd is None or t not in stats or abs(opt - rnd) < 1e-12:
            continue
        ratios["max"].append((float(stats[t]["max"]) - rnd) / (opt - rnd))
        ratios["mean"].append((float(stats[t]["mean"]) - rnd) / (opt - rnd))
        ratios["target"].append((float(card.max_return(t, tq)) - rnd) / (opt - rnd))
    if not ratios["max"]:
        raise ValueError("eval_tasks: no training task with a random return to calibrate on")
    c = {k: float(np.median(v)) for k, v in ratios.items()}
    rand = random_rollout(ext, np.repeat(ids, cfg.unseen_random_episodes),
                          seed=int(cfg.eval_tasks_seed))
    split, target, dmax, dmean, rnd_d = {}, {}, {}, {}, {}
    for t in ids:
        r = float(rand.returns[rand.tasks == t].mean())
        opt = ext.oracle_return(ext.tasks[t])
        split[t] = "unseen"
        rnd_d[t] = r
        dmax[t] = r + c["max"] * (opt - r)
        dmean[t] = r + c["mean"] * (opt - r)
        target[t] = (r + c["target"] * (opt - r)) * cfg.target_scale
    return ext, targets.add(TaskTargets(split, target, dmax, dmean, rnd_d))


def other_task(ids: list[int]) -> dict[int, int]:
    """Each evaluated task -> the next one in order (cyclic): a derangement, so every task
    is given another task's input by the diagnostics."""
    if len(ids) < 2:
        raise ValueError("the z / prompt diagnostics need at least two evaluated tasks")
    return {int(t): int(ids[(i + 1) % len(ids)]) for i, t in enumerate(ids)}


def _take(trajs: Trajectories, rows: np.ndarray) -> Trajectories:
    return Trajectories(trajs.tasks[rows], trajs.obs[rows], trajs.actions[rows],
                        trajs.rewards[rows], trajs.next_obs[rows], trajs.targets[rows],
                        None if trajs.success is None else trajs.success[rows])


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
                 probe_weights: Callable[[], np.ndarray] | None = None,
                 progress: Progress | None = None) -> None:
        self.s = subject
        self.cfg = cfg.validate()
        self.targets = targets
        self._expert_store = expert_store
        self._scorer = scorer
        self._probe_weights = probe_weights
        self._progress = progress or (lambda msg: None)
        self._fs: tuple[dict, dict, list[Trajectories]] | None = None

    # ------------------------------------------------------------------ api
    def settings(self) -> tuple[str, ...]:
        return self.cfg.settings_for(self.s.method)

    def header(self) -> dict[str, Any]:
        return {
            "format": EVAL_FORMAT, "version": EVAL_VERSION, "method": self.s.method,
            "seed": int(self.s.seed), "family": getattr(self.s.family, "name", ""),
            "config": config_json(self.cfg), "training": dict(self.s.training),
            "tasks": self.targets.to_json(), "settings": {},
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
        if setting == "zero-shot-z-shuffled":
            trajs = self._rollout(self.cfg.episodes, prompt=None, salt=1, shuffle_z=True)
            return self._result(trajs, z_from=self._other_json())
        if setting == "few-shot-z-shuffled":
            prompts, _info, _rounds = self._few_shot_prompts()
            trajs = self._rollout(self.cfg.episodes, prompt=prompts, salt=4, shuffle_z=True)
            return self._result(trajs, z_from=self._other_json())
        if setting == "few-shot-prompt-swapped":
            prompts, info, _rounds = self._few_shot_prompts()
            other = other_task(self.targets.ids)
            swapped = {t: prompts[other[t]] for t in self.targets.ids}
            trajs = self._rollout(self.cfg.episodes, prompt=swapped, salt=4)
            return self._result(trajs, prompt_from=self._other_json())
        if setting == "z-probe":
            return self._probe()
        raise ValueError(f"unknown evaluation setting {setting!r}")

    def _other_json(self) -> dict[str, int]:
        return {str(k): v for k, v in other_task(self.targets.ids).items()}

    # ------------------------------------------------------------- settings
    def _seed(self, salt: int) -> int:
        return evaluation_seed(self.cfg.seed, self.s.seed, salt)

    def _rollout(self, episodes: int, prompt: dict | None, salt: int,
                 action_noise: float = 0.0, shuffle_z: bool = False,
                 task_ids: list[int] | None = None) -> Trajectories:
        order = list(self.targets.ids) if task_ids is None else list(task_ids)
        ids = np.repeat(np.asarray(order, dtype=np.int64), episodes)
        stacked = None if prompt is None else stack_prompts(prompt, ids)
        targets = np.array([self.targets.target[int(t)] for t in ids])
        z_from = None
        if shuffle_z:
            if not self.s.training.get("use_z", self.s.world_model is not None) \
                    or self.s.world_model is None:
                raise ValueError(f"{self.s.method} does not use z: nothing to shuffle")
            other = other_task(order)
            pos = {t: i for i, t in enumerate(order)}
            e = np.tile(np.arange(episodes), len(order))
            z_from = np.array([pos[other[int(t)]] * episodes for t in ids]) + e
        return rollout(self.s.policy, self.s.family, ids, target_returns=targets,
                       window_len=self.s.window_len, context_len=self.s.context_len,
                       return_scale=self.s.return_scale, world_model=self.s.world_model,
                       prompt=stacked, seed=self._seed(salt), device=self.s.device,
                       action_noise=action_noise, z_from=z_from)

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
            own, prompt_len=self.s.prompt_len, prompt_start_min=self.s.prompt_start_min,
            return_scale=self.s.return_scale,
            strategy=self.cfg.few_shot_strategy or self.s.prompt_strategy,
            rng=np.random.default_rng(self._seed(salt)), world_model=self.s.world_model,
            column=self.cfg.error_column, scorer=self._scorer)

    def _few_shot_prompts(self) -> tuple[dict, dict, list[Trajectories]]:
        """The few-shot prompts (computed once; deterministic in the seeds, so a resumed
        evaluation gets the same ones): ``(prompts, info, collection rounds)``."""
        if self._fs is not None:
            return self._fs
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
        self._fs = (prompts, info, rounds)
        return self._fs

    def _few_shot(self) -> dict[str, Any]:
        prompts, info, rounds = self._few_shot_prompts()
        # 3. evaluate with that prompt (noise-free)
        trajs = self._rollout(self.cfg.episodes, prompt=prompts, salt=4)
        return self._result(trajs, prompts={str(t): v for t, v in info.items()},
                            collect_returns=_per_task(Trajectories.concat(rounds)),
                            collect_rounds=[_per_task(x) for x in rounds])

    def _probe(self) -> dict[str, Any]:
        """The z probe on the agent's own zero-shot contexts and on random-action contexts,
        per split of the evaluated tasks (and over every task unseen in training)."""
        from metadt.evaluate.probe import probe_score

        if self.s.world_model is None or self._probe_weights is None:
            raise ValueError(f"{self.s.method}: the z probe needs the run's world model")
        w = self._probe_weights()
        ids = np.asarray(self.targets.ids, dtype=np.int64)
        sources = {"own": self._rollout(self.cfg.episodes, prompt=None, salt=1),
                   "random": random_rollout(self.s.family, np.repeat(ids, self.cfg.probe_episodes),
                                            seed=self._seed(7))}
        split = np.array([self.targets.split[int(t)] for t in ids])
        groups = {s: ids[split == s] for s in dict.fromkeys(split.tolist())}
        if {"test", "unseen"} <= set(groups):
            groups["test+unseen"] = ids[np.isin(split, ["test", "unseen"])]
        out: dict[str, Any] = {}
        for name, trajs in sources.items():
            out[name] = {g: probe_score(w, _take(trajs, np.flatnonzero(np.isin(trajs.tasks, t))),
                                        self.s.world_model, self.s.family)
                         for g, t in groups.items()}
        return {"returns": {}, "probe": out}

    def _expert(self) -> dict[str, Any]:
        if self._expert_store is None:
            raise ValueError("the expert-prompt setting needs the dataset's expert store")
        rng = np.random.default_rng(self._seed(5))
        src = f"dataset:{self.cfg.expert_quality}"
        # the dataset's tasks only: extra unseen goals have no demonstration
        ids = [t for t in self.targets.ids if self.targets.split[t] != "unseen"]
        prompts, info = expert_prompts(
            self._expert_store(), ids, prompt_len=self.s.prompt_len,
            prompt_start_min=self.s.prompt_start_min, return_scale=self.s.return_scale,
            strategy=self.cfg.expert_prompt_strategy, rng=rng, source=src)
        trajs = self._rollout(self.cfg.episodes, prompt=prompts, salt=6, task_ids=ids)
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

    K and k come from the run's `MetaDTConfig` (``window_len``, ``prompt_len``),
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
        training={k: getattr(cfg, k) for k in TRAINING_FLAGS if hasattr(cfg, k)},
        method=str(cfg.method),
        policy=policy,
        family=family,
        window_len=int(cfg.window_len),
        context_len=int(h),
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


def _evaluate_run(run_dir: str | Path, cfg: EvaluateConfig, out: str | Path | None,
                  progress: Progress | None, fresh: bool) -> dict[str, Any]:
    from metadt.data.dataset import Dataset
    from metadt.train.run import load_run

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / EVAL_FILE
    loaded = load_run(run_dir, device=cfg.device or None)
    dataset = Dataset.open(loaded.dataset_path)
    targets = targets_from_card(dataset.card, loaded.quality, cfg)
    family, targets = add_unseen_tasks(dataset.family, dataset.card, loaded.quality, cfg, targets)
    subject = subject_from_run(loaded, family)
    weights: dict[str, np.ndarray] = {}

    def probe_weights() -> np.ndarray:
        from metadt.evaluate.world_model_report import fit_probe

        if "w" not in weights:
            weights["w"] = fit_probe(subject.world_model, dataset)
        return weights["w"]

    ev = Evaluator(subject, cfg, targets,
                   expert_store=lambda: dataset.store(cfg.expert_quality),
                   probe_weights=probe_weights if subject.world_model is not None else None,
                   progress=progress)
    # resume the settings of the same evaluation; refuse another one's results
    identity = eval_identity(cfg, subject.method, subject.seed)
    results = None if fresh else results_dir(out, identity).check(identity)
    if results is None:
        results = ev.header()
    results["run"] = str(run_dir)
    results["dataset"] = str(loaded.dataset_path)
    results["quality"] = str(loaded.quality)
    results["provenance"] = provenance(str(subject.device))
    return ev.run(results, save=lambda r: atomic_write_json(out, r))


def is_complete(path: str | Path, cfg: EvaluateConfig, method: str) -> bool:
    """True if `path` holds results of every setting `cfg` asks of `method` (the same
    evaluation: `results_dir`)."""
    identity = eval_identity(cfg, method)
    rd = results_dir(path, identity)
    if not rd.matches(identity):
        return False
    res = rd.stored() or {}
    return all(s in res.get("settings", {}) for s in cfg.settings_for(method))


def training_return_probe(data: str | Path) -> Callable[[Any, Any, Any], float]:
    """The return-during-training hook of `metadt.train.meta_dt.train_meta_dt` (config field
    ``train_eval_every``): ``probe(model, world_model, cfg)`` runs one zero-shot episode
    (no prompt, z online from the policy's own context as in evaluation) on each of the
    dataset's first ``cfg.train_eval_tasks`` test tasks, with the task's max return in
    ``cfg.quality`` as target, and returns the mean return. Its env seeds are fixed, so
    successive values differ only by the policy."""
    from metadt.data.dataset import Dataset

    ds = Dataset.open(data)

    def probe(model: Any, world_model: Any, cfg: Any) -> float:
        import torch

        ids = [int(t) for t in ds.card.test_ids][: cfg.train_eval_tasks]
        targets = [float(ds.card.max_return(t, cfg.quality)) for t in ids]
        h = int(getattr(world_model, "context_len", 0) or 0) if world_model is not None else 0
        device = next(model.parameters()).device
        with torch.no_grad():
            trajs = rollout(model, ds.family, ids, target_returns=targets,
                            window_len=cfg.window_len, context_len=h, return_scale=float(cfg.return_scale),
                            world_model=world_model, seed=int(cfg.seed) + 1_000_003,
                            device=device)
        return float(np.mean(trajs.returns))

    return probe
