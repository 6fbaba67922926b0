"""A metadt dataset on disk: one `TrajectoryStore` per quality plus a card.

Layout of a dataset directory::

    DIR/card.json        the DatasetCard (JSON, written last and atomically)
    DIR/<quality>/       a TrajectoryStore (manifest.json + one .npy per column)

Qualities are ``expert``, ``medium`` and ``mixed`` for data made by
``metadt collect`` (an import may hold any subset). Episode task ids in every
store are indices into ``card.tasks`` (train and test tasks together); which
ids are train and which are test is in ``card.train_ids`` / ``card.test_ids``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metadt.fileio import atomic_write_json, read_json

if TYPE_CHECKING:  # pragma: no cover
    from metadt import TrajectoryStore

CARD_FORMAT = "metadt-dataset"
CARD_VERSION = 1
QUALITIES = ("expert", "medium", "mixed", "random")


@dataclass
class DatasetCard:
    """What a dataset holds and how it was made (serialized as ``card.json``)."""

    family: str
    """Task family name (see ``metadt envs``)."""
    family_seed: int
    """Seed the family's tasks were sampled with."""
    obs_dim: int
    act_dim: int
    horizon: int
    tasks: list[dict[str, Any]]
    """Task parameters, JSON; the store's task id ``i`` is ``tasks[i]``."""
    train_ids: list[int]
    test_ids: list[int]
    qualities: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per quality: ``{"store": subdir, "episodes_per_task": n, "checkpoints": {...},
    "returns": {task_id: {"min", "mean", "max", "episodes", "steps"}}}``."""
    random_returns: dict[str, float] = field(default_factory=dict)
    """Mean return of a uniform-random policy per task id (string keys, JSON)."""
    collection: dict[str, Any] = field(default_factory=dict)
    """How the data was made: preset, SAC config and budget, seeds, source."""
    source: str = "metadt collect"
    created: str = ""
    format: str = CARD_FORMAT
    version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "card") -> "DatasetCard":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if data.get("format") != CARD_FORMAT:
            raise ValueError(f"{where}: not a metadt dataset card (format={data.get('format')!r})")
        if data.get("version") != CARD_VERSION:
            raise ValueError(
                f"{where}: card version {data.get('version')!r} is not supported "
                f"(this metadt reads version {CARD_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
                   and f.name not in data]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        _check_card_types(data, where)
        card = cls(**data)
        n = len(card.tasks)
        for ids, what in ((card.train_ids, "train_ids"), (card.test_ids, "test_ids")):
            bad = [i for i in ids if not (0 <= int(i) < n)]
            if bad:
                raise ValueError(f"{where}: {what} {bad} out of range for {n} tasks")
        return card

    def returns(self, quality: str) -> dict[int, dict[str, float]]:
        q = self._quality(quality)
        return {int(k): v for k, v in q.get("returns", {}).items()}

    def max_return(self, task_id: int, quality: str) -> float:
        """The best episode return of a task in a quality (the default evaluation target)."""
        stats = self.returns(quality).get(int(task_id))
        if stats is None:
            raise ValueError(f"task {task_id} has no episodes in quality {quality!r}")
        return float(stats["max"])

    def random_return(self, task_id: int) -> float | None:
        v = self.random_returns.get(str(int(task_id)))
        return None if v is None else float(v)

    def _quality(self, quality: str) -> dict[str, Any]:
        if quality not in self.qualities:
            have = ", ".join(sorted(self.qualities)) or "none"
            raise ValueError(f"dataset has no quality {quality!r} (it has: {have})")
        return self.qualities[quality]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_card_types(data: dict[str, Any], where: str) -> None:
    """A clear ``ValueError`` for a card field of the wrong JSON type (a hand-edited or
    damaged card must not reach the code as a TypeError or IndexError)."""
    def bad(name: str, want: str) -> ValueError:
        return ValueError(f"{where}: field {name!r} must be {want}, got {data.get(name)!r:.80}")

    if not isinstance(data["family"], str):
        raise bad("family", "a string")
    if not _is_int(data["family_seed"]) or data["family_seed"] < 0:
        raise bad("family_seed", "an integer >= 0")
    for name in ("obs_dim", "act_dim", "horizon"):
        if not _is_int(data[name]) or not 0 < data[name] <= 1 << 20:
            raise bad(name, "an integer in [1, 2**20]")
    if not isinstance(data["tasks"], list) or not all(isinstance(t, dict) for t in data["tasks"]):
        raise bad("tasks", "a list of objects")
    for name in ("train_ids", "test_ids"):
        if not isinstance(data[name], list) or not all(_is_int(i) for i in data[name]):
            raise bad(name, "a list of integers")
    quals = data.get("qualities", {})
    if not isinstance(quals, dict) or not all(isinstance(q, dict) for q in quals.values()):
        raise bad("qualities", "an object of objects")
    for q, info in quals.items():
        store = info.get("store", q)
        if not isinstance(store, str) or not store:
            raise ValueError(f"{where}: quality {q!r}: 'store' must be a directory name")
        returns = info.get("returns", {})
        if not isinstance(returns, dict):
            raise ValueError(f"{where}: quality {q!r}: 'returns' must be an object")
        for t, s in returns.items():
            if not (isinstance(s, dict) and all(_is_num(s.get(k)) for k in ("min", "mean", "max"))
                    and all(_is_int(s.get(k, 0)) and s.get(k, 0) >= 0
                            for k in ("episodes", "steps"))):
                raise ValueError(f"{where}: quality {q!r}: returns of task {t!r} must hold "
                                 f"numbers min/mean/max and counts episodes/steps")
            try:
                int(t)
            except ValueError:
                raise ValueError(f"{where}: quality {q!r}: task id {t!r} is not an integer") \
                    from None
    rr = data.get("random_returns", {})
    if not isinstance(rr, dict) or not all(_is_num(v) for v in rr.values()):
        raise bad("random_returns", "an object of numbers")
    for name in ("collection",):
        if not isinstance(data.get(name, {}), dict):
            raise bad(name, "an object")
    for name in ("source", "created"):
        if not isinstance(data.get(name, ""), str):
            raise bad(name, "a string")


def return_stats(store: "TrajectoryStore") -> dict[str, dict[str, float]]:
    """Per-task min/mean/max episode return, episode and step counts (JSON keys)."""
    returns = np.asarray(store.episode_returns(), dtype=np.float64)
    lengths = np.asarray(store.episode_lengths(), dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for t in store.tasks():
        eps = np.asarray(store.episodes_of_task(int(t)), dtype=np.int64)
        r = returns[eps]
        out[str(int(t))] = {
            "min": float(r.min()),
            "mean": float(r.mean()),
            "max": float(r.max()),
            "episodes": int(len(eps)),
            "steps": int(lengths[eps].sum()),
        }
    return out


def diversity(store: "TrajectoryStore") -> dict[int, dict[str, float]]:
    """How varied each task's episodes are: per task, the std (ddof 0) of the episode
    returns and of the first action (the per-dim stds averaged; every episode starts in
    the same state on point-robot, so this is the behaviour policy's own spread)."""
    import numpy as np

    rets = np.asarray(store.episode_returns(), dtype=np.float64)
    offs = np.asarray(store.episode_offsets(), dtype=np.int64)
    acts = np.asarray(store.column("actions"), dtype=np.float64)
    out: dict[int, dict[str, float]] = {}
    for t in store.tasks():
        eps = np.asarray(store.episodes_of_task(int(t)), dtype=np.int64)
        first = acts[offs[eps]]
        out[int(t)] = {"return_std": float(rets[eps].std()),
                       "first_action_std": float(first.std(0).mean()),
                       "episodes": int(len(eps))}
    return out


class Dataset:
    """An opened dataset directory: its card, its family, and lazily its stores."""

    def __init__(self, path: str | os.PathLike, card: DatasetCard):
        self.path = Path(path)
        self.card = card
        self._stores: dict[tuple[str, bool], "TrajectoryStore"] = {}
        self._family = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Dataset":
        path = Path(path)
        card_path = path / "card.json"
        if not (card_path.exists() or card_path.is_symlink()):   # anything else: read_json says what
            raise FileNotFoundError(
                f"{path}: not a metadt dataset (no card.json); make one with `metadt collect` "
                f"or `metadt import-official`"
            )
        return cls(path, DatasetCard.from_dict(read_json(card_path), where=str(card_path)))

    @property
    def qualities(self) -> list[str]:
        return list(self.card.qualities)

    @property
    def family(self):
        """The task family rebuilt from the tasks saved in the card."""
        if self._family is None:
            from metadt.envs import family_from_tasks

            self._family = family_from_tasks(
                self.card.family, self.card.tasks, num_train=len(self.card.train_ids),
                seed=self.card.family_seed,
            )
        return self._family

    def check_quality(self, quality: str) -> list[str]:
        """The qualities named by ``quality`` (one name, or several joined by ``+``),
        each checked to exist; a clear error otherwise."""
        parts = split_quality(quality)
        for q in parts:
            self.card._quality(q)
        return parts

    def store_path(self, quality: str) -> Path:
        """The directory of a quality's store: the card's ``store`` entry must name a
        directory directly inside the dataset (a plain name, not a symbolic link), so
        a card can never point a load anywhere else."""
        q = self.card._quality(quality)
        sub = q.get("store", quality)
        where = f"{self.path / 'card.json'}: quality {quality!r}"
        if (not isinstance(sub, str) or sub in ("", ".", "..") or "/" in sub or "\\" in sub or "\0" in sub
                or os.sep in sub or (os.altsep and os.altsep in sub)):
            raise ValueError(f"{where}: store {sub!r} must be the name of a directory inside the dataset")
        path = self.path / sub
        if path.is_symlink():
            raise ValueError(f"{where}: store {sub!r} is a symbolic link; a dataset's stores must be "
                             f"directories inside it")
        return path

    def store(self, quality: str, mmap: bool = True) -> "TrajectoryStore":
        """Open the store of a quality (memory-mapped by default), checked against the card.

        ``quality`` may join several qualities with ``+`` (``"random+medium+expert"``):
        their union, built once in memory (episodes in the order named, task ids kept).
        """
        from metadt import TrajectoryStore

        key = (quality, mmap)
        if key not in self._stores and len(split_quality(quality)) > 1:
            self._stores[key] = union_store(
                [self.store(q, mmap) for q in self.check_quality(quality)])
        if key not in self._stores:
            # the cheap checks only, also when read whole (mmap=False): verification is
            # check_stores' policy (a command's --no-verify must mean what it says)
            store = TrajectoryStore.load(str(self.store_path(quality)), mmap=mmap, verify=False)
            if (store.obs_dim, store.act_dim) != (self.card.obs_dim, self.card.act_dim):
                raise ValueError(
                    f"{self.path}/{quality}: store dims (obs {store.obs_dim}, act {store.act_dim}) "
                    f"differ from the card's (obs {self.card.obs_dim}, act {self.card.act_dim})"
                )
            self._stores[key] = store
        return self._stores[key]

    def check_stores(self, verify: bool = False) -> dict[str, dict[str, int]]:
        """Open every quality's store and check it against its manifest and the card.

        Always: the store loads (every file present with the manifest's size, headers,
        dtypes, shapes and the episode tables; ``TrajectoryStore.load`` with ``mmap``)
        and its episode and step counts equal the card's. With ``verify``, the stores are
        loaded with ``verify=True`` as well (every byte read: CRC-32 of every file,
        finite values). Raises ``ValueError``/``FileNotFoundError`` naming the quality;
        returns ``{quality: {"episodes", "steps"}}``.
        """
        from metadt import TrajectoryStore

        out: dict[str, dict[str, int]] = {}
        for quality in self.qualities:
            try:
                store = self.store(quality)
                if verify:
                    TrajectoryStore.load(str(self.store_path(quality)), mmap=True, verify=True)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{self.path}: quality {quality!r} is damaged: "
                                        f"{exc}") from None
            except (ValueError, OSError) as exc:
                raise ValueError(f"{self.path}: quality {quality!r} is damaged: {exc}") from None
            stats = self.card.returns(quality)
            want = (sum(int(s.get("episodes", 0)) for s in stats.values()),
                    sum(int(s.get("steps", 0)) for s in stats.values()))
            have = (int(store.num_episodes), int(store.num_steps))
            if stats and have != want:
                raise ValueError(f"{self.path}: quality {quality!r}: the store holds "
                                 f"{have[0]} episodes / {have[1]} steps but the card says "
                                 f"{want[0]} / {want[1]}")
            out[quality] = {"episodes": have[0], "steps": have[1]}
        return out


