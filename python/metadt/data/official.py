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

Pickles are read only when the caller says it trusts them (``trust_pickle=True``,
``metadt import-official --trust-pickle``), with a restricted unpickler that only
builds dicts, lists, tuples, numbers, strings and NumPy arrays, and whose memory
is bounded by the file's size (see :func:`safe_load_pickle`).
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
from metadt.fileio import read_file_bytes

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


class UntrustedPickleError(OfficialFormatError):
    """Reading the authors' pickles needs the caller's explicit trust (``trust_pickle``)."""


TRUST_MESSAGE = (
    "the authors' datasets are Python pickles, and a pickle is a program: metadt reads them "
    "with a restricted, memory-bounded unpickler (plain containers, numbers and NumPy arrays "
    "only), but only import files from a source you trust. Say so with --trust-pickle "
    "(in Python: import_official(..., trust_pickle=True))")

#: A pickle may build at most this many elements/bytes per byte of file (plus a floor):
#: a plain pickle of lists of numbers needs at least a byte per element, so only
#: pickles that repeat references to inflate (memory bombs) hit the bound.
BUDGET_PER_BYTE = 2
BUDGET_FLOOR = 1 << 20
#: Memo indices above this (plus the number of opcodes) are refused: a large one makes the
#: C unpickler allocate its memo table to that size.
MEMO_SLACK = 1 << 16
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


