"""Batches of scenes and the seeded draw of training scenes over a domain mix."""

from __future__ import annotations

import numpy as np

from ...domains import DEFAULT_SIZE, MIN_SIZE, TRAIN_MIX, _check_args, _rng
from .render import render

# --- batches and sampling --------------------------------------------------------------------------------
_LIST_KEYS = ("keypoints", "joints3d", "boxes", "areas", "domain")


def render_batch(domain: str, indices, size: int = DEFAULT_SIZE) -> dict:
    """Render several scenes of one domain; arrays are stacked on a leading batch axis, the per-person
    labels (keypoints, joints3d, boxes, areas) stay lists because N varies."""
    samples = [render(domain, i, size) for i in indices]
    if not samples:
        raise ValueError("indices must not be empty")
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        out[key] = vals if key in _LIST_KEYS else np.stack([np.asarray(v) for v in vals])
    out["domain"] = domain
    return out


def sample_training_indices(n: int, seed: int = 0, mix: dict | None = None) -> list[tuple[str, int]]:
    """``n`` (domain, index) pairs drawn with the paper's training mix (90 % Hypersim-like, 10 % VKITTI-like
    by default); indices are distinct per domain, drawn from [0, 2**31)."""
    mix = TRAIN_MIX if mix is None else mix
    for name in mix:
        _check_args(name, 0, MIN_SIZE)
    rng = _rng("train-mix", seed)
    names = list(mix)
    p = np.array([mix[k] for k in names], float)
    doms = rng.choice(len(names), size=n, p=p / p.sum())
    idx = rng.choice(2**31, size=n, replace=False)
    return [(names[d], int(i)) for d, i in zip(doms, idx)]


