"""Atomic file writes: temp file in the same directory, fsync, rename.

A reader never sees a half-written file, and a crash mid-write leaves the
previous version intact. Every writer of metadt goes through these.

Temporary files and directories are named ``.<name>.<pid>.<random>.tmp``.
Each write first removes the stale ones of its target: those whose writing
process no longer exists (a killed write), and ones of the older
``.<name>.<random>.tmp`` naming untouched for an hour.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


LEGACY_TEMP_AGE_S = 3600.0
"""Temporary files of the older naming (no pid) are removed when older than this."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files/directories of writes of ``path`` that were killed
    (our naming only); returns what was removed."""
    path = Path(path)
    name = re.escape(path.name)
    ours = re.compile(rf"^\.{name}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
    legacy = re.compile(rf"^\.{name}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for e in entries:
        m = ours.match(e.name)
        if m:
            stale = not _pid_alive(int(m.group(1)))
        elif legacy.match(e.name):
            try:
                stale = now - e.stat(follow_symlinks=False).st_mtime > LEGACY_TEMP_AGE_S
            except FileNotFoundError:
                continue
        else:
            continue
        if not stale:
            continue
        p = Path(e.path)
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed


def _umask() -> int:
    """The process umask (read from /proc on Linux: setting it to read it is not
    thread-safe; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new regular file gets from ``open()``: 0o666 minus the umask (what the
    PNGs get; ``mkstemp`` alone would make every result 0o600)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically, with the umask's mode (as ``open()``); returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


#: The largest JSON file metadt reads (its cards, configs, evaluations and reports are
#: kilobytes to a few megabytes); a larger one is refused before it is read.
MAX_JSON_BYTES = 256 << 20


def memory_bytes() -> int:
    """This machine's physical memory (16 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def read_file_bytes(path: str | os.PathLike, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of ``path``, read as data a user may have received: a regular file
    (a FIFO, socket or device is a ``ValueError``: opening and reading one could block
    forever) of at most ``limit`` bytes (default: half this machine's memory; a larger
    one, e.g. a huge sparse file, is a ``ValueError`` before anything is read). A
    missing file is ``FileNotFoundError``; other OS errors propagate as ``OSError``."""
    path = Path(path)
    limit = memory_bytes() // 2 if limit is None else int(limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not block
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a {what}") from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{path}: is a directory, expected a {what}")
        raise ValueError(f"{path}: not a regular file (a FIFO, socket or device), expected a {what}")
    if st.st_size > limit:
        os.close(fd)
        raise ValueError(f"{path}: {st.st_size} bytes, more than a {what} may have ({limit})")
    with os.fdopen(fd, "rb", buffering=0) as fh:
        chunks, total = [], 0
        while total <= limit:   # the size may change while read: never more than limit + 1 bytes
            chunk = fh.read(min(1 << 24, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        data = b"".join(chunks)
    if len(data) > limit:  # grew while read
        raise ValueError(f"{path}: more than a {what} may have ({limit} bytes)")
    return data


def read_json(path: str | os.PathLike) -> Any:
    """A metadt JSON file, read as data a user may have received (:func:`read_file_bytes`,
    at most :data:`MAX_JSON_BYTES`): UTF-8, valid JSON, else ``ValueError``."""
    data = read_file_bytes(path, MAX_JSON_BYTES, "JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (not UTF-8: {exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None


CHECKSUM_KEY = "sha256"


def _json_digest(obj: dict) -> str:
    import hashlib

    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def atomic_write_checked_json(path: str | os.PathLike, obj: dict) -> Path:
    """`atomic_write_json` of a dict with a ``"sha256"`` of its canonical JSON added
    (read back with :func:`read_checked_json`)."""
    return atomic_write_json(path, {**obj, CHECKSUM_KEY: _json_digest(obj)})


def read_checked_json(path: str | os.PathLike, hint: str = "") -> dict:
    """A dict written by :func:`atomic_write_checked_json`; ``ValueError`` (ending with
    ``hint``) when it is not an object, has no checksum or the checksum fails."""
    obj = read_json(path)
    suffix = f"; {hint}" if hint else ""
    if not isinstance(obj, dict) or not isinstance(obj.get(CHECKSUM_KEY), str):
        raise ValueError(f"{path}: not a checksummed JSON object{suffix}")
    if obj[CHECKSUM_KEY] != _json_digest(obj):
        raise ValueError(f"{path}: checksum mismatch: the file is damaged{suffix}")
    return {k: v for k, v in obj.items() if k != CHECKSUM_KEY}


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync (a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _staged(path: Path) -> tuple[Path, Path]:
    return path.with_name(f".{path.name}.new"), path.with_name(f".{path.name}.old")


def _promote(path: Path) -> None:
    """Steps 2-4 of a directory commit: ``path`` -> ``.old``, ``.new`` -> ``path``, drop ``.old``."""
    new, old = _staged(path)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        _fsync_dir(path.parent)
    os.replace(new, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(path: str | os.PathLike) -> Path:
    """Finish (or undo) a commit of :func:`atomic_directory` that a kill interrupted, and
    remove stale temporaries; afterwards ``path`` is the last committed version (or
    absent if none was). Call before reading a directory written by `atomic_directory`.

    A commit is: fill a temporary, rename it to ``.<name>.new`` (complete from then
    on), rename ``path`` to ``.<name>.old``, ``.<name>.new`` to ``path``, remove
    ``.<name>.old``. A kill after any step leaves a state this function completes.
    """
    path = Path(path)
    new, old = _staged(path)
    if new.is_dir():
        _promote(path)
    elif old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # the older two-rename commit, killed between its renames: keep the old version
            os.replace(old, path)
            _fsync_dir(path.parent)
    clean_stale_temps(path)
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place.

    Yields the temporary directory to fill. On success an existing `path` is
    replaced (the old one is removed only after the new one is complete); on
    error the temporary directory is removed and `path` is untouched. A kill at
    any point leaves either version, restored by :func:`recover_directory`
    (which this calls first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # as mkdir (mkdtemp alone: 0o700)
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        new, _ = _staged(path)
        os.replace(tmp, new)  # from here on the new version is complete and will win
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _promote(path)
