"""Rendered toy-world pools, cached on disk: render once, train and evaluate many times.

A pool is ``n`` scenes drawn from a domain mix (e.g. ``toyworld.TRAIN_MIX``: 90% toy Hypersim, 10% toy
Virtual KITTI) with scene indices ``offset .. offset + n - 1``. Disjoint offsets keep the prior's images,
the training pool and the evaluation sets apart. Pools are cached as ``.npz`` under
``$GENPERCEPT_CACHE`` (default ``data/cache``, gitignored), keyed by everything that defines them.
"""

from __future__ import annotations

import numpy as np

from .. import cache
from ..domains import POOL_KEYS  # noqa: F401 (callers read pool.POOL_KEYS)
from ..progress import tqdm
from . import toyworld

# index ranges that never overlap: a scene of the prior is never an evaluation scene
OFFSETS = {"prior": 1_000_000, "train": 0, "eval": 500_000}


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
    if split not in OFFSETS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(OFFSETS)}")
    if n < 1:
        raise ValueError(f"n={n!r}: expected a pool of at least 1 scene")
    spec = {"mix": mix, "n": n, "size": size, "split": split, "seed": seed, "keys": list(keys),
            "renderer": toyworld.VERSION, "subject": bool(subject)}
    path = cache.root() / "toyworld" / f"{split}-{n}-{size}px-{cache.key(spec)}.npz"
    cached = cache.load_npz(path) if use_cache else None
    if cached is not None:
        return cached
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
        cache.save_npz(path, pool)
    return pool