def split_quality(quality: str) -> list[str]:
    """``"random+medium"`` -> ``["random", "medium"]`` (no empty or repeated names)."""
    parts = [q.strip() for q in str(quality).split("+")]
    if not all(parts) or len(set(parts)) != len(parts):
        raise ValueError(f"quality {quality!r}: expected a name or distinct names joined by '+' "
                         f"(e.g. 'mixed' or 'random+medium+expert')")
    return parts


def union_store(stores: list["TrajectoryStore"]) -> "TrajectoryStore":
    """One in-memory store holding every episode of ``stores`` (in order; tasks,
    terminals, truncations and the stored columns obs/actions/rewards/next_obs copied)."""
    from metadt import TrajectoryStore

    if not stores:
        raise ValueError("union of no stores")
    od, ad = stores[0].obs_dim, stores[0].act_dim
    out = TrajectoryStore(od, ad)
    for st in stores:
        if (st.obs_dim, st.act_dim) != (od, ad):
            raise ValueError(f"union of stores with different dims: ({od}, {ad}) and "
                             f"({st.obs_dim}, {st.act_dim})")
        cols = {c: np.asarray(st.column(c)) for c in ("obs", "actions", "rewards", "next_obs",
                                                       "terminals", "truncations")}
        for o, n, t in zip(st.episode_offsets(), st.episode_lengths(), st.episode_tasks()):
            sl = slice(int(o), int(o) + int(n))
            out.add_episode(cols["obs"][sl], cols["actions"][sl], cols["rewards"][sl],
                            next_obs=cols["next_obs"][sl], task=int(t),
                            terminals=cols["terminals"][sl], truncations=cols["truncations"][sl])
    return out


def write_card(path: str | os.PathLike, card: DatasetCard) -> Path:
    """Write ``card.json`` atomically (stamping ``created`` if empty)."""
    if not card.created:
        card.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if "provenance" not in card.collection:  # what made it (metadt.provenance)
        from metadt.provenance import provenance

        card.collection["provenance"] = provenance()
    return atomic_write_json(Path(path) / "card.json", card.to_dict())


def write_dataset(path: str | os.PathLike, card: DatasetCard,
                  stores: dict[str, "TrajectoryStore"]) -> Dataset:
    """Save each quality's store (atomically, by the store) and then the card.

    Per-quality return statistics are computed from the stores and merged into
    ``card.qualities``. The card is written last, so a directory with a card is
    always complete.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for quality, store in stores.items():
        if (store.obs_dim, store.act_dim) != (card.obs_dim, card.act_dim):
            raise ValueError(
                f"quality {quality!r}: store dims ({store.obs_dim}, {store.act_dim}) differ "
                f"from the card's ({card.obs_dim}, {card.act_dim})"
            )
        store.save(str(path / quality))
        q = card.qualities.setdefault(quality, {})
        q["store"] = quality
        q["returns"] = return_stats(store)
    write_card(path, card)
    return Dataset(path, card)