class _Budget:
    """Elements and bytes a pickle may build, charged as it builds them."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = int(limit), 0

    def charge(self, n: int, what: str) -> None:
        self.used += max(int(n), 0)
        if self.used > self.limit:
            raise _Refused(f"refusing to build {what}: the pickle would build more than "
                           f"{self.limit} elements/bytes, far more than its size holds "
                           f"(repeated references inflating it)")


def _sized(x: Any, what: str) -> int:
    try:
        return len(x)
    except TypeError:
        raise _Refused(f"refusing {what} of a {type(x).__name__}") from None


def _guard(module: str, name: str, obj: Any, budget: _Budget) -> Any:
    """``obj`` (an allowed global) wrapped so what it builds is charged to ``budget``."""
    what = f"{module}.{name}"
    if (module, name) in {("builtins", n) for n in ("dict", "list", "tuple", "set",
                                                     "frozenset")} | {("collections",
                                                                       "OrderedDict")}:
        def container(*args: Any) -> Any:
            if len(args) > 1:
                raise _Refused(f"refusing {what} with {len(args)} arguments")
            if args:
                budget.charge(_sized(args[0], what), what)
            return obj(*args)
        return container
    if module == "builtins" and name in ("bytes", "str", "int", "float", "bool", "complex"):
        def scalar(*args: Any) -> Any:
            for a in args:
                if isinstance(a, bool) or isinstance(a, (float, complex)) or a is None:
                    continue
                if isinstance(a, int):
                    if name == "bytes":
                        budget.charge(a, what)  # bytes(n) allocates n bytes
                    continue
                if isinstance(a, (str, bytes, bytearray)):
                    budget.charge(len(a), what)
                    continue
                raise _Refused(f"refusing {what} of a {type(a).__name__}")
            return obj(*args)
        return scalar
    if module == "_codecs" and name == "encode":
        def encode(data: Any, encoding: str = "utf-8", *rest: Any) -> Any:
            if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
                raise _Refused(f"refusing _codecs.encode with encoding {encoding!r}")
            budget.charge(_sized(data, what), what)
            return obj(data, encoding, *rest)
        return encode
    if name == "_reconstruct":
        def reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
            if cls is not np.ndarray:
                raise _Refused(f"refusing {what} of {cls!r}")
            n = int(np.prod(np.asarray(shape, dtype=np.int64))) if np.size(shape) else 1
            budget.charge(n * np.dtype(np.uint8 if typecode in (b"b", "b") else typecode)
                          .itemsize, what)
            return obj(cls, shape, typecode)
        return reconstruct
    if name in ("scalar", "_frombuffer"):
        def from_bytes(*args: Any) -> Any:
            budget.charge(sum(len(a) for a in args if isinstance(a, (bytes, bytearray))), what)
            return obj(*args)
        return from_bytes
    if module == "numpy" and name == "dtype" or name.endswith("DType"):
        def dtype(*args: Any) -> Any:
            dt = obj(*args)
            if isinstance(dt, np.dtype) and (dt.hasobject or dt.kind == "O"):
                raise _Refused(f"refusing NumPy arrays of Python objects ({dt})")
            return dt
        return dtype
    if module == "numpy" and name == "ndarray":  # a class (for _reconstruct); its size is
        return obj                               # bounded by _logical_size afterwards
    if module == "numpy":  # float32(...), int64(...), bool_(...): numbers only
        def number(*args: Any) -> Any:
            if any(not isinstance(a, (int, float, bool, np.generic)) for a in args):
                raise _Refused(f"refusing {what} of a non-scalar")
            return obj(*args)
        return number
    return obj


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, budget: _Budget) -> None:
        super().__init__(file)
        self.budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (_NUMPY_DTYPES.match(module) and name.endswith("DType")):
            return _guard(module, name, super().find_class(module, name), self.budget)
        raise _Refused(
            f"refusing to load {module}.{name}: only dicts, lists, numbers and NumPy arrays are "
            f"accepted")


def _prescan(data: bytes) -> None:
    """Walk the opcodes (no object is built): every declared length must fit in the file
    and memo indices stay small, so the unpickler never allocates for a lie."""
    import pickletools

    ops = 0
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        ops += 1
        if op.name in _MEMO_PUTS and int(arg) > ops + MEMO_SLACK:
            raise _Refused(f"memo index {arg} is out of range")


def _logical_size(obj: Any, limit: int) -> int:
    """Elements ``obj`` holds counting every reference (what ``np.asarray`` would build),
    computed once per distinct object, stopping past ``limit``; NumPy object arrays refused."""
    sizes: dict[int, int] = {}
    keep: list[Any] = []  # ids stay valid while we hold the objects

    def walk(x: Any, depth: int) -> int:
        if depth > 64:
            raise _Refused("nesting deeper than 64 levels")
        key = id(x)
        if key in sizes:
            return sizes[key]
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise _Refused(f"refusing NumPy arrays of Python objects ({x.dtype})")
            n = int(x.size)
        elif isinstance(x, (str, bytes, bytearray)):
            n = len(x)
        elif isinstance(x, Mapping):
            n = 1 + sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in x.items())
        elif isinstance(x, (list, tuple, set, frozenset)):
            n = 1
            for v in x:
                n += walk(v, depth + 1)
                if n > limit:
                    break
        else:
            n = 1
        if n > limit:
            raise _Refused(f"the pickle holds more than {limit} elements counting repeated "
                           f"references, far more than its size holds (a memory bomb?)")
        sizes[key] = n
        keep.append(x)
        return n

    return walk(obj, 0)


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only plain containers, numbers and NumPy arrays, with
    memory bounded by the file's size: opcodes are checked first, what allowed callables
    build is charged as it is built, and the result's size counting repeated references
    is bounded before anyone converts it to arrays. Callers must have the user's trust
    (``import_official(trust_pickle=True)``)."""
    path = Path(path)
    try:
        data = read_file_bytes(path, what="pickle file")
        limit = BUDGET_FLOOR + BUDGET_PER_BYTE * len(data)
        _prescan(data)
        out = _SafeUnpickler(io.BytesIO(data), _Budget(limit)).load()
        _logical_size(out, limit)
        return out
    except _Refused as exc:
        raise OfficialFormatError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
        raise OfficialFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") \
            from None
    except OSError as exc:
        raise OfficialFormatError(f"{path}: cannot read ({exc})") from None


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
            return np.load(io.BytesIO(read_file_bytes(path, what=".npy file")), allow_pickle=False)
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
                    progress: Callable[[dict[str, Any]], None] | None = None,
                    trust_pickle: bool = False) -> Dataset:
    """Convert an authors' dataset directory to a metadt dataset at ``out``.

    ``tasks`` (metadt task dicts) replace the goal file. ``random_episodes`` > 0
    also measures each task's uniform-random return with the family's env.
    ``trust_pickle`` must be True: the input is pickles (:data:`TRUST_MESSAGE`).
    """
    if not trust_pickle:
        raise UntrustedPickleError(f"{root}: {TRUST_MESSAGE}")
    from metadt.config.base import check_seed

    seed = check_seed(seed)
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
        from metadt.envs.rollout import Roller, random_act_fn

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
