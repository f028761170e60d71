"""Segmentation metrics: hand-made confusion cases, an independent loop-based count, ignore label, bad input."""

import math

import numpy as np
import pytest
import torch

from genpercept_lib.metrics import segmentation as S


def _reference_scores(preds, gts, num_classes, ignore_index):
    """Per-pixel loops, written independently of the module: (IoU list, pixel accuracy)."""
    inter = [0] * num_classes
    gt_c = [0] * num_classes
    pred_c = [0] * num_classes
    for pred, gt in zip(preds, gts):
        for p, g in zip(np.ravel(pred).tolist(), np.ravel(gt).tolist()):
            if g == ignore_index:
                continue
            gt_c[g] += 1
            if p != ignore_index:
                pred_c[p] += 1
            if p == g:
                inter[g] += 1
    ious = []
    for c in range(num_classes):
        union = gt_c[c] + pred_c[c] - inter[c]
        ious.append(inter[c] / union if union else math.nan)
    return ious, sum(inter) / sum(gt_c)


# --- hand-made cases ----------------------------------------------------------------------------------------
def test_confusion_matrix_counts_rows_gt_columns_pred():
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    expected = np.array([[1, 1, 0],   # gt 0: one right, one predicted 1
                         [0, 2, 0],   # gt 1: both right
                         [1, 0, 1]])  # gt 2: one right, one predicted 0
    np.testing.assert_array_equal(S.confusion_matrix(pred, gt, 3), expected)


def test_known_ious_and_accuracy():
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: tp 1, gt 2, pred 1 -> 1/2
    out = S.evaluate([pred], [gt], num_classes=3)
    assert out["per_class_IoU"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert out["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["pixel_accuracy"] == pytest.approx(4 / 6)


def test_perfect_prediction_and_absent_class_is_nan_and_left_out_of_the_mean():
    gt = np.array([[0, 0], [2, 2]])
    out = S.evaluate([gt.copy()], [gt], num_classes=4)
    assert out["per_class_IoU"][0] == 1.0 and out["per_class_IoU"][2] == 1.0
    assert math.isnan(out["per_class_IoU"][1]) and math.isnan(out["per_class_IoU"][3])
    assert out["mIoU"] == 1.0 and out["pixel_accuracy"] == 1.0


def test_class_only_in_prediction_counts_with_iou_zero():
    gt = np.zeros((2, 2), dtype=np.int64)
    pred = np.array([[0, 0], [0, 1]])
    out = S.evaluate([pred], [gt], num_classes=2)
    assert out["per_class_IoU"] == pytest.approx([3 / 4, 0.0])
    assert out["mIoU"] == pytest.approx(3 / 8)


def test_dataset_scores_come_from_summed_counts_not_a_mean_of_images():
    # image A: class 0 only, perfect (4 px); image B: class 0, 1 of 4 px right (rest predicted 1)
    gt_a, pred_a = np.zeros((2, 2), int), np.zeros((2, 2), int)
    gt_b, pred_b = np.zeros((2, 2), int), np.array([[0, 1], [1, 1]])
    out = S.evaluate([pred_a, pred_b], [gt_a, gt_b], num_classes=2)
    # totals: class 0 tp 5, gt 8, pred 5 -> 5/8; class 1 tp 0, gt 0, pred 3 -> 0
    assert out["per_class_IoU"] == pytest.approx([5 / 8, 0.0])
    assert out["pixel_accuracy"] == pytest.approx(5 / 8)
    per_image = np.mean([S.evaluate([p], [g], 2)["mIoU"] for p, g in [(pred_a, gt_a), (pred_b, gt_b)]])
    assert out["mIoU"] != pytest.approx(per_image)


# --- ignore label ---------------------------------------------------------------------------------------------
def test_ignore_pixels_are_excluded_whatever_is_predicted_there():
    gt = np.array([[0, 1, 255], [255, 1, 0]])
    good = np.array([[0, 1, 1], [1, 1, 0]])
    other = np.array([[0, 1, 0], [0, 1, 0]])  # differs only on ignored pixels
    a, b = S.evaluate([good], [gt], 2), S.evaluate([other], [gt], 2)
    assert a["mIoU"] == b["mIoU"] == 1.0 and a["pixel_accuracy"] == 1.0
    assert S.confusion_matrix(good, gt, 2).sum() == 4


def test_prediction_of_ignore_index_is_a_miss_for_the_gt_class():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 1]])
    out = S.evaluate([pred], [gt], 2)
    assert out["per_class_IoU"] == pytest.approx([1 / 2, 1.0])  # class 0: tp 1, gt 2, pred 1
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)


