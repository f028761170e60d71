import pytest
import torch

from genpercept_lib import losses


def test_masked_mse_ignores_invalid_and_nan():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[1.0, float("nan"), 5.0]])
    mask = torch.tensor([[True, True, False]])
    assert losses.masked_mse(pred, target).item() == pytest.approx((0 + 4) / 2)
    assert losses.masked_mse(pred, target, mask).item() == 0.0


def test_all_invalid_batch_gives_zero_loss_and_finite_gradient():
    pred = torch.randn(2, 4, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4, 4), float("inf"))
    loss = losses.masked_mse(pred, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()
    depth = torch.randn(2, 8, 8, requires_grad=True)
    gt = torch.full((2, 8, 8), float("nan"))
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    total = losses.ssi_loss(depth, gt, valid) + losses.gradient_loss(depth, gt, valid)
    total.backward()
    assert total.item() == 0.0 and torch.isfinite(depth.grad).all()


def test_ssi_loss_is_invariant_to_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 16, 16, generator=g) + 0.5
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    assert losses.ssi_loss(3.0 * gt - 7.0, gt, valid).item() < 1e-8
    assert losses.gradient_loss(0.5 * gt + 1.0, gt, valid).item() < 1e-5
    assert losses.ssi_loss(torch.rand(2, 16, 16, generator=g), gt, valid).item() > 1e-3


def test_latent_valid_mask_requires_whole_patch():
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[0, 0, 0] = False
    m = losses.latent_valid_mask(valid, 8)
    assert m.shape == (1, 1, 2, 2) and m.sum() == 3 and not m[0, 0, 0, 0]


def test_multi_res_noise_is_seeded_unit_std_and_correlated():
    a = losses.multi_res_noise((2, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    b = losses.multi_res_noise((2, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.std(dim=(1, 2, 3)).sub(1).abs().max() < 1e-5
    # coarse levels make neighbouring pixels correlated (white noise would give ~0)
    corr = torch.corrcoef(torch.stack([a[..., :-1].flatten(), a[..., 1:].flatten()]))[0, 1]
    assert corr > 0.2
    white = losses.multi_res_noise((2, 4, 16, 16), strength=0.0, generator=torch.Generator().manual_seed(1))
    wc = torch.corrcoef(torch.stack([white[..., :-1].flatten(), white[..., 1:].flatten()]))[0, 1]
    assert abs(wc) < 0.1
