"""Alpha-matting errors as the P3M-500 benchmark reports them (Li et al., ACM MM 2021).

Source: github.com/JizhiziLi/P3M, ``core/evaluate.py`` (the metric functions) and ``core/test.py`` (which
calls them on mattes in [0, 1] and reports the plain mean of the per-image values over the test set). Our
code is written from those definitions. With p the prediction, g the ground truth, both in [0, 1], [H, W]:

    (A) SAD  = sum |p - g| / 1000                      whole image
    (B) MSE  = sum (p - g)^2 / (H W),  MAD = sum |p - g| / (H W)
    (C) Grad = sum ( |grad G_s * p| - |grad G_s * g| )^2 / 10
        ``scipy.ndimage.gaussian_filter(a, 1.4, order=(1, 0) / (0, 1))``: a separable filter, a Gaussian
        derivative along one axis and a Gaussian along the other; sigma = 1.4, radius int(4 * 1.4 + 0.5) = 6
        (13 taps), Gaussian weights exp(-x^2 / 2 sigma^2) normalised to sum 1, derivative weights
        -x / sigma^2 times those, border mode 'reflect' (d c b a | a b c d). P3M writes the filter outputs in
        float32; we keep float64 (relative differences ~1e-6).
    (D) Conn = sum |phi(p) - phi(g)| / 1000,  phi(a) = 1 - d [d >= 0.15],  d = a - l
        l: for t_i = i * 0.1 (i = 1..10, np.arange values), Omega_i is the largest 4-connected component
        (``skimage.measure.label(connectivity=1)``, ties to the lowest label) of {p >= t_i} & {g >= t_i};
        a pixel first outside Omega_i gets l = t_{i-1}. If the intersection is empty, P3M skips the level,
        and pixels never assigned get l = 1 (held in float32, as in P3M). Hence an all-zero prediction scores
        Conn = 0 under P3M's definition, and a gt of exactly 0.6 (= 153/255) is below t_6 = 0.6000000000000001.

Trimaps (uint8, 0 background / 128 unknown / 255 foreground). P3M's trimap variants (its "SAD/MSE/MAD
TRIMAP"): the prediction is first overwritten with 0 / 1 on the known pixels, SAD is then summed over the
whole image (/1000), and MSE/MAD are the whole-image sums divided by the number of unknown pixels. P3M has
no trimap Grad or Conn; ours use the same overwritten prediction and sum the per-pixel error maps of (C)
and (D) over the unknown pixels only (as Deep Image Matting does), with the scales of (C) and (D). A
trimap without unknown pixels is a ValueError (P3M would divide by zero).

Other conventions. Deep Image Matting / Composition-1K (Xu et al. 2017, ``evaluate.m``) sums every error
over the unknown region only. Its Grad rescales each 8-bit matte to [0, 1] by its own min and max
(``mat2gray``), filters with a 9 x 9 kernel G(x) G'(y) scaled to unit L2 norm with 'replicate' borders and
divides by 1000; that kernel's gain is ~9.7x scipy's (squared: ~94-97x), so a DIM Grad is about the (C)
sum / 10.4-10.7 on the same region: near, never equal to, P3M's / 10. Its Conn is (D) on 8-bit / 255
mattes in single precision, over the unknown region, / 1000. The two protocols' numbers do not mix.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label

SAD_SCALE = 1000.0  # SAD and Conn are reported / 1000
GRAD_SCALE = 10.0  # P3M reports Grad / 10 on [0, 1] mattes
GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15
TRIMAP_VALUES = (0, 128, 255)
METRICS = ("SAD", "MSE", "MAD", "Grad", "Conn")


# ----------------------------------------------------------------------------------------------- input checks
def _array2d(x, name: str) -> np.ndarray:
    """x (numpy / torch / nested list) as a float64 [H, W] array, or a one-line ValueError naming it."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a 2-D numeric array, got {type(x).__name__}") from None
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D [H, W] array, got shape {tuple(a.shape)}")
    return a


def _alpha(x, name: str, shape=None) -> np.ndarray:
    a = _array2d(x, name)  # [H, W]
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name}: shape {a.shape} does not match the prediction's {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} values are NaN or inf; expected finite alphas")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"{name}: values in [{a.min():g}, {a.max():g}]; expected alphas in [0, 1] (8-bit / 255)")
    return a


def _trimap(x, name: str, shape) -> np.ndarray:
    t = _array2d(x, name)  # [H, W]
    if t.shape != shape:
        raise ValueError(f"{name}: shape {t.shape} does not match the prediction's {shape}")
    bad = ~np.isin(t, TRIMAP_VALUES)
    if bad.any():
        raise ValueError(f"{name}: has values {np.unique(t[bad])[:5].tolist()}; expected only 0, 128, 255")
    if not (t == 128).any():
        raise ValueError(f"{name}: no unknown (128) pixels; the trimap metrics are undefined")
    return t.astype(np.uint8)


def _inputs(pred, gt, trimap, names=("pred", "gt", "trimap")):
    """Validated (pred, gt, trimap-or-None); with a trimap, pred is overwritten with 0 / 1 on known pixels."""
    p = _alpha(pred, names[0])
    g = _alpha(gt, names[1], p.shape)
    if trimap is None:
        return p, g, None
    t = _trimap(trimap, names[2], p.shape)
    p = np.where(t == 255, 1.0, np.where(t == 0, 0.0, p))  # P3M: known pixels take the trimap's value
    return p, g, t


