"""Affine-invariant depth evaluation, following the Marigold protocol (Ke et al., CVPR 2024).

GenPercept evaluates depth exactly as Marigold does (its ``eval.py`` is Marigold's), and reports AbsRel and
delta_1 on KITTI, NYU, ScanNet, DIODE and ETH3D (supplementary Table 2). Per image:

1. valid mask: ``min_depth < gt < max_depth`` (strict, Marigold ``BaseDepthDataset._get_valid_mask``) and the
   dataset's evaluation crop (NYU: Eigen crop; KITTI: Eigen crop after the 352x1216 benchmark crop).
2. least-squares scale and shift (closed form, eq. (A) below) of the prediction onto the ground truth,
   either in depth space (``space="depth"``, Marigold ``--alignment least_square``) or in disparity space
   (``space="disparity"``, ``--alignment least_square_disparity``: fit to 1/gt, clip the aligned disparity
   to >= 1e-3, invert).
3. clip the aligned prediction to ``[min_depth, max_depth]`` and then to ``>= 1e-6``.
4. metrics over the valid pixels (eq. (B)-(C)); the dataset score is the mean over images (``mean_metrics``).

    (A)  (s, t) = argmin_{s,t} sum_{i in valid} (s * pred_i + t - gt_i)^2
    (B)  AbsRel = mean_i |pred_i - gt_i| / gt_i
    (C)  delta_k = mean_i [ max(pred_i / gt_i, gt_i / pred_i) < 1.25^k ]      (strict "<")

Departures from Marigold, all on inputs Marigold never sees:
* NaN / inf in ``gt`` or ``pred`` are removed from the valid mask (never propagated), and so is ``gt <= 0``
  (AbsRel divides by gt). Dropping non-finite *predictions* would flatter a method, so it warns.
* An image with no valid pixel returns NaN for every metric with a ``RuntimeWarning``; ``mean_metrics``
  skips such images (with a warning saying how many) instead of letting NaN poison the dataset mean.

Arrays may be numpy or torch; everything is computed in numpy float64 and metrics are Python floats.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# Per-dataset evaluation settings of the Marigold protocol (prs-eth/Marigold, ``src/dataset/*_dataset.py``
# and ``config/dataset/data_*_test.yaml``; GenPercept's ``config/dataset/eval/*.yaml`` are the same):
#   nyu      NYUDataset:     min 1e-3, max 10,   eigen_valid_mask: true            (crop 45:471, 41:601)
#   kitti    KITTIDataset:   min 1e-5, max 80,   kitti_bm_crop: true, valid_mask_crop: eigen
#   scannet  ScanNetDataset: min 1e-3, max 10
#   diode    DIODEDataset:   min 0.6,  max 350,  valid mask read from the dataset's own mask file; the range
#                            is only used to clip predictions (``range_mask=False``)
#   eth3d    ETH3DDataset:   min 1e-5, max inf   (inf depth decoded as 0, i.e. invalid)
DATASET_EVAL: dict[str, dict] = {
    "nyu": dict(min_depth=1e-3, max_depth=10.0, crop="nyu_eigen"),
    "kitti": dict(min_depth=1e-5, max_depth=80.0, crop="kitti_eigen"),
    "scannet": dict(min_depth=1e-3, max_depth=10.0, crop=None),
    "diode": dict(min_depth=0.6, max_depth=350.0, crop=None, range_mask=False),
    "eth3d": dict(min_depth=1e-5, max_depth=math.inf, crop=None),
}

# Evaluation crops as fractions (top/H, bottom/H, left/W, right/W); rows top:bottom, cols left:right.
# nyu_eigen: Eigen et al. (NIPS 2014) crop of the 480x640 NYUv2 frames, 45:471, 41:601 in Marigold.
# kitti_eigen / kitti_garg: fractions from BTS (cleinc/bts ``bts_eval.py``) as used by Marigold, applied to
# the ground truth after the KITTI benchmark crop (``kitti_benchmark_crop``); indices use int() as there.
NYU_EIGEN_CROP_480x640 = (45, 471, 41, 601)
CROPS: dict[str, tuple[float, float, float, float]] = {
    "nyu_eigen": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
    "kitti_eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "kitti_garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}
KITTI_BENCHMARK_HW = (352, 1216)

DEPTH_METRICS = (
    "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3", "i_rmse", "silog_rmse",
)
MIN_DISPARITY = 1e-3   # Marigold eval.py: aligned disparity clipped to >= 1e-3 before inversion
MIN_PRED_DEPTH = 1e-6  # Marigold eval.py: "clip to d > 0 for evaluation"


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _np(x, dtype=np.float64) -> np.ndarray:
    """numpy or torch -> numpy array of ``dtype`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)}, {name_b} has {tuple(b.shape)}"
        )


def _mask(pred, gt, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, gt, mask) as float64/bool arrays; mask = valid & finite(pred) & finite(gt) & gt > 0."""
    p, g = _np(pred), _np(gt)
    _check_same_shape(p, g, "pred", "gt")
    with np.errstate(invalid="ignore"):
        m = np.isfinite(p) & np.isfinite(g) & (g > 0)
    if valid is not None:
        v = _np(valid, dtype=bool)
        _check_same_shape(v, g, "valid", "gt")
        m &= v
    return p, g, m


def _empty(name: str) -> float:
    warnings.warn(f"{name}: no valid pixel, returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


# ---------------------------------------------------------------------------------------------------------
# masks and crops
# ---------------------------------------------------------------------------------------------------------
def crop_box(crop: str, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel bounds ``(top, bottom, left, right)`` of an evaluation crop on an ``height x width`` image.

    ``nyu_eigen`` gives exactly 45:471, 41:601 on 480x640 (Marigold ``NYUDataset``) and scales the same
    fractions (rounded) for other sizes; ``kitti_eigen`` / ``kitti_garg`` use ``int(fraction * size)`` as
    Marigold ``KITTIDataset._get_valid_mask`` does.
    """
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}: expected one of {', '.join(CROPS)}")
    ft, fb, fl, fr = CROPS[crop]
    if crop == "nyu_eigen":
        if (height, width) == (480, 640):
            return NYU_EIGEN_CROP_480x640
        return round(ft * height), round(fb * height), round(fl * width), round(fr * width)
    return int(ft * height), int(fb * height), int(fl * width), int(fr * width)


def kitti_benchmark_crop(x):
    """Crop the last two dims to the KITTI benchmark size 352x1216 (bottom rows, horizontally centred).

    Marigold applies this to the KITTI RGB and ground truth before evaluation (``kitti_bm_crop: true``);
    the ``kitti_eigen`` crop is then taken on the cropped ground truth. Works on numpy and torch.
    """
    h, w = x.shape[-2:]
    ch, cw = KITTI_BENCHMARK_HW
    if h < ch or w < cw:
        raise ValueError(f"KITTI benchmark crop needs at least {ch}x{cw}, got {h}x{w}")
    top, left = h - ch, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def resolve_eval_range(dataset: str | None = None, *, min_depth: float | None = None,
                       max_depth: float | None = None, crop: str | None = "dataset") -> dict:
    """The evaluation settings for ``dataset``, with explicit keyword values taking precedence.

    Known datasets come from ``DATASET_EVAL`` (Marigold protocol). Toy-world datasets (names starting with
    ``toy_``) and ``dataset=None`` have no table entry: their range is passed explicitly, and defaults to
    ``min_depth=0`` (i.e. gt > 0), ``max_depth=inf``, no crop. ``crop="dataset"`` keeps the dataset's
    crop, ``crop=None`` removes it, a name from ``CROPS`` replaces it.
    """
    if dataset is None or dataset.startswith("toy_"):
        base = dict(min_depth=0.0, max_depth=math.inf, crop=None)
    elif dataset in DATASET_EVAL:
        base = dict(DATASET_EVAL[dataset])
    else:
        raise ValueError(
            f"unknown dataset {dataset!r}: expected one of {', '.join(DATASET_EVAL)}, a 'toy_*' name or None"
        )
    if min_depth is not None:
        base["min_depth"] = float(min_depth)
    if max_depth is not None:
        base["max_depth"] = float(max_depth)
    if crop != "dataset":
        base["crop"] = crop
    base.setdefault("range_mask", True)
    if not base["min_depth"] < base["max_depth"]:
        raise ValueError(f"min_depth {base['min_depth']} must be below max_depth {base['max_depth']}")
    return base


def eval_mask(gt, dataset: str | None = None, extra_valid=None, *, min_depth: float | None = None,
              max_depth: float | None = None, crop: str | None = "dataset") -> np.ndarray:
    """Boolean evaluation mask of the Marigold protocol for a ground-truth depth map ``[..., H, W]``.

    ``min_depth < gt < max_depth`` (strict; skipped for DIODE, whose validity comes from its own mask file:
    pass that as ``extra_valid``), ``gt`` finite and > 0, inside the dataset's crop, and ``extra_valid``.
    ``dataset`` picks the row of ``DATASET_EVAL``; ``toy_*`` names (and None) take ``min_depth`` /
    ``max_depth`` / ``crop`` from the keywords, e.g. ``eval_mask(gt, "toy_rooms", min_depth=0.1,
    max_depth=20.0)``. Keywords also override a known dataset's values; ``crop="dataset"`` (default) keeps
    the dataset's crop, ``crop=None`` drops it. The crop applies to the last two dims.
    """
    g = _np(gt)
    if g.ndim < 2:
        raise ValueError(f"gt must have at least 2 dims [..., H, W], got shape {tuple(g.shape)}")
    cfg = resolve_eval_range(dataset, min_depth=min_depth, max_depth=max_depth, crop=crop)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(g) & (g > 0)
        if cfg["range_mask"]:
            mask &= (g > cfg["min_depth"]) & (g < cfg["max_depth"])
    if cfg["crop"] is not None:
        top, bottom, left, right = crop_box(cfg["crop"], *g.shape[-2:])
        in_crop = np.zeros(g.shape[-2:], dtype=bool)
        in_crop[top:bottom, left:right] = True
        mask &= in_crop
    if extra_valid is not None:
        v = _np(extra_valid, dtype=bool)
        _check_same_shape(v, g, "extra_valid", "gt")
        mask &= v
    return mask


# ---------------------------------------------------------------------------------------------------------
# alignment
# ---------------------------------------------------------------------------------------------------------
def _fit_grid(x: np.ndarray, max_resolution: int | None) -> np.ndarray:
    """The samples Marigold's ``align_depth_least_square(..., max_resolution)`` fits on: when the image is
    larger than ``max_resolution`` it applies ``torch.nn.Upsample(scale_factor, mode="nearest")`` to the
    [1, H, W] map, which (a 3-D input) resamples the *last axis only*: every row, every ~1/scale-th column.
    We reproduce that, quirk included (GenPercept's ETH3D evaluation uses ``--alignment_max_res 1024``)."""
    if max_resolution is None:
        return x
    scale = float(np.min(max_resolution / np.array(x.shape[-2:])))
    if scale >= 1:
        return x
    import torch

    t = torch.as_tensor(x, dtype=torch.float64 if x.dtype != bool else torch.float32)[None]  # [1, H, W]
    out = torch.nn.functional.interpolate(t, scale_factor=scale, mode="nearest")[0].numpy()  # [H, W']
    return out.astype(bool) if x.dtype == bool else out


def align_scale_shift(pred, gt, valid=None, max_resolution: int | None = None) -> tuple[np.ndarray, float, float]:
    """Least-squares scale and shift of ``pred`` onto ``gt`` over ``valid``, eq. (A); returns
    ``(s * pred + t, s, t)`` with the aligned map at full size (Marigold ``align_depth_least_square``).

    Closed form: with P = [pred_valid, 1], (s, t) = lstsq(P, gt_valid). Non-finite pixels of either input
    and ``gt <= 0`` are left out of the fit. With no valid pixel, s = t = NaN (and a warning).
    ``max_resolution``: fit on Marigold's subsampled grid (``_fit_grid``), apply at full size.
    """
    p, g, m = _mask(pred, gt, valid)
    if max_resolution is not None:
        full = p
        aligned, s, t = align_scale_shift(_fit_grid(p, max_resolution), _fit_grid(g, max_resolution),
                                          _fit_grid(m, max_resolution))
        return s * full + t, s, t
    if not m.any():
        warnings.warn("align_scale_shift: no valid pixel, scale and shift are NaN", RuntimeWarning,
                      stacklevel=2)
        return np.full_like(p, np.nan), float("nan"), float("nan")
    A = np.stack([p[m], np.ones(int(m.sum()))], axis=1)  # [N, 2]
    (s, t), *_ = np.linalg.lstsq(A, g[m], rcond=None)
    return s * p + t, float(s), float(t)


def align_depth(pred, gt, valid=None, space: str = "depth",
                min_disparity: float = MIN_DISPARITY, max_resolution: int | None = None) -> np.ndarray:
    """Align an affine-invariant prediction to metric ``gt`` depth and return aligned *depth*.

    ``space="depth"``: eq. (A) directly on depth. ``space="disparity"``: the prediction is treated as an
    affine-invariant disparity, fitted to 1/gt over pixels with gt > 0 and pred > 0, the aligned disparity
    is clipped to ``>= min_disparity`` (Marigold: 1e-3) and inverted to depth.
    """
    if space == "depth":
        return align_scale_shift(pred, gt, valid, max_resolution)[0]
    if space != "disparity":
        raise ValueError(f"unknown alignment space {space!r}: expected 'depth' or 'disparity'")
    p, g, m = _mask(pred, gt, valid)
    with np.errstate(divide="ignore", invalid="ignore"):
        gt_disparity = np.where(m, 1.0 / np.where(m, g, 1.0), 0.0)
        m_fit = m & (p > 0)
    disparity, _, _ = align_scale_shift(p, gt_disparity, m_fit, max_resolution)
    return 1.0 / np.clip(disparity, min_disparity, None)


# ---------------------------------------------------------------------------------------------------------
# metrics (Marigold src/util/metric.py), each over the valid pixels of one image
# ---------------------------------------------------------------------------------------------------------
def _positive_pred(p: np.ndarray, name: str) -> None:
    if (p <= 0).any():
        raise ValueError(f"{name} needs positive predictions on valid pixels (clip as evaluate_depth does)")


def abs_rel(pred, gt, valid=None) -> float:
    """Eq. (B): mean |pred - gt| / gt over valid pixels."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("abs_rel")
    return float(np.mean(np.abs(p[m] - g[m]) / g[m]))


def sq_rel(pred, gt, valid=None) -> float:
    """mean (pred - gt)^2 / gt over valid pixels."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("sq_rel")
    return float(np.mean((p[m] - g[m]) ** 2 / g[m]))


def rmse(pred, gt, valid=None) -> float:
    """sqrt(mean (pred - gt)^2) over valid pixels."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("rmse")
    return float(np.sqrt(np.mean((p[m] - g[m]) ** 2)))


def rmse_log(pred, gt, valid=None) -> float:
    """sqrt(mean (log pred - log gt)^2) over valid pixels (positive predictions required)."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("rmse_log")
    _positive_pred(p[m], "rmse_log")
    return float(np.sqrt(np.mean((np.log(p[m]) - np.log(g[m])) ** 2)))


def log10(pred, gt, valid=None) -> float:
    """mean |log10 pred - log10 gt| over valid pixels (positive predictions required)."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("log10")
    _positive_pred(p[m], "log10")
    return float(np.mean(np.abs(np.log10(p[m]) - np.log10(g[m]))))


def i_rmse(pred, gt, valid=None) -> float:
    """RMSE of inverse depth, sqrt(mean (1/pred - 1/gt)^2) (positive predictions required)."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("i_rmse")
    _positive_pred(p[m], "i_rmse")
    return float(np.sqrt(np.mean((1.0 / p[m] - 1.0 / g[m]) ** 2)))


def silog_rmse(pred, gt, valid=None) -> float:
    """Scale-invariant log RMSE x 100: 100 * sqrt(mean(d^2) - mean(d)^2), d = log pred - log gt."""
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("silog_rmse")
    _positive_pred(p[m], "silog_rmse")
    d = np.log(p[m]) - np.log(g[m])
    return float(100.0 * np.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0)))


def threshold_accuracy(pred, gt, valid=None, threshold: float = 1.25) -> float:
    """Eq. (C): fraction of valid pixels with max(pred/gt, gt/pred) < threshold (strict).

    Non-positive predictions never count as accurate (their ratio is taken as +inf).
    """
    p, g, m = _mask(pred, gt, valid)
    if not m.any():
        return _empty("threshold_accuracy")
    p, g = p[m], g[m]
    with np.errstate(divide="ignore"):
        ratio = np.where(p > 0, np.maximum(p / g, g / np.where(p > 0, p, 1.0)), np.inf)
    return float(np.mean(ratio < threshold))


def delta1(pred, gt, valid=None) -> float:
    """delta_1: fraction with max(pred/gt, gt/pred) < 1.25 (a ratio of exactly 1.25 does not count)."""
    return threshold_accuracy(pred, gt, valid, 1.25)


def delta2(pred, gt, valid=None) -> float:
    """delta_2: threshold 1.25^2."""
    return threshold_accuracy(pred, gt, valid, 1.25**2)


def delta3(pred, gt, valid=None) -> float:
    """delta_3: threshold 1.25^3."""
    return threshold_accuracy(pred, gt, valid, 1.25**3)


_METRIC_FNS = dict(
    abs_rel=abs_rel, sq_rel=sq_rel, rmse=rmse, rmse_log=rmse_log, log10=log10, delta1=delta1, delta2=delta2,
    delta3=delta3, i_rmse=i_rmse, silog_rmse=silog_rmse,
)


# ---------------------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------------------
def evaluate_depth(pred, gt, valid=None, *, space: str | None = "depth", dataset: str | None = None,
                   min_depth: float | None = None, max_depth: float | None = None,
                   crop: str | None = "dataset", min_disparity: float = MIN_DISPARITY,
                   align_max_res: int | None = None) -> dict[str, float]:
    """All ``DEPTH_METRICS`` of one image under the Marigold protocol (steps 1-4 of the module docstring).

    pred, gt: [H, W] (numpy or torch). valid: optional extra mask (e.g. DIODE's mask file), combined with
    ``eval_mask(gt, dataset, ...)``. space: "depth" | "disparity" (least-squares alignment space) or None
    for already-metric predictions. dataset / min_depth / max_depth / crop as in ``eval_mask``; the same
    range clips the aligned prediction. ``align_max_res``: fit the alignment on Marigold's subsampled grid.
    With no valid pixel every metric is NaN (one RuntimeWarning).
    """
    p = _np(pred)
    g = _np(gt)
    _check_same_shape(p, g, "pred", "gt")
    cfg = resolve_eval_range(dataset, min_depth=min_depth, max_depth=max_depth, crop=crop)
    # 1. valid mask (+ finite predictions)
    mask = eval_mask(g, dataset, valid, min_depth=min_depth, max_depth=max_depth, crop=crop)
    finite_pred = np.isfinite(p)
    if (mask & ~finite_pred).any():
        warnings.warn(
            f"evaluate_depth: {int((mask & ~finite_pred).sum())} valid pixels have a non-finite prediction "
            "and are left out of the metrics", RuntimeWarning, stacklevel=2,
        )
    mask &= finite_pred
    if not mask.any():
        warnings.warn("evaluate_depth: no valid pixel in this image, all metrics are NaN", RuntimeWarning,
                      stacklevel=2)
        return {k: float("nan") for k in DEPTH_METRICS}
    # 2. least-squares alignment
    if space is not None:
        p = align_depth(p, g, mask, space=space, min_disparity=min_disparity, max_resolution=align_max_res)
    # 3. clip to the dataset range, then to d > 0
    with np.errstate(invalid="ignore"):
        p = np.clip(p, max(cfg["min_depth"], MIN_PRED_DEPTH), cfg["max_depth"])
    # 4. metrics over the valid pixels
    return {name: fn(p, g, mask) for name, fn in _METRIC_FNS.items()}


def mean_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Dataset score: the mean of each metric over images (Marigold averages per image, not per pixel).

    Images whose metrics are NaN (no valid pixel) are skipped, with a RuntimeWarning giving the count.
    An empty list, or one with only NaN images, gives NaN for every key.
    """
    if not per_image:
        warnings.warn("mean_metrics: no image, all metrics are NaN", RuntimeWarning, stacklevel=2)
        return {k: float("nan") for k in DEPTH_METRICS}
    keys = list(per_image[0])
    out: dict[str, float] = {}
    n_skipped = 0
    for k in keys:
        vals = np.array([float(d[k]) for d in per_image], dtype=np.float64)
        finite = np.isfinite(vals)
        n_skipped = max(n_skipped, int((~finite).sum()))
        out[k] = float(vals[finite].mean()) if finite.any() else float("nan")
    if n_skipped:
        warnings.warn(f"mean_metrics: skipped {n_skipped} of {len(per_image)} images with NaN metrics",
                      RuntimeWarning, stacklevel=2)
    return out
