"""Prompts for evaluation: from the agent's own trajectories, or from expert data.

Few-shot (protocol section 6): the agent first collects a few episodes on
each task (the evaluator's rounds: zero-shot, then prompted by its best so
far); of its OWN trajectories the best by return is kept, the world
model scores every step of it, and the complementary segment (largest summed
error over k steps, start in [h, T-k]) becomes the prompt. No demonstration
is involved: `own_prompts` takes nothing but the agent's trajectories (and
the world model), so no dataset episode can reach the prompt.

Scoring goes through the trainer's own code so evaluation selects segments
exactly as training did: the kept trajectories are put in a small
`TrajectoryStore`, `metadt.train.prompts.attach_step_errors` attaches the
per-step errors as a column, and the store's `best_segments` picks the
argmax segment per task.

Prompt-DT's expert prompt (`expert_prompts`) is a segment of the dataset's
best expert episode of the task, as Prompt-DT was published.

Segment starts follow the store's one short-episode rule
(`metadt.data.segment_range`), and the prompt arrays (return-to-go divided
by the return scale, padding) are built by the store
(`TrajectoryStore.prompt_segments`), as the trainer's sampled prompts are.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from metadt.config.meta_dt import PROMPT_STRATEGIES, SCORED_STRATEGIES
from metadt.data.store import TrajectoryStore, segment_range
from metadt.evaluate.history import Prompt
from metadt.evaluate.rollout import Trajectories

Scorer = Callable[[Any, Any, str], None]
"""``scorer(store, world_model, column)`` attaches per-step errors as a column."""


def default_scorer(store: Any, world_model: Any, column: str) -> None:
    from metadt.train.prompts import attach_step_errors

    attach_step_errors(store, world_model, column=column)


def start_range(T: int, length: int, start_min: int) -> tuple[int, int]:
    """Lowest and highest candidate start of a length-`length` segment of a T-step episode:
    the store's short-episode rule (`segment_range`; (0, 0) for an episode shorter than
    `length`, whose prompt is then the whole episode, left-padded)."""
    r = segment_range(int(T), int(length), max(int(start_min), 0))
    return (0, 0) if r is None else (int(r[0]), int(r[1]))


def kept_store(trajs: Trajectories, rows: dict[int, int]) -> tuple[TrajectoryStore, dict[int, int]]:
    """The kept rows (``rows[task] = row in trajs``) as the episodes of a small store:
    ``(store, {task: episode index})``."""
    store = TrajectoryStore(int(trajs.obs.shape[2]), int(trajs.actions.shape[2]))
    episode_of_task: dict[int, int] = {}
    for t, r in rows.items():
        episode_of_task[t] = int(store.add_episode(
            np.ascontiguousarray(trajs.obs[r], dtype=np.float32),
            np.ascontiguousarray(trajs.actions[r], dtype=np.float32),
            np.ascontiguousarray(trajs.rewards[r], dtype=np.float32),
            next_obs=np.ascontiguousarray(trajs.next_obs[r], dtype=np.float32),
            task=int(t)))
    return store, episode_of_task


def _starts_from_store(segs: Mapping[str, Any], task_ids: list[int],
                       episode_of_task: dict[int, int]) -> dict[int, int]:
    """`best_segments(per="task")` output ({"keys", "episodes", "starts", "scores"}) ->
    {task: start}, checking each segment lies in that task's own kept episode."""
    out: dict[int, int] = {}
    for key, ep, start in zip(np.asarray(segs["keys"]).tolist(),
                              np.asarray(segs["episodes"]).tolist(),
                              np.asarray(segs["starts"]).tolist()):
        if episode_of_task.get(int(key)) != int(ep):
            raise ValueError(f"best_segments gave episode {ep} for task {key}")
        out[int(key)] = int(start)
    missing = [t for t in task_ids if t not in out]
    if missing:
        raise ValueError(f"best_segments returned no segment for task(s) {missing}")
    return out