# -------------------------------------------------------------------------------------------- per-image metrics
def sad(pred, gt, trimap=None) -> float:
    """Eq. (A): sum |p - g| / 1000 over the whole image (with a trimap: p overwritten on known pixels)."""
    p, g, _ = _inputs(pred, gt, trimap)
    return float(np.abs(p - g).sum() / SAD_SCALE)


def mse(pred, gt, trimap=None) -> float:
    """Eq. (B): sum (p - g)^2 / N, N = H * W, or with a trimap the number of unknown pixels (P3M)."""
    p, g, t = _inputs(pred, gt, trimap)
    n = p.size if t is None else int((t == 128).sum())
    return float(np.square(p - g).sum() / n)


def mad(pred, gt, trimap=None) -> float:
    """Eq. (B): sum |p - g| / N, N as in ``mse``."""
    p, g, t = _inputs(pred, gt, trimap)
    n = p.size if t is None else int((t == 128).sum())
    return float(np.abs(p - g).sum() / n)


def gradient_magnitude(a: np.ndarray) -> np.ndarray:
    """|grad G_sigma * a| with sigma = 1.4, scipy's Gaussian derivative filters, 'reflect' borders. [H, W]."""
    d0 = ndimage.gaussian_filter(a, GRAD_SIGMA, order=(1, 0), mode="reflect", truncate=4.0)  # [H, W]
    d1 = ndimage.gaussian_filter(a, GRAD_SIGMA, order=(0, 1), mode="reflect", truncate=4.0)  # [H, W]
    return np.sqrt(d0**2 + d1**2)


def grad(pred, gt, trimap=None) -> float:
    """Eq. (C): sum (|grad p| - |grad g|)^2 / 10; with a trimap, summed over unknown pixels (ours)."""
    p, g, t = _inputs(pred, gt, trimap)
    err = np.square(gradient_magnitude(p) - gradient_magnitude(g))  # [H, W]
    return float((err if t is None else err[t == 128]).sum() / GRAD_SCALE)


def connectivity_levels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The level map l of eq. (D), float32 [H, W]: where each pixel leaves the largest common component."""
    level = np.full(pred.shape, -1.0, dtype=np.float32)  # -1 = not yet assigned
    steps = np.arange(0.0, 1.0 + CONN_STEP, CONN_STEP)  # t_0 .. t_10, the same floats as P3M's arange
    for t_prev, t in zip(steps[:-1], steps[1:]):
        labels = label((pred >= t) & (gt >= t), connectivity=1)  # 4-connected, 0 = background
        if labels.max() == 0:
            continue  # P3M skips an empty level: the pixels left end at l = 1
        omega = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])  # largest component
        level[(level == -1) & ~omega] = t_prev
    level[level == -1] = 1.0
    return level


def conn(pred, gt, trimap=None) -> float:
    """Eq. (D): sum |phi(p) - phi(g)| / 1000, theta = 0.15; with a trimap, over unknown pixels (ours)."""
    p, g, t = _inputs(pred, gt, trimap)
    level = connectivity_levels(p, g)  # [H, W]
    phi = lambda a: 1.0 - (a - level) * ((a - level) >= CONN_THETA)
    err = np.abs(phi(p) - phi(g))  # [H, W]
    return float((err if t is None else err[t == 128]).sum() / SAD_SCALE)


# ---------------------------------------------------------------------------------------------------- dataset
def _as_list(x, name: str) -> list:
    if x is None or isinstance(x, (str, bytes)) or getattr(x, "ndim", 3) == 2 or not hasattr(x, "__len__"):
        raise ValueError(f"{name}: expected a list of 2-D mattes (or an [N, H, W] array), got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError(f"{name}: is empty; expected at least one matte")
    return list(x)


def evaluate(preds, gts, trimaps=None) -> dict[str, float]:
    """SAD, MSE, MAD, Grad, Conn: the mean of the per-image values (P3M ``core/test.py``).

    preds, gts: lists of [H, W] alphas in [0, 1] (numpy or torch); trimaps: optional list of uint8 [H, W]
    trimaps (0 / 128 / 255), giving the unknown-region variants described in the module docstring.
    """
    preds, gts = _as_list(preds, "preds"), _as_list(gts, "gts")
    if len(gts) != len(preds):
        raise ValueError(f"gts: length {len(gts)} does not match preds' length {len(preds)}")
    if trimaps is not None:
        trimaps = _as_list(trimaps, "trimaps")
        if len(trimaps) != len(preds):
            raise ValueError(f"trimaps: length {len(trimaps)} does not match preds' length {len(preds)}")
    totals = dict.fromkeys(METRICS, 0.0)
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        names = (f"preds[{i}]", f"gts[{i}]", f"trimaps[{i}]")
        p, g, t = _inputs(pred, gt, None if trimaps is None else trimaps[i], names)
        # errors name the list and index here; the per-image calls re-check (cheap; the overwrite is idempotent)
        for key, fn in zip(METRICS, (sad, mse, mad, grad, conn)):
            totals[key] += fn(p, g, t)
    return {k: v / len(preds) for k, v in totals.items()}
