"""Minari datasets: export a metadt dataset, import one back.

Each quality of a metadt dataset becomes one Minari dataset (written with the
``minari`` package's own API, ``minari.create_dataset_from_buffers``), with id
``metadt/<family>/<quality>-v0`` under a root directory (``MINARI_DATASETS_PATH``
is set to it for the call). Per episode: ``observations`` [T+1, obs] (the T
observations, then the last step's next observation), ``actions`` [T, act],
``rewards`` [T], ``terminations`` and ``truncations`` [T] (bool, from the
store's ``terminals`` and ``truncations`` columns, kept apart); the episode
metadata holds ``task_id`` (an index into the card's tasks) and
``task_params`` (that task as JSON). The dataset metadata holds the dataset
card (``metadt_card``, JSON), the quality (``metadt_quality``) and the store's
metadata (``metadt_store_metadata``).

Importing reads such a dataset with ``minari.load_dataset`` and treats
everything in it as untrusted data: the card is validated like ``card.json``,
and every episode's arrays (shapes, dtypes, finite values, 0/1 flags) and task
id are checked before a store is built. Nothing is executed: the environment
spec a Minari dataset may carry is never used to make an environment.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from metadt.data.dataset import Dataset, DatasetCard, write_dataset
from metadt.fileio import memory_bytes, read_file_bytes

if TYPE_CHECKING:  # pragma: no cover
    from metadt import TrajectoryStore

NAMESPACE = "metadt"
VERSION_SUFFIX = "-v0"
CARD_KEY = "metadt_card"
QUALITY_KEY = "metadt_quality"
STORE_META_KEY = "metadt_store_metadata"
# a quality becomes a directory name of the imported dataset: a plain name only
_QUALITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MAX_JSON = 64 << 20


class MinariFormatError(ValueError):
    """A Minari dataset that is not a valid metadt export (says which dataset and what)."""


def require_minari():
    """The ``minari`` module, or a clear error saying how to install it."""
    try:
        import minari  # noqa: F401
    except ImportError:
        raise ImportError(
            "the Minari commands need the optional `minari` package (and h5py, its storage): "
            "pip install \"metadt[minari]\" (or, in a checkout, pip install \".[minari]\")"
        ) from None
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise ImportError("minari is installed but its HDF5 storage is not: "
                          "pip install \"minari[hdf5]\" (or pip install \".[minari]\")") from None
    return minari


@contextlib.contextmanager
def datasets_root(root: str | os.PathLike) -> Iterator[Path]:
    """Point ``MINARI_DATASETS_PATH`` at ``root`` for the duration (restored after)."""
    root = Path(root).resolve()
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def dataset_id(family: str, quality: str) -> str:
    return f"{NAMESPACE}/{family}/{quality}{VERSION_SUFFIX}"


def _check_quality_name(quality: Any, where: str) -> str:
    if not isinstance(quality, str) or not _QUALITY_RE.match(quality):
        raise MinariFormatError(f"{where}: quality {quality!r:.80} is not a plain name "
                                f"(letters, digits, '_', '-'; at most 64)")
    return quality


# ------------------------------------------------------------------ export

def _episode_buffers(store: "TrajectoryStore", where: str) -> list:
    from minari.data_collector import EpisodeBuffer

    cols = {c: np.asarray(store.column(c)) for c in ("obs", "actions", "rewards", "next_obs",
                                                      "terminals", "truncations")}
    out = []
    for i, (o, n) in enumerate(zip(store.episode_offsets(), store.episode_lengths())):
        sl = slice(int(o), int(o) + int(n))
        obs, nxt = cols["obs"][sl], cols["next_obs"][sl]
        if n > 1 and not np.array_equal(obs[1:], nxt[:-1]):
            t = int(np.flatnonzero((obs[1:] != nxt[:-1]).any(axis=1))[0])
            raise ValueError(f"{where}: episode {i}, step {t}: next_obs differs from the next step's "
                             f"obs; a Minari episode holds one observation sequence, so this "
                             f"dataset cannot be exported without losing data")
        out.append(EpisodeBuffer(
            id=i,
            observations=np.concatenate([obs, nxt[-1:]]).astype(np.float32),
            actions=cols["actions"][sl].astype(np.float32),
            rewards=cols["rewards"][sl].astype(np.float32),
            terminations=cols["terminals"][sl] != 0,
            truncations=cols["truncations"][sl] != 0,
        ))
    return out


def export_minari(dataset: Dataset, out: str | os.PathLike, qualities: list[str] | None = None,
                  overwrite: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Write each quality of ``dataset`` as a Minari dataset under ``out``.

    Returns ``{quality: dataset id}``. An existing Minari dataset of the same id is
    refused (``FileExistsError``) unless ``overwrite``. A failed export removes the
    partly written dataset.
    """
    minari = require_minari()
    import gymnasium as gym

    card = dataset.card
    quals = list(qualities) if qualities else dataset.qualities
    for q in quals:
        card._quality(q)
        _check_quality_name(q, str(dataset.path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    with datasets_root(out) as root:
        for q in quals:
            did = dataset_id(card.family, q)
            target = root / did
            if target.exists():
                if not overwrite:
                    raise FileExistsError(f"{target}: a Minari dataset {did!r} already exists; "
                                          f"pass --overwrite to replace it")
                minari.delete_dataset(did)
            store = dataset.store(q)
            buffers = _episode_buffers(store, f"{dataset.path}: quality {q!r}")
            box = lambda d: gym.spaces.Box(-np.inf, np.inf, (d,), np.float32)  # noqa: E731
            try:
                with warnings.catch_warnings():
                    # minari asks for an author, a code link and an env spec: a metadt export has
                    # none to give (the card in the metadata says how the data was made)
                    warnings.simplefilter("ignore", UserWarning)
                    mds = minari.create_dataset_from_buffers(
                        did, buffers, observation_space=box(card.obs_dim),
                        action_space=box(card.act_dim), algorithm_name=str(card.source),
                        description=f"metadt {card.family} dataset, quality {q}: {len(buffers)} "
                                    f"episodes of {len(card.tasks)} tasks (task id and parameters "
                                    f"in each episode's metadata; the metadt dataset card in "
                                    f"'{CARD_KEY}')",
                        data_format="hdf5")
                tasks = store.episode_tasks()
                mds.storage.update_episode_metadata(
                    [{"task_id": int(t), "task_params": json.dumps(card.tasks[int(t)], sort_keys=True)}
                     for t in tasks])
                mds.storage.update_metadata({
                    CARD_KEY: json.dumps(card.to_dict(), sort_keys=True),
                    QUALITY_KEY: q,
                    STORE_META_KEY: json.dumps(store.metadata, sort_keys=True),
                })
            except BaseException:
                if target.exists():
                    with contextlib.suppress(Exception):
                        minari.delete_dataset(did)
                raise
            written[q] = did
            if progress:
                progress(f"{q}: {len(buffers)} episodes, {store.num_steps} steps -> {target}")
    return written


# ------------------------------------------------------------------ import

def find_exports(root: str | os.PathLike) -> list[str]:
    """Ids of the Minari datasets under ``root`` (directories holding ``data/metadata.json``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    ids = []
    for meta in sorted(root.rglob("data/metadata.json")):
        ds_dir = meta.parent.parent
        if any(p.is_symlink() for p in (meta, meta.parent, ds_dir)):
            continue
        ids.append(ds_dir.relative_to(root).as_posix())
    return ids


def _json_field(meta: dict, key: str, where: str) -> Any:
    raw = meta.get(key)
    if not isinstance(raw, str):
        raise MinariFormatError(f"{where}: metadata {key!r} missing or not a JSON string: not a "
                                f"dataset written by `metadt export-minari`")
    if len(raw) > _MAX_JSON:
        raise MinariFormatError(f"{where}: metadata {key!r} is larger than {_MAX_JSON} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MinariFormatError(f"{where}: metadata {key!r} is not valid JSON ({exc})") from None


def _array(ep: Any, name: str, where: str) -> np.ndarray:
    v = getattr(ep, name, None)
    if not isinstance(v, np.ndarray):
        raise MinariFormatError(f"{where}: {name} must be an array (a Box space), got "
                                f"{type(v).__name__}")
    return v


def _floats(v: np.ndarray, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if v.dtype.kind not in "fiu" or v.dtype.itemsize > 8:
        raise MinariFormatError(f"{where}: {name} has dtype {v.dtype}, expected a real number type")
    if v.shape != shape:
        raise MinariFormatError(f"{where}: {name} has shape {v.shape}, expected {shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(np.float32)
    bad = ~np.isfinite(f)
    if bad.any():
        i = tuple(int(x) for x in np.unravel_index(int(np.flatnonzero(bad)[0]), v.shape))
        raise MinariFormatError(f"{where}: {name}{list(i)} = {float(v[i])!r} is not finite in float32")
    return f


def _flags(v: np.ndarray, name: str, t: int, where: str) -> np.ndarray:
    if v.shape != (t,):
        raise MinariFormatError(f"{where}: {name} has shape {v.shape}, expected ({t},)")
    if v.dtype.kind == "b":
        return v.astype(np.float32)
    if v.dtype.kind not in "fiu" or not np.isin(v, (0, 1)).all():
        raise MinariFormatError(f"{where}: {name} must be booleans (or 0/1)")
    return v.astype(np.float32)


def _check_declared_sizes(did: str, root: Path, where: str) -> None:
    """Refuse an HDF5 file whose arrays declare more bytes than a quarter of this machine's
    memory, before minari reads any of them whole (a few KB of compressed chunks can
    declare terabytes)."""
    import h5py

    data = root / did / "data"
    meta = data / "metadata.json"
    try:
        fmt = json.loads(read_file_bytes(meta, _MAX_JSON, "Minari metadata.json")).get("data_format")
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise MinariFormatError(f"{where}: metadata.json unreadable ({exc})") from None
    if fmt != "hdf5":
        raise MinariFormatError(f"{where}: data_format {fmt!r:.40}: metadt exports and imports "
                                f"the hdf5 storage only")
    limit = memory_bytes() // 4
    total = 0

    def visit(name: str, obj: Any) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            n = obj.dtype.itemsize
            for d in obj.shape or ():
                n *= int(d)
            total += n
            if total > limit:
                raise MinariFormatError(f"{where}: its arrays declare more than {limit} bytes "
                                        f"(a quarter of this machine's memory; at {name!r})")

    try:
        with h5py.File(data / "main_data.hdf5", "r") as f:
            f.visititems(visit)
    except MinariFormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise MinariFormatError(f"{where}: main_data.hdf5 cannot be read ({exc})") from None


def read_minari(did: str, root: str | os.PathLike) -> tuple[str, DatasetCard, "TrajectoryStore"]:
    """One exported Minari dataset as ``(quality, card, store)``, every field checked."""
    minari = require_minari()
    from metadt import TrajectoryStore

    where = f"Minari dataset {did!r} in {root}"
    with datasets_root(root) as abs_root:
        _check_declared_sizes(did, abs_root, where)
        try:
            mds = minari.load_dataset(did)
            meta = mds.storage.metadata
        except (ValueError, OSError, KeyError, TypeError, AssertionError) as exc:
            raise MinariFormatError(f"{where}: cannot be read by minari: {exc}") from None
        card = DatasetCard.from_dict(_json_field(meta, CARD_KEY, where), where=f"{where}: {CARD_KEY}")
        quality = _check_quality_name(meta.get(QUALITY_KEY), where)
        store_meta = _json_field(meta, STORE_META_KEY, where)
        if not isinstance(store_meta, dict):
            raise MinariFormatError(f"{where}: {STORE_META_KEY} must be a JSON object")
        od, ad, n_tasks = card.obs_dim, card.act_dim, len(card.tasks)
        store = TrajectoryStore(od, ad)
        total = int(mds.total_episodes)
        ep_meta = list(mds.storage.get_episode_metadata(range(total)))
        for i, (ep, em) in enumerate(zip(mds.iterate_episodes(), ep_meta)):
            w = f"{where}: episode {i}"
            tid = em.get("task_id")
            if isinstance(tid, np.generic):
                tid = tid.item()
            if not isinstance(tid, int) or isinstance(tid, bool) or not 0 <= tid < n_tasks:
                raise MinariFormatError(f"{w}: task_id {tid!r:.80} is not a task of the card "
                                        f"(an integer in [0, {n_tasks}))")
            params = em.get("task_params")
            if isinstance(params, str):
                try:
                    params = json.loads(params)
                except (ValueError, RecursionError):
                    params = None
            if params != json.loads(json.dumps(card.tasks[tid])):
                raise MinariFormatError(f"{w}: task_params differ from the card's task {tid}")
            rew = _array(ep, "rewards", w)
            if rew.ndim != 1 or not 1 <= rew.shape[0]:
                raise MinariFormatError(f"{w}: rewards has shape {rew.shape}, expected (T,) with T >= 1")
            t = int(rew.shape[0])
            obs = _floats(_array(ep, "observations", w), "observations", (t + 1, od), w)
            act = _floats(_array(ep, "actions", w), "actions", (t, ad), w)
            rew = _floats(rew, "rewards", (t,), w)
            if not math.isfinite(float(np.sum(rew, dtype=np.float64))):
                raise MinariFormatError(f"{w}: the return overflows")
            term = _flags(_array(ep, "terminations", w), "terminations", t, w)
            trunc = _flags(_array(ep, "truncations", w), "truncations", t, w)
            try:
                store.add_episode(obs[:-1], act, rew, next_obs=obs[1:], task=tid, terminals=term,
                                  truncations=trunc)
            except ValueError as exc:
                raise MinariFormatError(f"{w}: {exc}") from None
        if store.num_episodes != total:
            raise MinariFormatError(f"{where}: {store.num_episodes} episodes read, metadata says {total}")
        store.metadata = store_meta
    return quality, card, store


def import_minari(root: str | os.PathLike, out: str | os.PathLike, ids: list[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> Dataset:
    """Read the metadt exports under ``root`` (all, or ``ids``) into a metadt dataset at ``out``.

    Every dataset must carry the same card (one metadt dataset, several qualities).
    """
    ids = list(ids) if ids else find_exports(root)
    if not ids:
        raise FileNotFoundError(f"{root}: no Minari dataset found (expected <id>/data/metadata.json)")
    card: DatasetCard | None = None
    stores: dict[str, "TrajectoryStore"] = {}
    for did in ids:
        quality, c, store = read_minari(did, root)
        if quality in stores:
            raise MinariFormatError(f"{root}: two datasets hold quality {quality!r} (the second: {did!r})")
        if card is None:
            card = c
        elif _card_without_stats(c) != _card_without_stats(card):
            raise MinariFormatError(f"{root}: {did!r} carries another dataset card than {ids[0]!r}; "
                                    f"import them separately (--id)")
        stores[quality] = store
        if progress:
            progress(f"{did}: quality {quality}, {store.num_episodes} episodes, {store.num_steps} steps")
    assert card is not None
    card.qualities = {q: dict(card.qualities.get(q, {})) for q in stores}
    out = Path(out)
    if (out / "card.json").exists():
        raise FileExistsError(f"{out}: already a metadt dataset; choose another --out")
    return write_dataset(out, card, stores)


def _card_without_stats(card: DatasetCard) -> dict:
    d = card.to_dict()
    d.pop("qualities", None)
    return d
