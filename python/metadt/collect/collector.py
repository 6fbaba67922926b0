"""`metadt collect`: train SAC agents and build datasets.

``sac_mode="per-task"`` trains one SAC agent per task (as one ensemble);
``"task-conditioned"`` trains one agent for every task whose input is the
observation and the task's features (`TaskConditionedSAC`; one pooled replay
memory; its checkpoints are folded into per-task actors, so every phase after
training is the same code for both modes).

Phases, each resumable (state under ``DIR/.work``, every file written
atomically, finished work never redone):

1. **train**: the batched SAC ensemble runs ``steps_per_task`` env steps in
   every task at once. Policy checkpoints go to ``.work/checkpoints`` every
   ``checkpoint_every`` steps; every ``resume_every`` steps (at an episode
   boundary) the whole training state (weights, optimizers, replay memories,
   RNG states, counters) is saved to ``.work/train`` as one atomic directory.
   A rerun continues from the last saved state and gives the same result as
   an uninterrupted run.
2. **evaluate**: each checkpoint is scored per task (mean return of
   ``eval_episodes`` stochastic episodes) and a uniform-random policy gives
   the random return; one JSON file per checkpoint in ``.work/eval``.
3. **choose and roll out**: expert = the final checkpoint; medium (per task) =
   the checkpoint whose evaluation return is closest to the midpoint of the
   random return and the final checkpoint's return (protocol section 2).
   ``episodes_per_task`` episodes per task of each are rolled out with the
   stochastic policy, and as many with a uniform-random policy (the ``random``
   quality), and saved to ``.work/rollouts``.
4. **write**: the ``expert``, ``medium``, ``random`` and ``mixed`` stores (mixed = the
   first ``mixed_medium_fraction`` share of each task's medium episodes and
   the first rest of its expert episodes) and, last, ``card.json``.

A directory with ``card.json`` is complete; a rerun then does nothing. The
directory is a :class:`metadt.rundir.RunDir` (:func:`collection_dir`): its identity
(config, seed, tasks) is ``.work/config.json``, compared minus
:data:`COLLECT_RUNTIME_FIELDS`; another collection's directory is refused.

The training state and the policy checkpoints are tensor files
(:mod:`metadt.tensorfile`: safetensors + JSON, SHA-256 checked), the replay
memories TrajectoryStores (CRC-32 checked on load): nothing is unpickled, and a
damaged file is refused with a message saying what to delete. Work files of
older metadt versions (``state.pt``, ``step_*.pt``) are refused the same way.

Under ``torchrun`` (docs/distributed.md) the tasks are split across ranks in
contiguous blocks: rank ``r`` runs phases 1-3 for its block in
``.work/rank-r-of-W`` (its own SAC ensemble, checkpoints, evaluations and
rollouts, each file atomic), then rank 0 merges the parts and writes the stores
and the one card. Every random stream of a block is the slice of the whole
run's stream (noise is drawn for all tasks and sliced; env and replay seeds are
per global task index), so the dataset equals the one-process dataset.
Progress is reported through ``progress(event: dict)``; events have a
``"phase"`` key (``train``, ``evaluate``, ``rollout``, ``write``, ``done``) and
phase-specific counters (see `collect`).
"""
from __future__ import annotations

import io
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from metadt.collect.replay import DEFAULT_LAYOUT, Replay
from metadt.collect.rollout import Episodes, Roller, policy_act_fn, random_act_fn
from metadt import distributed as dist
from metadt.collect.sac import (PolicyParams, SACEnsemble, TaskConditionedSAC,
                                feature_normalizer, resolve_device)
from metadt.config.base import check_seed
from metadt.config.collect import CollectConfig
from metadt.data.dataset import QUALITIES, Dataset, DatasetCard, write_dataset
from metadt import tensorfile
from metadt.provenance import provenance
from metadt.runtime import to_numpy, to_torch, torch_threads
# the independent random streams of a run and their seeds (derived in metadt.seeding)
from metadt.seeding import (STREAM_ACT as _ACT, STREAM_ENV as _ENV,  # noqa: F401
                            STREAM_EVAL as _EVAL, STREAM_RANDOM as _RANDOM,
                            STREAM_ROLLOUT as _ROLLOUT, STREAM_ROLLOUT_NOISE as _ROLLOUT_NOISE,
                            STREAM_SAMPLE as _SAMPLE, chunk_seed, stream_seed as _sub_seed)
from metadt.fileio import (atomic_directory, atomic_write_bytes, atomic_write_checked_json,
                           atomic_write_json, read_checked_json, read_file_bytes, read_json,
                           recover_directory)
from metadt.rundir import RunDir

Progress = Callable[[dict[str, Any]], None]
WORK = ".work"

STATE_KIND = "metadt-collect-state"
POLICY_KIND = "metadt-policy"


def _emit(progress: Progress | None, **event: Any) -> None:
    if progress is not None:
        progress(event)


