"""viz: the depth panels of the qualitative grids (notebooks 05, 07) show predictions as the metric sees them."""

from __future__ import annotations

import numpy as np

from genpercept_lib import viz


def scene(seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 20.0, (12, 16))  # [H, W] metres
    valid = rng.random((12, 16)) > 0.2
    return gt, valid


def test_an_affine_prediction_is_drawn_exactly_like_the_ground_truth():
    """Was: each prediction was coloured on its own 2%/98% range (sky pixels included), so a panel could look
    unlike the ground truth's even where the aligned prediction matched it, and no two panels shared a scale."""
    gt, valid = scene()
    pred = -0.07 * gt + 3.0  # affine-invariant: any scale (even negative) and shift of the truth
    assert np.allclose(viz.aligned_depth_rgb(pred, gt, valid), viz.colorize_depth(gt, valid), atol=1e-6)
    assert not np.allclose(viz.colorize_depth(pred), viz.colorize_depth(gt, valid), atol=1e-2)  # the old display


def test_pixels_without_ground_truth_are_black_and_the_range_is_the_ground_truths():
    gt, valid = scene(1)
    pred = gt + np.random.default_rng(2).normal(0, 3.0, gt.shape)  # a poor prediction, far outside gt's range
    rgb = viz.aligned_depth_rgb(pred, gt, valid)  # [H, W, 3]
    assert rgb.shape == (*gt.shape, 3) and np.all(rgb[~valid] == 0)
    lo, hi = np.quantile(gt[valid], [0.02, 0.98])
    a = np.stack([pred[valid], np.ones(valid.sum())], 1)  # [N, 2]: the least-squares fit, written out
    (s, t), *_ = np.linalg.lstsq(a, gt[valid], rcond=None)
    assert np.allclose(rgb, viz.colorize_depth(s * pred + t, valid, lo=lo, hi=hi), atol=1e-6)


def test_a_disparity_prediction_is_aligned_in_disparity_space():
    gt, valid = scene(3)
    disparity = 5.0 / gt + 0.1  # affine in 1 / depth
    assert np.allclose(viz.aligned_depth_rgb(disparity, gt, valid, space="disparity"),
                       viz.colorize_depth(gt, valid), atol=1e-6)
