"""Marigold depth protocol: alignment, metrics on hand-computed arrays, masks, crops, NaN handling."""

import math
import warnings

import numpy as np
import pytest
import torch

from genpercept_lib.metrics import depth as D


def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return 1.0 + 3.0 * yy / h + np.sin(xx / 5.0) + 0.2 * rng.random((h, w))  # [H, W], in (0.0, 4.2)


# --- alignment --------------------------------------------------------------------------------------------
def test_align_scale_shift_recovers_known_affine():
    gt = _scene()
    pred = (gt - 0.7) / 2.5  # gt = 2.5 * pred + 0.7
    aligned, s, t = D.align_scale_shift(pred, gt)
    assert s == pytest.approx(2.5, abs=1e-12)
    assert t == pytest.approx(0.7, abs=1e-12)
    np.testing.assert_allclose(aligned, gt, atol=1e-12)


def test_align_scale_shift_uses_only_valid_pixels_and_accepts_torch():
    gt = _scene()
    pred = 0.5 * gt + 3.0
    pred_corrupt = pred.copy()
    pred_corrupt[:4] = 100.0  # garbage rows, masked out
    valid = np.ones_like(gt, dtype=bool)
    valid[:4] = False
    aligned, s, t = D.align_scale_shift(torch.tensor(pred_corrupt), torch.tensor(gt), torch.tensor(valid))
    assert (s, t) == (pytest.approx(2.0), pytest.approx(-6.0))
    np.testing.assert_allclose(aligned[valid], gt[valid], atol=1e-10)


def test_disparity_space_alignment_recovers_depth():
    gt = _scene()
    pred = 3.0 / gt + 0.25  # affine in disparity
    np.testing.assert_allclose(D.align_depth(pred, gt, space="disparity"), gt, rtol=1e-10)
    # the same prediction aligned in depth space is not exact: the spaces differ
    assert D.abs_rel(D.align_depth(pred, gt, space="depth"), gt) > 1e-3


def test_disparity_alignment_clips_small_disparity():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = 1.0 / gt
    pred_with_negative = pred.copy()
    pred_with_negative[0, 0] = -5.0  # left out of the fit (pred <= 0); aligned disparity < 0 there
    out = D.align_depth(pred_with_negative, gt, space="disparity")
    assert out[0, 0] == pytest.approx(1.0 / D.MIN_DISPARITY)  # clipped to 1e-3 then inverted
    np.testing.assert_allclose(out.ravel()[1:], gt.ravel()[1:], rtol=1e-10)


def test_align_depth_rejects_unknown_space():
    with pytest.raises(ValueError, match="space"):
        D.align_depth(np.ones((2, 2)), np.ones((2, 2)), space="log")


# --- metrics on hand-computed arrays ------------------------------------------------------------------------
def test_abs_rel_and_rmse_hand_computed():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    gt = np.array([[2.0, 2.0], [4.0, 4.0]])
    # |1-2|/2 = .5, 0, |3-4|/4 = .25, |5-4|/4 = .25  -> mean 0.25
    assert D.abs_rel(pred, gt) == pytest.approx(0.25)
    assert D.rmse(pred, gt) == pytest.approx(math.sqrt((1 + 0 + 1 + 1) / 4))
    assert D.sq_rel(pred, gt) == pytest.approx((1 / 2 + 0 + 1 / 4 + 1 / 4) / 4)
    valid = np.array([[False, True], [True, True]])
    assert D.abs_rel(pred, gt, valid) == pytest.approx(0.5 / 3)


def test_delta_strict_threshold_boundary():
    gt = np.array([1.0, 1.0, 2.5, 1.0, 1.0])
    pred = np.array([1.25, 1.2, 2.0, 0.5, 1.0])
    # ratios: 1.25 (exactly, not counted), 1.2, 1.25 (2.5/2, exactly, not counted), 2.0, 1.0
    assert D.delta1(pred, gt) == pytest.approx(2 / 5)
    assert D.delta2(pred, gt) == pytest.approx(4 / 5)  # 1.5625 threshold: 2.0 still out
    assert D.delta3(pred, gt) == pytest.approx(4 / 5)  # 1.953125 threshold: 2.0 still out


