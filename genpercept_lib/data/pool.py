"""Rendered toy-world pools, cached on disk: render once, train and evaluate many times.

A pool is ``n`` scenes drawn from a domain mix (e.g. ``toyworld.TRAIN_MIX``: 90% toy Hypersim, 10% toy
Virtual KITTI) with scene indices ``offset .. offset + n - 1``. Disjoint offsets keep the prior's images,
the training pool and the evaluation sets apart. Pools are cached as ``.npz`` under
``$GENPERCEPT_CACHE`` (default ``data/cache``, gitignored), keyed by everything that defines them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..progress import tqdm
from ..results import REPO_ROOT, atomic_path, usual_modes

POOL_KEYS = ("rgb", "depth", "valid", "normal")
# index ranges that never overlap: a scene of the prior is never an evaluation scene
OFFSETS = {"prior": 1_000_000, "train": 0, "eval": 500_000}


def cache_root() -> Path:
    return Path(os.environ.get("GENPERCEPT_CACHE") or REPO_ROOT / "data" / "cache")


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
def cache_lock(path: str | os.PathLike, what: str):
    """Hold ``<path>.lock`` while building the cache entry ``path``: a second process that needs the same
    entry (two notebooks run in parallel, ``reproduce --jobs``) waits, then finds it built. It says once that
    it waits. On leaving, the entry's files get the user's usual mode (``results.usual_modes``: safetensors
    writes its files 0600, the results are 0644 under the usual umask)."""
    with file_lock(f"{path}.lock", f"waiting for another process that builds {what}"):
        yield
        usual_modes(path)


def domain_draws(mix: dict[str, float] | str, n: int, seed: int) -> list[str]:
    if isinstance(mix, str):
        return [mix] * n
    names = sorted(mix)
    weights = np.array([mix[k] for k in names], dtype=np.float64)
    rng = np.random.default_rng(seed)
    return [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]


def render_pool(
    mix: dict[str, float] | str,
    n: int,
    size: int,
    split: str = "train",
    seed: int = 0,
    keys: tuple[str, ...] = POOL_KEYS,
    use_cache: bool = True,
    subject: bool = False,
) -> dict[str, np.ndarray]:
    """``n`` rendered scenes stacked per key (``rgb`` [n, 3, H, W], ``depth`` [n, H, W], ...) + ``domain``.
    ``subject=True`` frames each scene's foreground object as its subject (``toyworld.render(subject=True)``: the
    DIS and matting tasks' pools); it enters the cache key only when set, so plain pools keep theirs."""
    from . import toyworld

    if split not in OFFSETS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(OFFSETS)}")
    if n < 1:
        raise ValueError(f"n={n!r}: expected a pool of at least 1 scene")
    spec = {"mix": mix, "n": n, "size": size, "split": split, "seed": seed, "keys": list(keys),
            "renderer": toyworld.VERSION}
    if subject:
        spec["subject"] = True
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "toyworld" / f"{split}-{n}-{size}px-{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception as err:  # a truncated or corrupt .npz (BadZipFile, EOFError, ...): it is a cache
            print(f"notice: the cached renders {path} are unreadable ({type(err).__name__}); rendering them again")
            path.unlink(missing_ok=True)
    domains = domain_draws(mix, n, seed)
    columns: dict[str, list] = {k: [] for k in keys}
    label = mix if isinstance(mix, str) else "+".join(sorted(mix))
    for i, domain in enumerate(tqdm(domains, desc=f"render {label} ({split})", leave=False)):
        scene = toyworld.render(domain, OFFSETS[split] + i, size, subject=bool(subject))
        for k in keys:
            columns[k].append(scene[k])
    # C-contiguous, as arrays read back from the cache are: a strided array (normals come out of the renderer
    # transposed) would reach the VAE with another memory layout and other convolution kernels (~1e-5 apart)
    pool = {k: np.ascontiguousarray(np.stack(v)) for k, v in columns.items()}
    pool["domain"] = np.array(domains)
    if use_cache:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **pool)
    return pool
