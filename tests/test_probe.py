"""The linear probe of the prior's features: cell averaging, the ridge fit, and a probe that must find depth
when the features hold it and must not when they are noise."""

import numpy as np
import torch

from genpercept_lib import models, probe


def test_depth_grid_averages_valid_pixels_and_marks_sparse_cells():
    depth = np.arange(16, dtype=float).reshape(1, 4, 4)
    valid = np.ones((1, 4, 4), bool)
    valid[0, :2, :2] = [[True, False], [False, False]]  # one valid pixel of four in the top-left cell
    d, m = probe.depth_grid(depth, valid, 2)
    assert d.shape == m.shape == (1, 2, 2)
    assert d[0, 0, 0] == 0.0 and not m[0, 0, 0]  # depth 0 at (0, 0) only; 1/4 valid < MIN_VALID
    assert d[0, 1, 1] == np.mean([10, 11, 14, 15]) and m[0, 1, 1]


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0
    model = probe.fit_ridge(np.concatenate([x, np.ones((500, 1))], 1), y, lam=1e-8)
    np.testing.assert_allclose(model.predict(np.concatenate([x, np.ones((500, 1))], 1)), y, atol=1e-5)


def _scenes(n, rng, informative):
    depth = 1 + rng.random((n, 8, 8)) * 4  # [n, h, w]: no structure position could guess
    valid = np.ones_like(depth, bool)
    x = rng.normal(size=(n, 5, 8, 8))
    if informative:
        x[:, 0] = depth  # one feature channel is the depth itself
    return {"x": x, "depth": depth, "valid": valid}


def test_the_probe_finds_depth_in_features_that_hold_it_and_not_in_noise():
    rng = np.random.default_rng(0)
    fit, test = _scenes(64, rng, True), _scenes(16, rng, True)
    knows = probe.probe(fit, {"test": test})["test"]
    blind = probe.probe({**fit, "x": None}, {"test": {**test, "x": None}})["test"]
    noise_fit, noise_test = _scenes(64, rng, False), _scenes(16, rng, False)
    noise = probe.probe(noise_fit, {"test": noise_test})["test"]
    assert knows < 0.01 and blind > 0.1 and noise > 0.1


def test_unet_features_have_one_vector_per_latent_cell(tiny_unet, tiny_vae):
    rgb = torch.rand(3, 3, 32, 32)
    f = probe.unet_features(tiny_unet, tiny_vae, rgb, t=100, batch=2)
    channels = tiny_unet.config.block_out_channels[-1] + sum(tiny_unet.config.block_out_channels)  # mid + up blocks
    assert f.shape == (3, channels, 4, 4)
    again = probe.unet_features(tiny_unet, tiny_vae, rgb, t=100, batch=2)
    assert torch.equal(f, again)  # seeded noise: the probe's input is the same every time
    assert models.vae_scale_factor(tiny_vae) == 8
