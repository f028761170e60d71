"""DSINE normal protocol: angular errors on hand-made vectors and pooled percentages."""

import math

import numpy as np
import pytest
import torch

from genpercept_lib.metrics import normals as N


def _map(*vectors):
    """[3, 1, K] normal map from K 3-vectors."""
    return np.asarray(vectors, dtype=np.float64).T[:, None, :]


def test_angular_error_0_90_180_and_unnormalised_inputs():
    gt = _map([0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0])
    pred = _map([0, 0, 5], [0, 2, 0], [0, 0, -1], [1, 1, 0])  # lengths differ: both are normalised
    np.testing.assert_allclose(N.angular_error(pred, gt), [0.0, 90.0, 180.0, 45.0], atol=1e-6)
    e = N.angular_error(torch.tensor(pred), torch.tensor(gt))
    assert e.dtype == np.float64 and e.shape == (4,)


def test_angular_error_valid_mask_and_bad_pixels():
    gt = _map([0, 0, 1], [0, 0, 0], [np.nan, 0, 1], [0, 0, 1], [0, 0, 1])
    pred = _map([0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0], [0, 0, 1])
    valid = np.array([[True, True, True, True, False]])
    # zero / NaN gt are invalid; a zero-length prediction is a 90 degree error (as in DSINE)
    np.testing.assert_allclose(N.angular_error(pred, gt, valid), [0.0, 90.0], atol=1e-6)
    pred_nan = pred.copy()
    pred_nan[:, 0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite prediction"):
        np.testing.assert_allclose(N.angular_error(pred_nan, gt, valid), [90.0], atol=1e-6)


def test_angular_error_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2, 2\).*\(3, 2, 3\)"):
        N.angular_error(np.ones((3, 2, 2)), np.ones((3, 2, 3)))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        N.angular_error(np.ones((2, 2, 2)), np.ones((2, 2, 2)))


def test_normal_metrics_hand_computed():
    m = N.normal_metrics(np.array([0.0, 10.0, 11.25, 20.0, 40.0]))
    assert m["mean"] == pytest.approx(81.25 / 5)
    assert m["median"] == pytest.approx(11.25)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 100 + 11.25**2 + 400 + 1600) / 5))
    assert m["a11_25"] == pytest.approx(40.0)  # strict <: 11.25 itself is not counted
    assert m["a22_5"] == pytest.approx(80.0)
    assert m["a30"] == pytest.approx(80.0)
    assert m["a5"] == pytest.approx(20.0)


def test_pooled_over_pixels_not_averaged_over_images():
    img_a = np.zeros(1)  # one perfect pixel
    img_b = np.full(3, 45.0)  # three bad pixels
    pooled = N.pool_normal_metrics([img_a, img_b])
    assert pooled["mean"] == pytest.approx(135.0 / 4)  # per-image mean would give 22.5
    assert pooled["a30"] == pytest.approx(25.0)


def test_empty_pool_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="no valid pixel"):
        m = N.pool_normal_metrics([np.zeros(0)])
    assert set(m) == set(N.NORMAL_METRICS) and all(math.isnan(v) for v in m.values())