def select_starts(trajs: Trajectories, rows: dict[int, int], *, prompt_len: int, prompt_start_min: int,
                  strategy: str, rng: np.random.Generator, world_model: Any = None,
                  column: str = "wm_error", scorer: Scorer | None = None,
                  kept: tuple[TrajectoryStore, dict[int, int]] | None = None) -> dict[int, int]:
    """Segment start per task for the kept rows (``rows[task] = row in trajs``; `kept` = their
    `kept_store`, built here when not given)."""
    length = prompt_len  # the segments' (generic) name below
    T = int(trajs.rewards.shape[1])
    lo, hi = start_range(T, length, prompt_start_min)
    tasks = list(rows)
    if strategy == "random":
        return {t: int(rng.integers(lo, hi + 1)) for t in tasks}
    if strategy == "last":
        return {t: hi for t in tasks}
    if strategy not in SCORED_STRATEGIES:
        raise ValueError(f"unknown prompt strategy {strategy!r} (one of {', '.join(PROMPT_STRATEGIES)})")
    if world_model is None:
        raise ValueError(f"prompt strategy {strategy!r} needs a world model to score segments")
    from metadt.train import device_scoring

    if strategy == "argmax" and scorer is None and device_scoring.on_device(world_model) and T >= length:
        r = [rows[t] for t in tasks]  # errors and argmax on the device, one copy back
        segs = device_scoring.best_segments(world_model, trajs.obs[r], trajs.actions[r],
                                            trajs.rewards[r], trajs.next_obs[r], length=length,
                                            start_min=lo, groups=np.asarray(tasks))
        return _starts_from_store(segs, tasks, {t: i for i, t in enumerate(tasks)})
    store, episode_of_task = kept if kept is not None else kept_store(trajs, rows)
    (scorer or default_scorer)(store, world_model, column)
    segs = store.best_segments(column, length=length, start_min=lo, per="task", mode=strategy,
                               seed=int(rng.integers(2**31)))
    return _starts_from_store(segs, tasks, episode_of_task)


def own_prompts(trajs: Trajectories, *, prompt_len: int, prompt_start_min: int, return_scale: float,
                strategy: str, rng: np.random.Generator, world_model: Any = None,
                column: str = "wm_error", scorer: Scorer | None = None
                ) -> tuple[dict[int, Prompt], dict[int, dict[str, Any]]]:
    """One prompt per task from the agent's own zero-shot trajectories.

    Keeps the best episode of each task by return and takes the segment the
    strategy selects (``argmax``: largest summed world-model error, the
    complementary prompt). Returns ``({task: Prompt with one row}, {task:
    info})``, info giving the kept episode's return and the segment start.
    """
    rows = trajs.best_per_task()
    kept = kept_store(trajs, rows)
    starts = select_starts(trajs, rows, prompt_len=prompt_len, prompt_start_min=prompt_start_min,
                           strategy=strategy,
                           rng=rng, world_model=world_model, column=column, scorer=scorer, kept=kept)
    store, episode_of_task = kept
    prompts: dict[int, Prompt] = {}
    info: dict[int, dict[str, Any]] = {}
    for task, r in rows.items():
        p = Prompt.from_batch(store.prompt_segments([episode_of_task[task]], [starts[task]], prompt_len,
                                                    return_scale), source="own")
        p.episodes[:] = -1  # the agent's own episode, not one of a dataset
        prompts[task] = p
        info[task] = {"source": "own", "strategy": strategy, "start": int(starts[task]),
                      "episode_return": float(trajs.returns[r]),
                      "candidates": int((trajs.tasks == task).sum())}
    return prompts, info


def episode_arrays(store: Any, episode: int) -> dict[str, np.ndarray]:
    """obs, actions, rewards of one stored episode (views of the store's columns)."""
    off = int(np.asarray(store.episode_offsets())[int(episode)])
    n = int(np.asarray(store.episode_lengths())[int(episode)])
    return {k: np.asarray(store.column(k))[off:off + n] for k in ("obs", "actions", "rewards")}


def expert_prompts(store: Any, task_ids: list[int], *, prompt_len: int, prompt_start_min: int,
                   return_scale: float, strategy: str, rng: np.random.Generator,
                   source: str = "dataset:expert"
                   ) -> tuple[dict[int, Prompt], dict[int, dict[str, Any]]]:
    """Prompt-DT's prompt: a segment of the best dataset episode of each task."""
    prompts: dict[int, Prompt] = {}
    info: dict[int, dict[str, Any]] = {}
    for task in task_ids:
        top = list(store.top_episodes(int(task), 1))
        if not top:
            raise ValueError(f"the dataset has no episode of task {task} for an expert prompt")
        ep = int(top[0])
        arr = episode_arrays(store, ep)
        T = int(arr["rewards"].shape[0])
        lo, hi = start_range(T, prompt_len, prompt_start_min)
        start = hi if strategy == "last" else int(rng.integers(lo, hi + 1))
        prompts[task] = Prompt.from_batch(store.prompt_segments([ep], [start], prompt_len, return_scale),
                                          source=source)
        info[task] = {"source": source, "strategy": strategy, "start": start, "episode": ep,
                      "episode_return": float(np.asarray(arr["rewards"], dtype=np.float64).sum())}
    return prompts, info


def stack_prompts(prompts: dict[int, Prompt], task_ids: np.ndarray) -> Prompt:
    """One prompt row per env: the prompt of each env's task."""
    order = list(prompts)
    rows = [order.index(int(t)) for t in np.asarray(task_ids).tolist()]
    all_p = Prompt(*(np.concatenate([getattr(prompts[t], f) for t in order])
                     for f in ("obs", "actions", "rewards", "rtg", "timesteps", "mask",
                               "episodes", "starts")),
                   source=next(iter(prompts.values())).source)
    return all_p.take(rows)
