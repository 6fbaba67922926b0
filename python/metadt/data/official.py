"""Import the Meta-DT authors' datasets (NJU-RL/Meta-DT) as a metadt dataset.

The authors' ``get_datasets.py`` writes, per environment directory::

    <ENV>/task_goals.npy          point-robot: float array [num_tasks, 2] (goals)
    <ENV>/task_goals.pkl          other families: a list with one entry per task
    <ENV>/<quality>/dataset_task_<i>.pkl   one pickle per task i

Each ``dataset_task_<i>.pkl`` is a dict (an ``OrderedDict``) of arrays, flat
over that task's episodes (every episode runs the full horizon; the original
never terminates early)::

    observations        [M, obs_dim]
    actions             [M, act_dim]
    rewards             [M] (or [M, 1])
    next_observations   [M, obs_dim]
    terminals           [M]   (bool or 0/1; the env's done flag)
    masks               [M]   (bootstrap masks; read, checked, not stored)

Episodes are split at the horizon and after any terminal step; a trailing
partial episode (fewer than ``horizon`` steps and no terminal) is dropped and
counted in the card.

Task entries of ``task_goals``, by family: point-robot ``[x, y]``;
cheetah-vel ``{"velocity": v}`` (or ``v``); cheetah-dir ``{"direction": d}``
(or ``d``); ant-dir ``{"goal": angle}`` (or ``angle``); hopper-param and
walker-param ``{"body_mass": [...], "body_inertia": [[...]], "dof_damping":
[...], "geom_friction": [[...]]}`` with absolute values (converted to
metadt's multipliers of the default model). Meta-World goal files hold
metaworld-v2 objects and cannot be read safely: pass ``tasks=`` (metadt task
dicts, e.g. from a card) instead. ``tasks=`` works for every family.

Pickles are read with a restricted unpickler that only builds dicts, lists,
tuples, numbers, strings and NumPy arrays, so a file cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from metadt.data.dataset import Dataset, DatasetCard, write_dataset

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "masks")
REQUIRED = ("observations", "actions", "rewards", "next_observations", "terminals")
FILE_RE = re.compile(r"^dataset_task_(\d+)\.pkl$")
GOAL_FILES = ("task_goals.npy", "task_goals.pkl")


class OfficialFormatError(ValueError):
    """The input is not in the authors' format (the message says what is wrong)."""


# --------------------------------------------------------------------------
# safe unpickling

_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "float"), ("builtins", "int"), ("builtins", "bool"),
    ("builtins", "str"), ("builtins", "bytes"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "float32"), ("numpy", "float64"), ("numpy", "int64"), ("numpy", "int32"),
    ("numpy", "bool_"), ("_codecs", "encode"),
}
_NUMPY_DTYPES = re.compile(r"^numpy(\.dtypes)?$")