def test_delta3_counts_ratio_two_as_failure():
    gt = np.array([1.0, 1.0])
    pred = np.array([2.0, 1.9])
    assert D.delta3(pred, gt) == pytest.approx(0.5)


def test_delta_nonpositive_prediction_never_counts():
    assert D.delta1(np.array([-1.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0])) == pytest.approx(1 / 3)


def test_log_metrics_hand_computed():
    pred = np.array([1.0, 10.0])
    gt = np.array([10.0, 10.0])
    assert D.log10(pred, gt) == pytest.approx(0.5)
    assert D.rmse_log(pred, gt) == pytest.approx(math.log(10) / math.sqrt(2))
    # d = [-ln10, 0]: mean(d^2) - mean(d)^2 = ln10^2/2 - ln10^2/4
    assert D.silog_rmse(pred, gt) == pytest.approx(100 * math.log(10) / 2)
    assert D.i_rmse(pred, gt) == pytest.approx(math.sqrt(((1 - 0.1) ** 2) / 2))
    with pytest.raises(ValueError, match="positive"):
        D.rmse_log(np.array([0.0, 1.0]), gt)


# --- masks and crops ----------------------------------------------------------------------------------------
def test_dataset_table_matches_marigold():
    assert D.DATASET_EVAL["nyu"]["min_depth"] == 1e-3 and D.DATASET_EVAL["nyu"]["max_depth"] == 10.0
    assert D.DATASET_EVAL["kitti"]["min_depth"] == 1e-5 and D.DATASET_EVAL["kitti"]["max_depth"] == 80.0
    assert D.DATASET_EVAL["scannet"]["max_depth"] == 10.0
    assert (D.DATASET_EVAL["diode"]["min_depth"], D.DATASET_EVAL["diode"]["max_depth"]) == (0.6, 350.0)
    assert D.DATASET_EVAL["eth3d"]["max_depth"] == math.inf


def test_nyu_eigen_crop_bounds():
    gt = np.full((480, 640), 2.0)
    m = D.eval_mask(gt, "nyu")
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (45, 471, 41, 601)
    assert m.sum() == (471 - 45) * (601 - 41)


def test_kitti_crops_bounds():
    gt = np.full((352, 1216), 10.0)
    rows, cols = np.nonzero(D.eval_mask(gt, "kitti"))  # Marigold/GenPercept configs: eigen crop
    assert (rows.min(), rows.max() + 1) == (int(0.3324324 * 352), int(0.91351351 * 352))
    assert (cols.min(), cols.max() + 1) == (int(0.0359477 * 1216), int(0.96405229 * 1216))
    rows, cols = np.nonzero(D.eval_mask(gt, "kitti", crop="kitti_garg"))
    assert (rows.min(), rows.max() + 1) == (int(0.40810811 * 352), int(0.99189189 * 352)) == (143, 349)
    assert (cols.min(), cols.max() + 1) == (int(0.03594771 * 1216), int(0.96405229 * 1216)) == (43, 1172)


