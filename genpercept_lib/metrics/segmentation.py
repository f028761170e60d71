"""Semantic-segmentation evaluation: mIoU and pixel accuracy from one dataset-wide confusion matrix.

The protocol is mmsegmentation's (``mmseg/core/evaluation/metrics.py``: ``intersect_and_union``,
``total_intersect_and_union``, ``eval_metrics``), the standard one for semantic segmentation:
the per-image pixel counts are *summed over the whole dataset* first and the scores are computed once
from the totals (not a mean of per-image scores). With ``M`` the accumulated confusion matrix
(rows: ground-truth class, columns: predicted class, pixels whose ground truth is ``ignore_index`` left out):

    (A)  IoU_c = M[c, c] / (gt_c + pred_c - M[c, c])      gt_c = pixels labelled c, pred_c = pixels predicted c
    (B)  mIoU  = mean of IoU_c over the classes with gt_c + pred_c > 0  (a class absent from both has
                 IoU NaN and is left out: mmseg's ``np.nanmean``)
    (C)  pixel_accuracy = sum_c M[c, c] / sum_c gt_c      (mmseg ``aAcc``)

A prediction equal to ``ignore_index`` on a labelled pixel is allowed and means "no class": it counts
against the ground-truth class (in gt_c, never in M[c, c]) and as no class's prediction, exactly as mmseg's
histograms treat out-of-range predicted labels. Any other id outside ``[0, num_classes)`` is an error.

Class maps are integer ``[H, W]`` arrays (numpy or torch). Scores are Python floats.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def _label_map(x, name: str) -> np.ndarray:
    """numpy or torch integer class map -> int64 numpy ``[H, W]``; ValueError naming ``name`` otherwise."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} has dtype {a.dtype}; expected an integer class map")
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(a.shape)}; expected a class map [H, W]")
    return a.astype(np.int64, copy=False)


def _check_ids(a: np.ndarray, name: str, num_classes: int, ignore_index: int | None) -> None:
    """ValueError naming ``name`` and the first bad id if ``a`` holds an id outside the classes."""
    bad = (a < 0) | (a >= num_classes)
    if ignore_index is not None:
        bad &= a != ignore_index
    if bad.any():
        value = int(a[bad][0])
        raise ValueError(
            f"{name} holds class id {value} outside [0, {num_classes}) (ignore_index={ignore_index})")


def _check_settings(num_classes, ignore_index) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is a class id in [0, {num_classes}); pick one outside")


def _counts(pred, gt, num_classes: int, ignore_index: int | None,
            pred_name: str = "pred", gt_name: str = "gt") -> tuple[np.ndarray, np.ndarray]:
    """(confusion [C, C], gt pixels per class [C]) of one image; gt counts include 'no class' predictions."""
    p, g = _label_map(pred, pred_name), _label_map(gt, gt_name)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: {pred_name} has shape {tuple(p.shape)}, {gt_name} has {tuple(g.shape)}")
    _check_ids(p, pred_name, num_classes, ignore_index)
    _check_ids(g, gt_name, num_classes, ignore_index)
    labelled = g != ignore_index if ignore_index is not None else np.ones(g.shape, dtype=bool)  # [H, W]
    gt_count = np.bincount(g[labelled], minlength=num_classes)  # [C]
    counted = labelled & (p != ignore_index) if ignore_index is not None else labelled  # [H, W]
    pairs = g[counted] * num_classes + p[counted]  # [P], row-major index of (gt, pred)
    confusion = np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return confusion.astype(np.int64), gt_count.astype(np.int64)


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Pixel confusion matrix ``[C, C]`` (int64) of one image: ``M[i, j]`` = pixels of class i predicted j.

    Rows are the ground truth, columns the prediction (sklearn's convention). Pixels whose ground truth is
    ``ignore_index`` are left out, and so are labelled pixels predicted ``ignore_index`` ("no class"), which
    therefore make the row sums smaller than the ground-truth class counts. Bad input raises a one-line
    ValueError (non-integer or non-2-D maps, shape mismatch, ids outside ``[0, num_classes)``).
    """
    _check_settings(num_classes, ignore_index)
    return _counts(pred, gt, num_classes, ignore_index)[0]


def iou_from_counts(confusion: np.ndarray, gt_count: np.ndarray | None = None) -> np.ndarray:
    """Eq. (A): per-class IoU ``[C]`` from a confusion matrix; NaN where the class is in neither map.

    ``gt_count`` (pixels labelled c, "no class" predictions included) defaults to the row sums.
    """
    confusion = np.asarray(confusion, dtype=np.float64)  # [C, C]
    tp = np.diag(confusion)  # [C]
    gt_c = confusion.sum(axis=1) if gt_count is None else np.asarray(gt_count, dtype=np.float64)  # [C]
    pred_c = confusion.sum(axis=0)  # [C]
    union = gt_c + pred_c - tp  # [C]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def evaluate(preds: Sequence, gts: Sequence, num_classes: int, ignore_index: int | None = 255) -> dict:
    """mIoU, pixel accuracy and per-class IoU of a dataset (eq. (A)-(C)), from its summed confusion matrix.

    preds, gts: equally long sequences of integer class maps ``[H, W]`` (each pair the same size; sizes may
    differ between images). Returns ``{"mIoU": float, "pixel_accuracy": float, "per_class_IoU": list[float]}``
    with NaN in ``per_class_IoU`` for classes absent from both the ground truth and the prediction.
    If every pixel is ``ignore_index`` the scores are NaN with a RuntimeWarning. Bad input (empty or unequal
    lists, non-integer maps, shape mismatch, ids outside ``[0, num_classes)``) raises a one-line ValueError
    naming the input and its index, e.g. ``gts[3] holds class id 21 outside [0, 21) (ignore_index=255)``.
    """
    _check_settings(num_classes, ignore_index)
    preds, gts = list(preds), list(gts)
    if not preds or not gts:
        raise ValueError(f"evaluate needs at least one image, got {len(preds)} preds and {len(gts)} gts")
    if len(preds) != len(gts):
        raise ValueError(f"length mismatch: {len(preds)} preds and {len(gts)} gts")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [C, C]
    gt_count = np.zeros(num_classes, dtype=np.int64)  # [C]
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        m, n = _counts(pred, gt, num_classes, ignore_index, f"preds[{i}]", f"gts[{i}]")
        confusion += m
        gt_count += n
    iou = iou_from_counts(confusion, gt_count)  # [C]
    labelled = int(gt_count.sum())
    if labelled == 0:
        warnings.warn("segmentation evaluate: every pixel is ignore_index, returning NaN", RuntimeWarning,
                      stacklevel=2)
        return {"mIoU": float("nan"), "pixel_accuracy": float("nan"), "per_class_IoU": [float("nan")] * num_classes}
    return {
        "mIoU": float(np.nanmean(iou)),
        "pixel_accuracy": float(np.trace(confusion) / labelled),
        "per_class_IoU": [float(v) for v in iou],
    }