class _Refused(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (_NUMPY_DTYPES.match(module) and name.endswith("DType")):
            return super().find_class(module, name)
        raise _Refused(
            f"refusing to load {module}.{name}: only dicts, lists, numbers and NumPy arrays are "
            f"accepted")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only plain containers, numbers and NumPy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(io.BufferedReader(f)).load()  # type: ignore[arg-type]
    except _Refused as exc:
        raise OfficialFormatError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise OfficialFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") \
            from None


# --------------------------------------------------------------------------
# reading one task file


def read_task_file(path: str | os.PathLike, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """Load and check one ``dataset_task_<i>.pkl``; arrays as float32 (terminals bool)."""
    path = Path(path)
    data = safe_load_pickle(path)
    if not isinstance(data, Mapping):
        raise OfficialFormatError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise OfficialFormatError(f"{path}: missing key(s) {', '.join(missing)} "
                                  f"(has: {', '.join(map(str, data))})")
    out: dict[str, np.ndarray] = {}
    try:
        for k in KEYS:
            if k in data:
                out[k] = np.asarray(data[k])
    except Exception as exc:  # ragged lists and the like
        raise OfficialFormatError(f"{path}: key {k!r} is not an array ({exc})") from None
    m = out["observations"].shape[0] if out["observations"].ndim else 0
    if m == 0:
        raise OfficialFormatError(f"{path}: no transitions")
    want = {"observations": (m, obs_dim), "actions": (m, act_dim),
            "next_observations": (m, obs_dim)}
    for k, shape in want.items():
        if out[k].shape != shape:
            raise OfficialFormatError(f"{path}: {k} has shape {out[k].shape}, expected {shape} "
                                      f"for this family")
    for k in ("rewards", "terminals", "masks"):
        if k not in out:
            continue
        a = out[k]
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.shape != (m,):
            raise OfficialFormatError(f"{path}: {k} has shape {out[k].shape}, expected ({m},)")
        out[k] = a
    for k in ("observations", "actions", "next_observations", "rewards"):
        if not np.issubdtype(out[k].dtype, np.number):
            raise OfficialFormatError(f"{path}: {k} is not numeric (dtype {out[k].dtype})")
        out[k] = out[k].astype(np.float32)
        if not np.all(np.isfinite(out[k])):
            raise OfficialFormatError(f"{path}: {k} has non-finite values")
    out["terminals"] = out["terminals"].astype(bool)
    return out


def split_episodes(terminals: np.ndarray, horizon: int) -> tuple[list[tuple[int, int]], int]:
    """Episode ``(start, end)`` ranges: end after a terminal or at the horizon.

    Returns the complete episodes and the number of trailing steps dropped.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    m = len(terminals)
    for t in range(m):
        if terminals[t] or t + 1 - start == horizon:
            spans.append((start, t + 1))
            start = t + 1
    return spans, m - start


# --------------------------------------------------------------------------
# goals -> metadt tasks


def _scalar(entry: Any, key: str, where: str) -> float:
    if isinstance(entry, Mapping):
        if key not in entry:
            raise OfficialFormatError(f"{where}: task entry lacks {key!r} (has {list(entry)})")
        entry = entry[key]
    try:
        return float(np.asarray(entry, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise OfficialFormatError(f"{where}: expected a number for {key!r}, got {entry!r}") from None


def goals_to_tasks(family: str, goals: Any, where: str = "task goals") -> list[dict[str, Any]]:
    """Convert the authors' task-goal entries to metadt task dicts of ``family``."""
    if isinstance(goals, np.ndarray) and family != "point-robot":
        goals = list(goals)
    if family == "point-robot":
        arr = np.asarray([g["goal"] if isinstance(g, Mapping) else g for g in goals]
                         if not isinstance(goals, np.ndarray) else goals, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise OfficialFormatError(f"{where}: point-robot goals must be [num_tasks, 2], "
                                      f"got shape {arr.shape}")
        return [{"family": family, "goal": [float(x), float(y)]} for x, y in arr]
    if not isinstance(goals, (list, tuple)):
        raise OfficialFormatError(f"{where}: expected a list of task entries, "
                                  f"got {type(goals).__name__}")
    if family == "cheetah-vel":
        return [{"family": family, "velocity": _scalar(g, "velocity", where)} for g in goals]
    if family == "cheetah-dir":
        return [{"family": family, "direction": _scalar(g, "direction", where)} for g in goals]
    if family == "ant-dir":
        return [{"family": family, "angle": _scalar(g, "goal", where) % (2 * np.pi)}
                for g in goals]
    if family in ("hopper-param", "walker-param"):
        from metadt.envs import family_class

        defaults = family_class(family).defaults()
        tasks = []
        for g in goals:
            if not isinstance(g, Mapping):
                raise OfficialFormatError(f"{where}: {family} entries are dicts of parameters")
            task: dict[str, Any] = {"family": family}
            for name, base in defaults.items():
                if name not in g:
                    raise OfficialFormatError(f"{where}: task entry lacks {name!r}")
                val = np.asarray(g[name], dtype=np.float64)
                if val.shape != base.shape:
                    raise OfficialFormatError(f"{where}: {name} has shape {val.shape}, this "
                                              f"metadt model has {base.shape}")
                safe = np.where(base != 0, base, 1.0)
                task[name] = np.where(base != 0, val / safe, 1.0).tolist()
            tasks.append(task)
        return tasks
    raise OfficialFormatError(
        f"{where}: task goals of family {family!r} cannot be converted (Meta-World goal files "
        f"hold metaworld objects); pass the metadt tasks explicitly (--tasks FILE.json)")


def load_goals(path: str | os.PathLike) -> Any:
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise OfficialFormatError(f"{path}: not a plain numeric .npy ({exc})") from None
    return safe_load_pickle(path)


# --------------------------------------------------------------------------
# locating files


def find_layout(root: str | os.PathLike, qualities: Sequence[str] | None = None,
                goals: str | os.PathLike | None = None) -> tuple[dict[str, dict[int, Path]], Path | None]:
    """``({quality: {task: file}}, goal file)`` of an authors' directory.

    ``root`` is either an environment directory (quality subdirectories with
    ``dataset_task_<i>.pkl``) or one quality directory (then its name is the
    quality unless ``qualities`` names exactly one).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")

    def task_files(d: Path) -> dict[int, Path]:
        out = {}
        for p in d.iterdir():
            m = FILE_RE.match(p.name)
            if m and p.is_file():
                out[int(m.group(1))] = p
        return out

    layout: dict[str, dict[int, Path]] = {}
    direct = task_files(root)
    if direct:
        name = qualities[0] if qualities and len(qualities) == 1 else root.name
        layout[name] = direct
        search = [root, root.parent]
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = task_files(sub)
            if files:
                layout[sub.name] = files
        search = [root]
        if qualities:
            absent = [q for q in qualities if q not in layout]
            if absent:
                raise OfficialFormatError(
                    f"{root}: no dataset_task_*.pkl under {', '.join(absent)} "
                    f"(found: {', '.join(layout) or 'none'})")
            layout = {q: layout[q] for q in qualities}
    if not layout:
        raise OfficialFormatError(f"{root}: no dataset_task_<i>.pkl files here or in its "
                                  f"subdirectories")
    goal_file: Path | None = Path(goals) if goals is not None else None
    if goal_file is None:
        for d in search:
            for name in GOAL_FILES:
                if (d / name).is_file():
                    goal_file = d / name
                    break
            if goal_file is not None:
                break
    elif not goal_file.is_file():
        raise FileNotFoundError(f"{goal_file}: no such goal file")
    return layout, goal_file


# --------------------------------------------------------------------------
# the import


def import_official(root: str | os.PathLike, family: str, out: str | os.PathLike,
                    qualities: Sequence[str] | None = None, goals: str | os.PathLike | None = None,
                    tasks: Sequence[Mapping[str, Any]] | None = None, num_train: int | None = None,
                    horizon: int | None = None, random_episodes: int = 0, seed: int = 0,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> Dataset:
    """Convert an authors' dataset directory to a metadt dataset at ``out``.

    ``tasks`` (metadt task dicts) replace the goal file. ``random_episodes`` > 0
    also measures each task's uniform-random return with the family's env.
    """
    from metadt import TrajectoryStore
    from metadt.envs import family_class, family_from_tasks

    out = Path(out)
    if (out / "card.json").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose another --out")
    cls = family_class(family)
    layout, goal_file = find_layout(root, qualities, goals)
    if tasks is None:
        if goal_file is None:
            raise OfficialFormatError(
                f"{root}: no task_goals.npy / task_goals.pkl found (here or in the parent "
                f"directory); pass --goals FILE or --tasks FILE.json")
        task_list = goals_to_tasks(family, load_goals(goal_file), where=str(goal_file))
    else:
        task_list = [dict(t) for t in tasks]
        for t in task_list:
            t.setdefault("family", family)
    n_tasks = len(task_list)
    try:
        fam = family_from_tasks(family, task_list,
                                num_train=num_train if num_train is not None
                                else cls._default_num_train(n_tasks), seed=0)
    except ValueError as exc:
        raise OfficialFormatError(f"task goals do not make valid {family} tasks: {exc}") from None
    horizon = int(horizon or fam.horizon)
    for q, files in layout.items():
        bad = sorted(i for i in files if i >= n_tasks)
        if bad:
            raise OfficialFormatError(f"{q}: dataset_task_{bad[0]}.pkl has no task goal "
                                      f"(there are {n_tasks} goals)")

    stores: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for q, files in layout.items():
        store = TrajectoryStore(fam.obs_dim, fam.act_dim)
        dropped: dict[str, int] = {}
        for k, (task, path) in enumerate(sorted(files.items())):
            d = read_task_file(path, fam.obs_dim, fam.act_dim)
            spans, rest = split_episodes(d["terminals"], horizon)
            if not spans:
                raise OfficialFormatError(f"{path}: no complete episode ({len(d['terminals'])} "
                                          f"steps, horizon {horizon})")
            for a, b in spans:
                store.add_episode(d["observations"][a:b], d["actions"][a:b], d["rewards"][a:b],
                                  next_obs=d["next_observations"][a:b], task=int(task),
                                  terminals=d["terminals"][a:b].astype(np.float32))
            if rest:
                dropped[str(task)] = int(rest)
            if progress is not None:
                progress({"phase": "import", "quality": q, "done": k + 1, "total": len(files)})
        stores[q] = store
        info[q] = {"files": len(files), "dropped_partial_steps": dropped}

    random_returns: dict[str, float] = {}
    if random_episodes > 0:
        from metadt.collect.rollout import Roller, random_act_fn

        rng = np.random.default_rng(seed)
        with Roller(fam, fam.tasks, min(random_episodes, 20)) as roller:
            eps = roller.run(random_act_fn(fam.action_low, fam.action_high, rng), random_episodes,
                             seed=seed)
        random_returns = {str(i): float(r) for i, r in enumerate(eps.returns.mean(1))}

    card = DatasetCard(
        family=family, family_seed=0, obs_dim=fam.obs_dim, act_dim=fam.act_dim, horizon=horizon,
        tasks=[dict(t) for t in fam.tasks], train_ids=list(fam.train_ids),
        test_ids=list(fam.test_ids),
        qualities={q: {"episodes_per_task": None, "checkpoints": {},
                       "rule": "imported (the authors' hand-picked checkpoints)"}
                   for q in stores},
        random_returns=random_returns,
        collection={"source_dir": str(Path(root).resolve()),
                    "goal_file": None if goal_file is None or tasks is not None else str(goal_file),
                    "format": "NJU-RL/Meta-DT get_datasets.py replay pickles",
                    "horizon": horizon, "imported": info,
                    "random_episodes": int(random_episodes), "seed": int(seed)},
        source="metadt import-official",
    )
    for q, store in stores.items():
        lengths = np.asarray(store.episode_lengths())
        tasks_of = np.asarray(store.episode_tasks()) if hasattr(store, "episode_tasks") else None
        if tasks_of is not None:
            counts = {int(t): int((tasks_of == t).sum()) for t in np.unique(tasks_of)}
            same = len(set(counts.values())) == 1
            card.qualities[q]["episodes_per_task"] = next(iter(counts.values())) if same else None
        card.qualities[q]["steps"] = int(lengths.sum())
    return write_dataset(out, card, stores)