def build_family(cfg: CollectConfig):
    from metadt.envs import make_family

    return make_family(cfg.family, seed=cfg.family_seed, num_tasks=cfg.num_tasks,
                       num_train=cfg.num_train)


def checkpoint_steps(cfg: CollectConfig) -> list[int]:
    """Env steps per task at which policy checkpoints are saved (the last is the final one)."""
    steps = list(range(cfg.checkpoint_every, cfg.steps_per_task + 1, cfg.checkpoint_every))
    if not steps or steps[-1] != cfg.steps_per_task:
        steps.append(cfg.steps_per_task)
    return steps


def choose_medium(eval_returns: Mapping[int, np.ndarray], random_returns: np.ndarray,
                  final_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per task, the checkpoint closest to the midpoint of random and final returns.

    ``eval_returns`` maps checkpoint step -> per-task mean returns. The final
    checkpoint is not a candidate (unless it is the only one). Returns the
    chosen steps ``[N]`` and the midpoints ``[N]``.
    """
    final = np.asarray(eval_returns[final_step], dtype=np.float64)
    mid = (np.asarray(random_returns, dtype=np.float64) + final) / 2.0
    candidates = [s for s in sorted(eval_returns) if s != final_step] or [final_step]
    table = np.stack([np.asarray(eval_returns[s], dtype=np.float64) for s in candidates])
    best = np.abs(table - mid[None, :]).argmin(axis=0)
    return np.asarray(candidates, dtype=np.int64)[best], mid


# --------------------------------------------------------------------------
# the work directory


class WorkDir:
    """Files of a collection in progress (``DIR/.work``; its identity ``config.json`` is
    the run directory's, :func:`collection_dir`)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / WORK

    @property
    def train_state(self) -> Path:
        return self.root / "train"

    def checkpoint(self, step: int) -> Path:
        return self.root / "checkpoints" / f"step_{step:09d}.safetensors"

    def evaluation(self, name: str) -> Path:
        return self.root / "eval" / f"{name}.json"

    def rollout(self, quality: str) -> Path:
        return self.root / "rollouts" / f"{quality}.npz"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_episodes(path: Path) -> Episodes:
    """Rolled-out episodes (``.npz``: each member's CRC-32 is checked as it is read)."""
    try:
        with np.load(io.BytesIO(read_file_bytes(path, what="rollout file")), allow_pickle=False) as z:
            return Episodes(obs=z["obs"], actions=z["actions"], rewards=z["rewards"],
                            next_obs=z["next_obs"], terminals=z["terminals"])
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: damaged rollouts ({type(exc).__name__}: {exc}); delete it "
                         f"(the rollouts are redone)") from None


class _Timer:
    def __init__(self, work: WorkDir) -> None:
        self.work = work
        try:
            data = read_json(work.timings) if work.timings.is_file() else {}
        except ValueError:
            data = {}
        # phase timings are informational: a damaged file restarts them
        self.data: dict[str, float] = ({k: float(v) for k, v in data.items()
                                        if isinstance(v, (int, float))}
                                       if isinstance(data, dict) else {})

    def add(self, phase: str, seconds: float) -> None:
        self.data[phase] = round(self.data.get(phase, 0.0) + seconds, 3)
        atomic_write_json(self.work.timings, self.data)


# --------------------------------------------------------------------------
# phase 1: training


def _rng_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state()


def _block(family: Any, block: range | None) -> tuple[range, bool]:
    """The tasks of this process and whether they are a strict part of the family's."""
    n = family.num_tasks
    blk = range(n) if block is None else block
    return blk, len(blk) != n


def _noise(gen: torch.Generator, n_total: int, shape: tuple[int, ...], blk: range,
           device: torch.device) -> torch.Tensor:
    """The whole run's Gaussian draw ``[n_total, *shape]``, rows of the block."""
    return torch.randn((n_total, *shape), generator=gen, device=device)[blk.start:blk.stop]


@torch.no_grad()
def _act_noise(policy: PolicyParams, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`PolicyParams.act` (stochastic) with given noise ``[N, B, act]``, for ``obs [N, B, obs]``."""
    action, _, _ = policy.sample(obs, noise=noise)
    return torch.maximum(torch.minimum(action, policy.action_high), policy.action_low)


def _block_act_fn(policy: PolicyParams, gen: torch.Generator, n_total: int, blk: range):
    """`policy_act_fn` of a block of tasks drawing the whole run's noise."""

    def act(obs: np.ndarray) -> np.ndarray:
        x = to_torch(obs, policy.device, np.float32)
        noise = _noise(gen, n_total, tuple(x.shape[1:-1]) + (policy.act_dim,), blk, x.device)
        return to_numpy(_act_noise(policy, x, noise))

    return act


def _noisy_fn(act: Any, noise: float, low: np.ndarray, high: np.ndarray,
              rng: np.random.Generator, n_total: int, blk: range):
    """`act` plus Gaussian noise of std ``noise x (high - low) / 2`` (the Roller clips),
    drawing the whole run's numbers so a block of tasks reproduces them."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    std = float(noise) * (high - low) / 2.0

    def noisy(obs: np.ndarray) -> np.ndarray:
        a = np.asarray(act(obs), dtype=np.float64)
        size = (n_total,) + obs.shape[1:-1] + low.shape
        return a + rng.normal(size=size)[blk.start:blk.stop] * std

    return noisy


def _block_random_fn(low: np.ndarray, high: np.ndarray, rng: np.random.Generator,
                     n_total: int, blk: range):
    """`random_act_fn` of a block of tasks drawing the whole run's numbers."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)

    def act(obs: np.ndarray) -> np.ndarray:
        size = (n_total,) + obs.shape[1:-1] + low.shape
        return rng.uniform(low, high, size=size)[blk.start:blk.stop]

    return act


def train(cfg: CollectConfig, family: Any, work: WorkDir, seed: int, device: torch.device,
          progress: Progress | None = None, block: range | None = None) -> dict[str, Any]:
    """Run (or resume) the SAC phase; returns the final training summary.

    ``block``: train only the agents of these tasks (a rank's share), exactly as the
    whole run trains them.
    """
    blk, part = _block(family, block)
    n_total = family.num_tasks
    n, od, ad, horizon = len(blk), family.obs_dim, family.act_dim, family.horizon
    total = int(cfg.steps_per_task)
    ckpt_steps = set(checkpoint_steps(cfg))
    low, high = np.asarray(family.action_low), np.asarray(family.action_high)

    ens, layout = _make_agent(cfg, family, blk, device, seed)
    pooled = isinstance(ens, TaskConditionedSAC)
    act_gen = torch.Generator(device=device).manual_seed(_sub_seed(seed, _ACT))
    np_rng = np.random.default_rng(_sub_seed(seed, _ACT))
    state: dict[str, Any] = {"step": 0, "episodes": 0, "credit": 0.0, "returns": []}
    recover_directory(work.train_state)  # a commit killed between its renames
    state_file = work.train_state / "state.safetensors"
    hint = f"delete {work.train_state} to restart the SAC phase from step 0"
    if (work.train_state / "state.pt").is_file():
        raise ValueError(f"{work.train_state}: SAC state in metadt's old pickle format, which is "
                         f"no longer loaded (unpickling a file can run code); {hint}")
    if state_file.is_file():
        saved = tensorfile.load(state_file, STATE_KIND, hint=hint)
        try:
            ens.load_state_dict(saved["ensemble"])
            act_gen.set_state(saved["act_gen"])
            np_rng.bit_generator.state = saved["np_rng"]
            state = saved["counters"]
            replay = Replay.load(work.train_state / "replay", n, od, ad, cfg.replay_capacity,
                                 saved["layout"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OSError) as exc:
            raise ValueError(f"{work.train_state}: unusable SAC state ({type(exc).__name__}: "
                             f"{exc}); {hint}") from None
    else:
        replay = Replay(n, od, ad, cfg.replay_capacity, layout)
    if state["step"] >= total:
        return state

    env = family.make_vector_env([family.tasks[i] for i in blk])
    env_seed = _sub_seed(seed, _ENV)
    sample_seed = _sub_seed(seed, _SAMPLE)
    step = int(state["step"])
    last_saved = step
    losses: dict[str, float] = {}
    _emit(progress, phase="train", step=step, total=total, tasks=n, updates=ens.updates,
          agents=1 if pooled else n, recent_return=_recent(state["returns"]))

    def save_state() -> None:
        with atomic_directory(work.train_state) as tmp:
            (tmp / "state.safetensors").write_bytes(tensorfile.dumps(
                {"ensemble": ens.state_dict(), "act_gen": _rng_state(act_gen),
                 "np_rng": np_rng.bit_generator.state, "counters": state,
                 "layout": replay.layout}, STATE_KIND))
            replay.save(tmp / "replay")

    try:
        while step < total:
            # one episode in every task
            obs, _ = env.reset(seed=chunk_seed(env_seed, state["episodes"], n_total, blk.start))
            ep_ret = np.zeros(n)
            for t in range(horizon):
                if step < cfg.start_steps:
                    actions = np_rng.uniform(low, high, size=(n_total, ad))[blk.start:blk.stop]
                elif part:
                    o = to_torch(obs, device, np.float32).unsqueeze(1)
                    noise = _noise(act_gen, n_total, (1, ad), blk, device)
                    actions = to_numpy(_act_noise(ens.policy, o, noise).squeeze(1), np.float64)
                else:
                    o = to_torch(obs, device, np.float32)
                    actions = to_numpy(ens.act(o, generator=act_gen), np.float64)
                nobs, rew, term, trunc, _ = env.step(actions)
                done = bool(term.any() or trunc.any() or t == horizon - 1)
                replay.add(obs, actions, rew, nobs, term, done)
                ep_ret += rew
                obs = nobs
                step += 1
                if step >= cfg.update_after:
                    state["credit"] += cfg.updates_per_step
                    while state["credit"] >= 1.0:
                        state["credit"] -= 1.0
                        batch = (replay.sample_pooled(cfg.sac.batch_size, sample_seed,
                                                      ens.updates, device) if pooled else
                                 replay.sample(cfg.sac.batch_size, sample_seed, ens.updates,
                                               device, task_offset=blk.start))
                        if part:  # the whole run's draws: next-action noise, then policy noise
                            bs = (cfg.sac.batch_size, ad)
                            nz_next = _noise(act_gen, n_total, bs, blk, device)
                            nz_pi = _noise(act_gen, n_total, bs, blk, device)
                            out = ens.update(batch, nz_next, nz_pi)
                        else:
                            out = ens.update(batch, generator=act_gen)
                        losses = {k: float(v.mean()) for k, v in out.items()}
                if step in ckpt_steps and not work.checkpoint(step).is_file():
                    tensorfile.save(work.checkpoint(step), ens.policy_snapshot().state_dict(),
                                    POLICY_KIND)
                if step >= total:
                    break
            state["episodes"] += 1
            state["returns"].append([float(x) for x in ep_ret])
            state["step"] = step
            state["updates"] = ens.updates
            if step - last_saved >= cfg.resume_every or step >= total:
                save_state()
                last_saved = step
            _emit(progress, phase="train", step=step, total=total, tasks=n,
                  updates=ens.updates, agents=1 if pooled else n,
                  recent_return=_recent(state["returns"]), **losses)
    finally:
        env.close()
    return state


def _make_agent(cfg: CollectConfig, family: Any, blk: range, device: torch.device,
                seed: int) -> tuple[SACEnsemble | TaskConditionedSAC, str]:
    """The learner of ``cfg.sac_mode`` for the tasks ``blk`` and its replay layout.

    ``per-task``: an ensemble of one agent per task (a block gets the whole run's initial
    weights of its agents). ``task-conditioned``: one agent for all the family's tasks
    whose input is obs ⊕ the task features (`task_conditioning`); its replay is one pooled
    memory. It is never split by task (`_train_part`).
    """
    n_total, od, ad = family.num_tasks, family.obs_dim, family.act_dim
    low, high = np.asarray(family.action_low), np.asarray(family.action_high)
    if cfg.sac_mode == "task-conditioned":
        if len(blk) != n_total:
            raise ValueError("a task-conditioned agent trains on every task: it cannot be "
                             "split by task")
        features, mean, scale = task_conditioning(family)
        return (TaskConditionedSAC(features, mean, scale, od, ad, low, high, cfg.sac,
                                   device=device, seed=seed), "shared")
    ens = SACEnsemble(n_total, od, ad, low, high, cfg.sac, device=device, seed=seed)
    if len(blk) != n_total:  # the whole run's initial weights of these agents
        ens = ens.select(list(blk))
    return ens, DEFAULT_LAYOUT


def task_conditioning(family: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a task-conditioned agent sees of the tasks: the family's `task_features` of
    every task ``[N, F]`` and the mean/scale standardizing them (fitted on the training
    tasks only)."""
    features = family.task_feature_matrix()
    mean, scale = feature_normalizer(features, family.train_ids)
    return features, mean, scale


def _recent(returns: list[list[float]]) -> float | None:
    return None if not returns else float(np.mean(returns[-1]))


# --------------------------------------------------------------------------
# phase 2: evaluation


def _load_policy(path: Path, device: torch.device) -> PolicyParams:
    hint = (f"delete {path.parent.parent} to restart this collection (its SAC phase cannot "
            f"recreate a lost policy checkpoint)")
    legacy = path.with_suffix(".pt")
    if not path.is_file() and legacy.is_file():
        raise ValueError(f"{legacy}: a policy checkpoint in metadt's old pickle format, which "
                         f"is no longer loaded (unpickling a file can run code); {hint}")
    state = tensorfile.load(path, POLICY_KIND, hint=hint)
    try:
        return PolicyParams.from_state_dict(state).to(device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ValueError(f"{path}: unusable policy checkpoint ({type(exc).__name__}: {exc}); "
                         f"{hint}") from None


def evaluate(cfg: CollectConfig, family: Any, work: WorkDir, seed: int, device: torch.device,
             progress: Progress | None = None, block: range | None = None
             ) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per-checkpoint per-task mean returns, and the random policy's per-task returns
    (of the tasks of ``block``, as the whole run computes them)."""
    blk, part = _block(family, block)
    n_total = family.num_tasks
    tasks = [family.tasks[i] for i in blk]
    steps = checkpoint_steps(cfg)
    todo = [s for s in steps if not work.evaluation(f"step_{s:09d}").is_file()]
    rand_file = work.evaluation("random")
    total = len(steps) + 1
    done = total - len(todo) - (0 if rand_file.is_file() else 1)
    _emit(progress, phase="evaluate", done=done, total=total)
    if todo or not rand_file.is_file():
        par = max(1, min(cfg.rollout_parallel, max(cfg.eval_episodes, cfg.random_episodes)))
        seeds = {"seed_offset": blk.start * par, "seed_stride": n_total * par}
        with Roller(family, tasks, par) as roller:
            if not rand_file.is_file():
                rng = np.random.default_rng(_sub_seed(seed, _RANDOM))
                rand_act = (_block_random_fn(family.action_low, family.action_high, rng, n_total,
                                             blk) if part else
                            random_act_fn(family.action_low, family.action_high, rng))
                eps = roller.run(rand_act, cfg.random_episodes, seed=_sub_seed(seed, _RANDOM),
                                 **seeds)
                atomic_write_checked_json(rand_file, {"returns": eps.returns.mean(1).tolist(),
                                                      "episodes": cfg.random_episodes})
                done += 1
                _emit(progress, phase="evaluate", done=done, total=total, what="random")
            for s in todo:
                policy = _load_policy(work.checkpoint(s), device)
                gen = torch.Generator(device=device).manual_seed(_sub_seed(seed + s, _EVAL))
                act = _block_act_fn(policy, gen, n_total, blk) if part else \
                    policy_act_fn(policy, gen)
                eps = roller.run(act, cfg.eval_episodes, seed=_sub_seed(seed + s, _EVAL), **seeds)
                atomic_write_checked_json(work.evaluation(f"step_{s:09d}"),
                                          {"step": s, "returns": eps.returns.mean(1).tolist(),
                                           "episodes": cfg.eval_episodes})
                done += 1
                _emit(progress, phase="evaluate", done=done, total=total, what=f"step {s}",
                      mean_return=float(eps.returns.mean()))
    return _read_evals(cfg, work, len(blk))


# --------------------------------------------------------------------------
# phase 3: rollouts

#: Qualities rolled out (mixed is assembled from medium and expert).
ROLLOUT_QUALITIES = ("expert", "medium", "random")


def rollouts(cfg: CollectConfig, family: Any, work: WorkDir, seed: int, device: torch.device,
             chosen: dict[str, np.ndarray], progress: Progress | None = None,
             block: range | None = None) -> dict[str, Episodes]:
    """Roll out ``episodes_per_task`` episodes per task for expert, medium and random
    (a uniform-random policy) of the tasks of ``block``, as the whole run rolls them out
    (``chosen``: the expert and medium checkpoint per block task)."""
    out: dict[str, Episodes] = {}
    blk, part = _block(family, block)
    n_total = family.num_tasks
    n = len(blk)
    for qi, quality in enumerate(ROLLOUT_QUALITIES):
        path = work.rollout(quality)
        if path.is_file():
            out[quality] = _load_episodes(path)
            _emit(progress, phase="rollout", quality=quality, episodes=cfg.episodes_per_task * n,
                  total=cfg.episodes_per_task * n)
            continue
        if quality == "random":  # uniform-random actions: the behaviour-free data
            rng = np.random.default_rng(_sub_seed(seed + qi, _ROLLOUT))
            act = (_block_random_fn(family.action_low, family.action_high, rng, n_total, blk)
                   if part else random_act_fn(family.action_low, family.action_high, rng))
        else:
            steps = chosen[quality]
            cache: dict[int, PolicyParams] = {}
            for s in sorted(set(int(x) for x in steps)):
                cache[s] = _load_policy(work.checkpoint(s), device)
            policy = PolicyParams.gather([cache[int(s)] for s in steps], list(range(n))) \
                if len(cache) > 1 else cache[int(steps[0])]
            gen = torch.Generator(device=device).manual_seed(_sub_seed(seed + qi, _ROLLOUT))
            act = (_block_act_fn(policy, gen, n_total, blk) if part
                   else policy_act_fn(policy, gen))
            if cfg.rollout_noise > 0:
                act = _noisy_fn(act, cfg.rollout_noise, family.action_low, family.action_high,
                                np.random.default_rng(_sub_seed(seed + qi, _ROLLOUT_NOISE)),
                                n_total, blk)
        done = 0
        _emit(progress, phase="rollout", quality=quality, episodes=0,
              total=cfg.episodes_per_task * n)

        def on_chunk(k: int, quality: str = quality) -> None:
            nonlocal done
            done += k * n
            _emit(progress, phase="rollout", quality=quality, episodes=done,
                  total=cfg.episodes_per_task * n)

        par = min(cfg.rollout_parallel, cfg.episodes_per_task)
        with Roller(family, [family.tasks[i] for i in blk], par) as roller:
            eps = roller.run(act, cfg.episodes_per_task, seed=_sub_seed(seed + qi, _ROLLOUT),
                             on_chunk=on_chunk, seed_offset=blk.start * par,
                             seed_stride=n_total * par)
        _save_npz(path, obs=eps.obs, actions=eps.actions, rewards=eps.rewards,
                  next_obs=eps.next_obs, terminals=eps.terminals)
        out[quality] = eps
    return out


def mixed_split(episodes_per_task: int, medium_fraction: float) -> tuple[int, int]:
    """(medium, expert) episode counts per task of the mixed dataset."""
    n_med = int(round(episodes_per_task * medium_fraction))
    return n_med, episodes_per_task - n_med


def build_stores(family: Any, episodes: dict[str, Episodes], n_medium: int,
                 n_expert: int) -> dict[str, Any]:
    """The expert, medium, random and mixed `TrajectoryStore`s (task id = index into
    family.tasks)."""
    from metadt import TrajectoryStore

    od, ad = family.obs_dim, family.act_dim
    stores = {q: TrajectoryStore(od, ad) for q in QUALITIES}
    n = family.num_tasks
    for quality in ROLLOUT_QUALITIES:
        eps = episodes[quality]
        for i in range(n):
            for e in range(eps.obs.shape[1]):
                stores[quality].add_episode(eps.obs[i, e], eps.actions[i, e], eps.rewards[i, e],
                                            next_obs=eps.next_obs[i, e], task=i,
                                            terminals=eps.terminals[i, e])
    for i in range(n):
        for quality, count in (("medium", n_medium), ("expert", n_expert)):
            eps = episodes[quality]
            for e in range(count):
                stores["mixed"].add_episode(eps.obs[i, e], eps.actions[i, e], eps.rewards[i, e],
                                            next_obs=eps.next_obs[i, e], task=i,
                                            terminals=eps.terminals[i, e])
    return stores


# --------------------------------------------------------------------------
# the whole thing


def collect(cfg: CollectConfig, out: str | Path, seed: int = 0,
            progress: Progress | None = None) -> Dataset:
    """Collect the datasets of ``cfg.family`` into ``out`` (resuming if started).

    Rerunning with the same config, seed and ``out`` continues an interrupted
    collection; a different config for an existing ``out`` is an error.
    Progress events (dicts, all with ``phase``):

    - ``train``: ``step``/``total`` (env steps per task), ``tasks``, ``updates``,
      ``recent_return`` (mean over tasks of the last episode), losses;
    - ``evaluate``: ``done``/``total`` (checkpoints + the random policy);
    - ``rollout``: ``quality``, ``episodes``/``total`` (over all tasks);
    - ``write`` and ``done`` (with ``path``).
    """
    cfg.validate()
    seed = check_seed(seed)
    with torch_threads(cfg.torch_threads):
        return _collect(cfg, Path(out), int(seed), progress)


def _collect(cfg: CollectConfig, out: Path, seed: int, progress: Progress | None) -> Dataset:
    ctx = dist.init()  # world size 1 unless launched by torchrun
    if ctx.distributed:
        return _collect_ranks(cfg, out, seed, progress, ctx)
    work = WorkDir(out)
    family = build_family(cfg)
    ds = _start(cfg, out, seed, family, work, progress)
    if ds is not None:
        return ds
    device = resolve_device(cfg.device)
    timer = _Timer(work)

    t0 = time.perf_counter()
    summary = train(cfg, family, work, seed, device, progress)
    timer.add("train", time.perf_counter() - t0)

    t0 = time.perf_counter()
    evals, random_returns = evaluate(cfg, family, work, seed, device, progress)
    timer.add("evaluate", time.perf_counter() - t0)

    final = cfg.steps_per_task
    medium_steps, midpoints = choose_medium(evals, random_returns, final)
    chosen = {"expert": np.full(family.num_tasks, final, dtype=np.int64), "medium": medium_steps}

    t0 = time.perf_counter()
    episodes = rollouts(cfg, family, work, seed, device, chosen, progress)
    timer.add("rollout", time.perf_counter() - t0)
    return _write(cfg, out, seed, family, work, device, timer, summary, evals, random_returns,
                  chosen, midpoints, episodes, progress)


def rank_work(out: Path, rank: int, world: int) -> WorkDir:
    """The work directory of rank ``rank`` of ``world`` (``DIR/.work/rank-r-of-W``)."""
    work = WorkDir(out)
    work.root = work.root / f"rank-{rank}-of-{world}"
    return work


def _collect_ranks(cfg: CollectConfig, out: Path, seed: int, progress: Progress | None,
                   ctx: dist.DistContext) -> Dataset:
    """Tasks split across ranks; rank 0 merges the parts and writes the dataset."""
    work = WorkDir(out)
    family = build_family(cfg)
    main = ctx.is_main()
    done = dist.main_first(lambda: _start(cfg, out, seed, family, work, progress) is not None,
                           ctx)
    if done:
        return Dataset.open(out)
    device = ctx.device(cfg.device)
    block = dist.shard(family.num_tasks, ctx.rank, ctx.world)
    mine = rank_work(out, ctx.rank, ctx.world)
    prog = progress if main else None
    timer = _Timer(work) if main else None
    t0 = time.perf_counter()
    summary = _train_part(cfg, family, work, mine, seed, device, prog, block, ctx)
    t1 = time.perf_counter()
    evaluate(cfg, family, mine, seed, device, prog, block)
    t2 = time.perf_counter()
    final = cfg.steps_per_task
    evals, random_returns = _read_evals(cfg, mine)
    medium_steps, _ = choose_medium(evals, random_returns, final)  # per task: block = whole
    chosen = {"expert": np.full(len(block), final, dtype=np.int64), "medium": medium_steps}
    rollouts(cfg, family, mine, seed, device, chosen, prog, block)
    t3 = time.perf_counter()
    dist.barrier()  # every part is on disk
    ds = None
    if main:
        timer.add("train", t1 - t0)
        timer.add("evaluate", t2 - t1)
        timer.add("rollout", t3 - t2)
        parts = [rank_work(out, r, ctx.world) for r in range(ctx.world)]
        read = [_read_evals(cfg, w) for w in parts]
        evals = {s: np.concatenate([e[s] for e, _ in read]) for s in read[0][0]}
        random_returns = np.concatenate([r for _, r in read])
        medium_steps, midpoints = choose_medium(evals, random_returns, final)
        chosen = {"expert": np.full(family.num_tasks, final, dtype=np.int64),
                  "medium": medium_steps}
        episodes = {q: _concat_episodes([_load_episodes(w.rollout(q)) for w in parts])
                    for q in ROLLOUT_QUALITIES}
        ds = _write(cfg, out, seed, family, work, device, timer, summary, evals, random_returns,
                    chosen, midpoints, episodes, progress)
        if not cfg.keep_replay:
            for w in parts:
                shutil.rmtree(w.train_state, ignore_errors=True)
    dist.barrier()  # the dataset is complete
    return ds if ds is not None else Dataset.open(out)


def _train_part(cfg: CollectConfig, family: Any, work: WorkDir, mine: WorkDir, seed: int,
                device: torch.device, progress: Progress | None, block: range,
                ctx: dist.DistContext) -> dict[str, Any]:
    """Phase 1 of a rank. Per-task agents: the rank trains its block's agents in ``mine``.
    A task-conditioned agent is one learner of every task: rank 0 trains it (in ``work``,
    as one process does; the other ranks wait), then every rank copies its block's slice
    of each checkpoint into ``mine`` for its evaluations and rollouts."""
    if cfg.sac_mode != "task-conditioned":
        return train(cfg, family, mine, seed, device, progress, block)
    import datetime

    import torch.distributed as tdist

    # the other ranks wait as long as the training takes: a barrier of a group whose
    # timeout is not the default group's 30 minutes (torchrun ends every rank if one dies)
    waiting = tdist.new_group(backend="gloo", timeout=datetime.timedelta(days=7))
    result: list[Any] = [None, None]
    if ctx.is_main():
        try:
            result[0] = train(cfg, family, work, seed, device, progress)
        except BaseException as exc:  # raised on every rank by main_first below
            result[1] = exc
    tdist.barrier(group=waiting)

    def outcome() -> dict[str, Any]:
        if result[1] is not None:
            raise result[1]
        return result[0]

    summary = dist.main_first(outcome, ctx)
    for step in checkpoint_steps(cfg):
        if not mine.checkpoint(step).is_file():
            policy = _load_policy(work.checkpoint(step), torch.device("cpu"))
            tensorfile.save(mine.checkpoint(step), policy.select(list(block)).state_dict(),
                            POLICY_KIND)
    return summary


def _read_evals(cfg: CollectConfig, work: WorkDir, n: int | None = None
                ) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per-checkpoint and random per-task returns from ``.work/eval`` (checksums and
    shapes checked: ``n`` tasks when given)."""
    def returns(name: str) -> np.ndarray:
        path = work.evaluation(name)
        hint = f"delete {path} (it is recomputed)"
        data = read_checked_json(path, hint)
        try:
            out = np.asarray(data["returns"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: no per-task returns; {hint}") from None
        if out.ndim != 1 or (n is not None and len(out) != n) or not np.isfinite(out).all():
            raise ValueError(f"{path}: returns of the wrong shape or not finite; {hint}")
        return out

    evals = {s: returns(f"step_{s:09d}") for s in checkpoint_steps(cfg)}
    return evals, returns("random")


def _concat_episodes(parts: list[Episodes]) -> Episodes:
    return Episodes(**{k: np.concatenate([getattr(p, k) for p in parts])
                       for k in ("obs", "actions", "rewards", "next_obs", "terminals")})


COLLECT_RUNTIME_FIELDS = frozenset({"config.device", "config.torch_threads", "config.keep_replay"})
"""Fields of a collection's identity that say how it executes, not what it computes: a
collection may resume (or be rerun finished) with other values."""


def collection_dir(out: Path) -> RunDir:
    """The run directory of a collection: identity ``.work/config.json`` (config, seed,
    tasks), finished when ``card.json`` exists (written last by `write_dataset`)."""
    return RunDir(out, "collection", identity_file=f"{WORK}/config.json",
                  markers=("card.json",), runtime=COLLECT_RUNTIME_FIELDS, exclusive=True,
                  hint="rerun with the same settings to resume, or choose another --out")


def _start(cfg: CollectConfig, out: Path, seed: int, family: Any, work: WorkDir,
           progress: Progress | None) -> Dataset | None:
    """The finished dataset of ``out`` (a rerun), or None after checking/recording the
    identity of an unfinished collection."""
    identity = {"config": cfg.to_dict(), "seed": int(seed), "family": family.to_json()}
    run = collection_dir(out)
    if run.finished:
        ds = Dataset.open(out)
        made = ds.card.collection
        run.check({"config": identity["config"], "seed": identity["seed"]},
                  stored={"config": made.get("config"), "seed": made.get("seed")},
                  source=out / "card.json")
        _emit(progress, phase="done", path=str(out), already=True)
        return ds
    run.start(identity)
    return None


def _mode_record(cfg: CollectConfig, family: Any) -> dict[str, Any]:
    """The card's record of how the agents were trained (``sac_mode``; for one
    task-conditioned agent also what it saw of the tasks)."""
    rec: dict[str, Any] = {"sac_mode": cfg.sac_mode}
    if cfg.sac_mode == "task-conditioned":
        _, mean, scale = task_conditioning(family)
        rec["task_conditioning"] = {
            "input": "observation + standardized task_features of the task (the stored "
                     "observations are the env's only)",
            "feature_dim": int(mean.shape[0]), "mean": mean.tolist(), "scale": scale.tolist(),
            "fitted_on": "train tasks", "trained_on": "every task of the card (train and test)",
            "agents": 1}
    return rec


def _write(cfg: CollectConfig, out: Path, seed: int, family: Any, work: WorkDir,
           device: torch.device, timer: _Timer, summary: dict[str, Any],
           evals: dict[int, np.ndarray], random_returns: np.ndarray,
           chosen: dict[str, np.ndarray], midpoints: np.ndarray,
           episodes: dict[str, Episodes], progress: Progress | None) -> Dataset:
    """Phase 4: the stores and, last, the card."""
    t0 = time.perf_counter()
    _emit(progress, phase="write", path=str(out))
    n_med, n_exp = mixed_split(cfg.episodes_per_task, cfg.mixed_medium_fraction)
    stores = build_stores(family, episodes, n_med, n_exp)

    def ckpt_record(quality: str) -> dict[str, Any]:
        return {str(i): {"step": int(chosen[quality][i]),
                         "eval_return": float(evals[int(chosen[quality][i])][i])}
                for i in range(family.num_tasks)}

    qualities = {
        "expert": {"episodes_per_task": cfg.episodes_per_task, "checkpoints": ckpt_record("expert"),
                   "rule": "final checkpoint"},
        "medium": {"episodes_per_task": cfg.episodes_per_task, "checkpoints": ckpt_record("medium"),
                   "rule": "checkpoint whose evaluation return is closest to the midpoint of "
                           "the random return and the final checkpoint's return",
                   "midpoints": {str(i): float(m) for i, m in enumerate(midpoints)}},
        "random": {"episodes_per_task": cfg.episodes_per_task,
                   "rule": "uniform-random actions in the action box (behaviour-free data: "
                           "the world model's default training data includes it)"},
        "mixed": {"episodes_per_task": n_med + n_exp,
                  "composition": {"medium": n_med, "expert": n_exp},
                  "rule": f"first {n_med} medium and first {n_exp} expert episodes of each task",
                  "checkpoints": {"medium": ckpt_record("medium"),
                                  "expert": ckpt_record("expert")}},
    }
    from metadt import __version__

    timings = dict(timer.data)
    card = DatasetCard(
        family=family.name, family_seed=int(cfg.family_seed), obs_dim=family.obs_dim,
        act_dim=family.act_dim, horizon=family.horizon, tasks=[dict(t) for t in family.tasks],
        train_ids=list(family.train_ids), test_ids=list(family.test_ids), qualities=qualities,
        random_returns={str(i): float(r) for i, r in enumerate(random_returns)},
        collection={
            "preset": cfg.preset, "seed": int(seed), "config": cfg.to_dict(),
            **_mode_record(cfg, family),
            "budget": {"steps_per_task": cfg.steps_per_task,
                       "env_steps_total": cfg.steps_per_task * family.num_tasks,
                       "updates": int(summary.get("updates", 0)) or None},
            "random_episodes": cfg.random_episodes, "eval_episodes": cfg.eval_episodes,
            "checkpoint_evals": {str(s): [float(x) for x in evals[s]] for s in sorted(evals)},
            "family_options": dict(family.options), "device": str(device),
            "timings_s": timings, "metadt_version": __version__,
            "provenance": provenance(str(device)),
        },
        source="metadt collect",
    )
    ds = write_dataset(out, card, stores)
    timer.add("write", time.perf_counter() - t0)
    if not cfg.keep_replay:
        shutil.rmtree(work.train_state, ignore_errors=True)
    _emit(progress, phase="done", path=str(out), already=False)
    return ds


__all__ = ["collect", "choose_medium", "checkpoint_steps", "mixed_split", "build_stores",
           "train", "evaluate", "rollouts", "WorkDir", "collection_dir", "COLLECT_RUNTIME_FIELDS"]