def test_custom_ignore_index_and_none():
    gt = np.array([[0, -1], [1, 1]])
    pred = np.array([[0, 0], [1, 0]])
    out = S.evaluate([pred], [gt], 2, ignore_index=-1)
    assert out["pixel_accuracy"] == pytest.approx(2 / 3)
    out_none = S.evaluate([pred], [np.array([[0, 0], [1, 1]])], 2, ignore_index=None)
    assert out_none["pixel_accuracy"] == pytest.approx(3 / 4)


def test_all_pixels_ignored_gives_nan_with_warning():
    gt = np.full((2, 2), 255)
    with pytest.warns(RuntimeWarning, match="ignore_index"):
        out = S.evaluate([np.zeros((2, 2), int)], [gt], 3)
    assert math.isnan(out["mIoU"]) and math.isnan(out["pixel_accuracy"])


# --- independent computation on random maps -------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_match_independent_loops(seed):
    rng = np.random.default_rng(seed)
    num_classes = 6
    preds, gts = [], []
    for shape in [(7, 9), (5, 5), (12, 4)]:  # sizes differ between images
        gt = rng.integers(0, num_classes - 1, size=shape)  # class 5 never in gt
        gt[rng.random(shape) < 0.15] = 255
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, num_classes, size=shape))
        pred[rng.random(shape) < 0.05] = 255
        preds.append(pred)
        gts.append(gt.astype(np.uint8))  # 255 fits uint8, as in PNG label maps
    ious, acc = _reference_scores(preds, gts, num_classes, 255)
    out = S.evaluate(preds, gts, num_classes)
    np.testing.assert_allclose(out["per_class_IoU"], ious, rtol=1e-12)
    assert out["pixel_accuracy"] == pytest.approx(acc, rel=1e-12)
    assert out["mIoU"] == pytest.approx(np.nanmean(ious), rel=1e-12)
    # and the torch path gives the same numbers
    out_t = S.evaluate([torch.from_numpy(p) for p in preds], [torch.from_numpy(g.astype(np.int64)) for g in gts],
                       num_classes)
    assert out_t["mIoU"] == out["mIoU"]


def test_confusion_matrix_matches_sklearn_style_loop():
    rng = np.random.default_rng(3)
    gt, pred = rng.integers(0, 4, size=(10, 10)), rng.integers(0, 4, size=(10, 10))
    expected = np.zeros((4, 4), dtype=np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        expected[g, p] += 1
    np.testing.assert_array_equal(S.confusion_matrix(pred, gt, 4), expected)


# --- bad input ----------------------------------------------------------------------------------------------
def test_bad_inputs_raise_one_line_errors_naming_input_and_index():
    ok = np.zeros((2, 2), dtype=np.int64)
    cases = [
        (([ok, ok], [ok, np.array([[0, 3], [0, 0]])], 3), r"gts\[1\] holds class id 3 outside \[0, 3\)"),
        (([np.array([[0, -2], [0, 0]])], [ok], 3), r"preds\[0\] holds class id -2"),
        (([ok], [np.zeros((2, 3), np.int64)], 3), r"shape mismatch: preds\[0\] has shape \(2, 2\), gts\[0\]"),
        (([ok.astype(np.float32)], [ok], 3), r"preds\[0\] has dtype float32; expected an integer class map"),
        (([ok], [ok.astype(bool)], 3), r"gts\[0\] has dtype bool"),
        (([ok[None]], [ok], 3), r"preds\[0\] has shape \(1, 2, 2\); expected a class map \[H, W\]"),
        (([], [], 3), "at least one image"),
        (([ok], [ok, ok], 3), "length mismatch: 1 preds and 2 gts"),
        (([ok], [ok], 0), "num_classes must be a positive integer"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            S.evaluate(*args)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="ignore_index 1 is a class id"):
        S.evaluate([ok], [ok], 3, ignore_index=1)
    with pytest.raises(ValueError, match=r"gt holds class id 9"):
        S.confusion_matrix(ok, np.full((2, 2), 9), 3)