def test_kitti_benchmark_crop_is_bottom_centre():
    x = np.arange(375 * 1242).reshape(375, 1242)
    out = D.kitti_benchmark_crop(x)
    assert out.shape == (352, 1216)
    assert out[0, 0] == x[375 - 352, (1242 - 1216) // 2]
    assert D.kitti_benchmark_crop(torch.zeros(3, 375, 1242)).shape == (3, 352, 1216)


def test_range_is_strict_and_toy_ranges_are_explicit():
    gt = np.array([[1e-3, 5.0], [10.0, 9.99]])
    np.testing.assert_array_equal(D.eval_mask(gt, "nyu", crop=None), [[False, True], [False, True]])
    toy = np.array([[0.5, 2.0], [30.0, 0.0]])
    np.testing.assert_array_equal(D.eval_mask(toy, "toy_rooms", min_depth=1.0, max_depth=20.0),
                                  [[False, True], [False, False]])
    np.testing.assert_array_equal(D.eval_mask(toy, "toy_rooms"), [[True, True], [True, False]])  # gt > 0
    assert D.eval_mask(np.full((480, 640), 2.0), "nyu", crop=None).all()  # crop=None removes the crop
    with pytest.raises(ValueError, match="unknown dataset"):
        D.eval_mask(toy, "mars")


def test_diode_range_only_clips():
    gt = np.array([[0.3, 2.0]])  # 0.3 < DIODE min depth, but validity comes from the dataset's mask file
    assert D.eval_mask(gt, "diode").all()
    assert not D.eval_mask(gt, "diode", extra_valid=np.array([[False, True]]))[0, 0]


# --- NaN / inf / shapes -------------------------------------------------------------------------------------
def test_nan_and_inf_are_excluded_never_propagated():
    gt = _scene()
    pred = 0.5 * gt + 1.0
    gt_bad = gt.copy()
    gt_bad[0, 0], gt_bad[1, 1] = np.nan, np.inf
    pred_bad = pred.copy()
    pred_bad[2, 2] = np.nan
    assert not D.eval_mask(gt_bad)[:2, :2].diagonal().any()
    with pytest.warns(RuntimeWarning, match="non-finite prediction"):
        out = D.evaluate_depth(pred_bad, gt_bad, dataset="toy_x")
    assert all(math.isfinite(v) for v in out.values())
    assert out["abs_rel"] == pytest.approx(0.0, abs=1e-10)
    assert out["delta1"] == 1.0
    assert math.isfinite(D.abs_rel(pred_bad, gt_bad))


def test_all_invalid_image_gives_nan_with_warning_and_is_skipped_in_mean():
    gt = np.zeros((4, 4))
    with pytest.warns(RuntimeWarning, match="no valid pixel"):
        bad = D.evaluate_depth(np.ones((4, 4)), gt)
    assert set(bad) == set(D.DEPTH_METRICS) and all(math.isnan(v) for v in bad.values())
    good = {k: 1.0 for k in D.DEPTH_METRICS}
    with pytest.warns(RuntimeWarning, match="skipped 1 of 2"):
        mean = D.mean_metrics([good, bad])
    assert mean == good


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        D.abs_rel(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        D.evaluate_depth(np.ones((4, 4)), np.ones((4, 4)), valid=np.ones((3, 3), bool))


# --- the protocol end to end --------------------------------------------------------------------------------
def test_evaluate_depth_affine_prediction_is_perfect_and_clips_to_range():
    gt = _scene(48, 64) * 1.5  # about (0.1, 7.7) m, inside NYU's range
    pred = -0.3 * gt + 4.0  # a flipped, shifted affine copy: LS alignment undoes it exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = D.evaluate_depth(torch.tensor(pred), torch.tensor(gt), dataset="nyu", crop=None)
    assert out["abs_rel"] == pytest.approx(0.0, abs=1e-10) and out["delta1"] == 1.0
    # a prediction far beyond max_depth is clipped to max_depth before the metrics (Marigold eval.py)
    far = D.evaluate_depth(np.full_like(gt, 1e6), gt, space=None, dataset="nyu", crop=None)
    assert (gt < 10.0).all()
    assert far["abs_rel"] == pytest.approx(np.mean(np.abs(10.0 - gt) / gt))


def test_mean_metrics_is_per_image_mean():
    a = {"abs_rel": 0.1, "delta1": 0.9}
    b = {"abs_rel": 0.3, "delta1": 0.5}
    assert D.mean_metrics([a, b]) == {"abs_rel": pytest.approx(0.2), "delta1": pytest.approx(0.7)}
