"""Surface-normal evaluation, following the DSINE protocol (Bae & Davison, CVPR 2024).

DSINE (``utils/utils.py``: ``compute_normal_error`` / ``compute_normal_metrics``; ``projects/dsine/test.py``)
computes a per-pixel angular error, collects the errors of the valid pixels of *all* images of a dataset
into one pool, and reports statistics of that pool (not a mean of per-image scores):

    (A)  e_i = arccos( clip( <n_pred_i, n_gt_i> / (|n_pred_i| |n_gt_i|), -1, 1 ) ) * 180 / pi   [degrees]
    (B)  mean, median, rmse = sqrt(mean e_i^2) of the pool
    (C)  a_tau = 100 * mean_i [ e_i < tau ]   for tau in 5, 7.5, 11.25, 22.5, 30   (percent, strict "<")

Valid pixels: the ground-truth mask, finite values in both maps and a non-zero ground-truth normal. A
zero-length *prediction* counts as 90 degrees (as ``torch.cosine_similarity`` with its eps gives); a
non-finite prediction is dropped from the pool with a RuntimeWarning, since dropping it flatters a method.
"""

from __future__ import annotations

import warnings

import numpy as np

NORMAL_THRESHOLDS = {"a5": 5.0, "a7_5": 7.5, "a11_25": 11.25, "a22_5": 22.5, "a30": 30.0}
NORMAL_METRICS = ("mean", "median", "rmse", *NORMAL_THRESHOLDS)
_EPS = 1e-8  # torch.cosine_similarity default eps


def _np(x, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def angular_error(pred, gt, valid=None) -> np.ndarray:
    """Eq. (A): angular error in degrees of each valid pixel, as a 1-D float64 array.

    pred, gt: normals ``[3, H, W]`` (numpy or torch; need not be unit length, both are normalised).
    valid: optional bool mask ``[H, W]``. Shape mismatches raise ValueError naming both shapes.
    """
    p, g = _np(pred), _np(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred has shape {tuple(p.shape)}, gt has {tuple(g.shape)}")
    if p.ndim != 3 or p.shape[0] != 3:
        raise ValueError(f"normals must have shape [3, H, W], got {tuple(p.shape)}")
    g_norm = np.linalg.norm(g, axis=0)  # [H, W]
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(g).all(axis=0) & (g_norm > _EPS)
    if valid is not None:
        v = _np(valid, dtype=bool)
        if v.shape != g.shape[1:]:
            raise ValueError(f"shape mismatch: valid has shape {tuple(v.shape)}, gt has {tuple(g.shape)}")
        mask &= v
    finite_pred = np.isfinite(p).all(axis=0)
    if (mask & ~finite_pred).any():
        warnings.warn(
            f"angular_error: {int((mask & ~finite_pred).sum())} valid pixels have a non-finite prediction "
            "and are left out", RuntimeWarning, stacklevel=2,
        )
    mask &= finite_pred
    p, g, g_norm = p[:, mask], g[:, mask], g_norm[mask]  # [3, N], [3, N], [N]
    p_norm = np.linalg.norm(p, axis=0)
    cos = (p * g).sum(axis=0) / (np.maximum(p_norm, _EPS) * g_norm)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def normal_metrics(errors) -> dict[str, float]:
    """Eq. (B)-(C) for one pool of angular errors (degrees): mean, median, rmse and ``a*`` in percent.

    An empty pool gives NaN for every metric with a RuntimeWarning.
    """
    e = _np(errors).reshape(-1)
    if e.size == 0:
        warnings.warn("normal_metrics: no valid pixel, all metrics are NaN", RuntimeWarning, stacklevel=2)
        return {k: float("nan") for k in NORMAL_METRICS}
    out = {"mean": float(e.mean()), "median": float(np.median(e)), "rmse": float(np.sqrt(np.mean(e**2)))}
    for name, tau in NORMAL_THRESHOLDS.items():
        out[name] = float(100.0 * np.mean(e < tau))
    return out


def pool_normal_metrics(errors_per_image) -> dict[str, float]:
    """DSINE's dataset score: concatenate the per-image error arrays, then ``normal_metrics`` of the pool.

    Every pixel weighs the same, so an image with more valid pixels counts more (unlike the per-image
    mean used for depth).
    """
    arrays = [_np(e).reshape(-1) for e in errors_per_image]
    return normal_metrics(np.concatenate(arrays) if arrays else np.zeros(0))
