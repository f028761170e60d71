"""Marigold test-time ensembling: affine recovery, robustness of the median, uncertainty, normals."""

import numpy as np
import pytest
import torch

from genpercept_lib.ensemble import ensemble_depth, ensemble_normals
from genpercept_lib.metrics.depth import align_scale_shift

H, W = 24, 32


def _depth(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / W
    return 1.0 + np.sin(3 * xx) + yy**2 + 0.1 * rng.random((H, W))


def _affine_copies(d, e, seed=1):
    rng = np.random.default_rng(seed)
    s, t = rng.uniform(0.3, 3.0, e), rng.uniform(-1.0, 2.0, e)
    return s[:, None, None] * d + t[:, None, None]


def _normalise(d):
    return (d - d.min()) / (d.max() - d.min())


def _aligned_rmse(pred, d):
    return float(np.sqrt(np.mean((align_scale_shift(pred, d)[0] - d) ** 2)))


@pytest.mark.parametrize("reduction", ["median", "mean"])
def test_affine_copies_recover_the_map(reduction):
    d = _depth()
    out, unc = ensemble_depth(_affine_copies(d, 5), reduction=reduction, output_uncertainty=True)
    assert out.shape == (H, W) and unc.shape == (H, W)
    assert np.corrcoef(out.ravel(), d.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(out, _normalise(d), atol=1e-6)
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)
    assert np.abs(unc).max() < 1e-6


def test_bfgs_alignment_beats_min_max_start_with_spiky_members():
    d = _depth()
    preds = _affine_copies(d, 5)
    rng = np.random.default_rng(2)
    for i in range(len(preds)):  # one spike per member spoils its min/max normalisation
        preds[i, rng.integers(H), rng.integers(W)] += rng.choice([-1, 1]) * 1.5 * np.ptp(preds[i])
    out, _ = ensemble_depth(preds)
    lo, hi = preds.min(axis=(1, 2)), preds.max(axis=(1, 2))
    start = np.median((preds - lo[:, None, None]) / (hi - lo)[:, None, None], axis=0)
    assert _aligned_rmse(out, d) < 0.7 * _aligned_rmse(start, d)  # 2 BFGS steps: partway


def test_ensemble_reduces_noise():
    d = _depth()
    rng = np.random.default_rng(3)
    noisy = _affine_copies(d + 0.1 * rng.standard_normal((6, H, W)), 6)
    out, _ = ensemble_depth(noisy)
    single = np.mean([_aligned_rmse(p, d) for p in noisy])
    assert _aligned_rmse(out, d) < 0.7 * single


def test_median_is_robust_to_one_outlier_member():
    d = _depth()
    preds = _affine_copies(d, 5)
    preds[0] = np.random.default_rng(4).random((H, W)) * 5.0
    out_median, _ = ensemble_depth(preds, reduction="median")
    out_mean, _ = ensemble_depth(preds, reduction="mean")
    np.testing.assert_allclose(out_median, _normalise(d), atol=1e-6)
    assert np.abs(out_mean - _normalise(d)).max() > 0.05


@pytest.mark.parametrize("reduction", ["median", "mean"])
def test_identical_members_have_zero_uncertainty(reduction):
    d = _depth()
    out, unc = ensemble_depth(np.stack([d] * 3), reduction=reduction, output_uncertainty=True)
    np.testing.assert_allclose(out, _normalise(d), atol=1e-9)
    assert np.abs(unc).max() < 1e-9


def test_single_member_returns_normalised_member():
    d = _depth()
    for reduction in ("median", "mean"):
        out, unc = ensemble_depth(d[None] * 4.0 - 1.0, reduction=reduction, output_uncertainty=True)
        np.testing.assert_allclose(out, _normalise(d), atol=1e-9)
        np.testing.assert_array_equal(unc, 0.0)
    out, unc = ensemble_depth(d[None])
    assert unc is None


def test_torch_in_torch_out_and_max_res():
    d = _depth()
    preds = torch.tensor(_affine_copies(d, 3), dtype=torch.float32)[:, None]  # [E, 1, H, W] accepted
    out, unc = ensemble_depth(preds, max_res=16, output_uncertainty=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (H, W)
    np.testing.assert_allclose(out.numpy(), _normalise(d), atol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        ensemble_depth(np.ones((H, W)))
    with pytest.raises(ValueError, match="reduction"):
        ensemble_depth(np.ones((2, H, W)), reduction="mode")
    with pytest.raises(ValueError, match="NaN"):
        ensemble_depth(np.full((2, H, W), np.nan))


def test_ensemble_normals_mean_and_closest():
    n = np.zeros((3, 3, 1, 2))
    n[0, :, 0, 0] = [0, 0, 1]
    n[1, :, 0, 0] = [0, 0.2, 1]
    n[2, :, 0, 0] = [0, 1, 1]  # the far one
    n[:, :, 0, 1] = [1, 0, 0]  # identical members
    mean, unc = ensemble_normals(n, reduction="mean", output_uncertainty=True)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=0), 1.0)
    m = n[:, :, 0, 0] / np.linalg.norm(n[:, :, 0, 0], axis=1, keepdims=True)
    m = m.mean(0) / np.linalg.norm(m.mean(0))
    np.testing.assert_allclose(mean[:, 0, 0], m)
    closest = ensemble_normals(n, reduction="closest")
    np.testing.assert_allclose(closest[:, 0, 0], np.array([0, 0.2, 1]) / np.linalg.norm([0, 0.2, 1]))
    np.testing.assert_allclose(closest[:, 0, 1], [1, 0, 0])
    assert unc.shape == (1, 2) and unc[0, 0] > 0 and unc[0, 1] == pytest.approx(0.0, abs=1e-7)
    out = ensemble_normals(torch.tensor(n, dtype=torch.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
