"""The one on-disk cache: where entries live, what names them, how they are written, locked and read back.

Every cached thing (rendered pools, pose scenes, a profile's own prior, fine-tuned models, training checkpoints) is
named by ``key(spec)``: a hash of everything that defines it plus ``VERSION``. Bumping ``VERSION`` retires every
entry at once, so no key carries exceptions for entries cached before a setting existed. Entries are written to a
temporary path and renamed over (``atomic_path``), built under a lock that a second process waits on
(``entry_lock``), and an unreadable entry is dropped and rebuilt (``load_npz``), never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSION = 2  # 2: the shipped toy SD became the default's prior; the old per-setting key exceptions retired


def root() -> Path:
    """``$GENPERCEPT_CACHE``, else ``data/cache`` in the checkout (gitignored)."""
    return Path(os.environ.get("GENPERCEPT_CACHE") or REPO_ROOT / "data" / "cache")


def key(spec: dict, length: int = 16) -> str:
    """The name of the entry ``spec`` defines (JSON-able): a hash of it and the cache's ``VERSION``."""
    text = json.dumps({"cache_version": VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the user's usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def usual_modes(path: str | os.PathLike) -> None:
    """Give the file ``path``, or every file under the folder ``path``, the mode a new file gets (0666 less the
    umask: 0644 usually). safetensors (>= 0.5) writes its files 0600, so a cached model was readable by its
    owner alone while the results beside it are readable by all. A file this user may not change is left."""
    path, mode = Path(path), 0o666 & ~_umask()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        try:
            if file.stat().st_mode & 0o777 != mode:
                os.chmod(file, mode)
        except OSError:
            pass


class Locked(ValueError):
    """Another process holds a lock that the caller would not wait for (``file_lock(refuse=...)``): one line."""


@contextlib.contextmanager
def file_lock(lock: str | os.PathLike, waiting: str, refuse: str | None = None, stream=None):
    """Hold the POSIX advisory lock (fcntl) on the file ``lock`` (its content: the holder's process id). If
    another process holds it: print ``waiting`` once (to ``stream``, default stdout) and wait for it, or, given
    ``refuse``, raise ``Locked(refuse)`` at once. The holder's id replaces ``{pid}`` in either message. The lock
    goes with the process (a killed holder frees it). Where there is no fcntl, nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            if refuse is not None:
                raise Locked(refuse.replace("{pid}", holder)) from None
            print(waiting.replace("{pid}", holder), file=stream or sys.stdout, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def entry_lock(path: str | os.PathLike, what: str):
    """Hold ``<path>.lock`` while building the cache entry ``path``: a second process that needs the same
    entry (two notebooks run in parallel, ``reproduce --jobs``) waits, then finds it built. It says once that
    it waits. On leaving, the entry's files get the user's usual mode (safetensors writes its files 0600)."""
    with file_lock(f"{path}.lock", f"waiting for another process that builds {what}"):
        yield
        usual_modes(path)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of the cached ``.npz`` at ``path``; None when there is none, or when it is unreadable (truncated,
    corrupt: it is a cache, so it is deleted with a notice and rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # BadZipFile, EOFError, ValueError, OSError ...
        print(f"notice: the cached {path} is unreadable ({type(err).__name__}); building it again")
        path.unlink(missing_ok=True)
        return None


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (a reader never sees half an entry)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
