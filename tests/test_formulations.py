"""The equations of section 1, checked against diffusers' DDIMScheduler and against each other."""

import pytest
import torch
from diffusers import DDIMScheduler

from genpercept_lib import formulations as F
from genpercept_lib import schedule


def scheduler(beta_start=0.00085, beta_end=0.012):
    return DDIMScheduler(
        beta_start=beta_start, beta_end=beta_end, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="leading",
    )


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 8, 8, generator=g) for _ in range(3)]  # x0, noise, v


def test_expected_values_slice():
    """Hand-computed values: a typo in any sign, sqrt or index changes these."""
    a = 0.36  # sqrt(a) = 0.6, sqrt(1 - a) = 0.8
    x0, noise, sample, v = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0), torch.tensor(7.0)
    assert F.v_target(x0, noise, a).item() == pytest.approx(0.6 * 3 - 0.8 * 2)
    assert F.noisy_sample(x0, noise, a).item() == pytest.approx(0.6 * 2 + 0.8 * 3)
    assert F.predicted_x0(sample, v, a).item() == pytest.approx(0.6 * 5 - 0.8 * 7)
    assert F.predicted_noise(sample, v, a).item() == pytest.approx(0.6 * 7 + 0.8 * 5)
    # ddim with alpha_prev = 0.64: sqrt 0.8, sqrt(1 - .64) = 0.6
    x0_hat, eps_hat = 0.6 * 5 - 0.8 * 7, 0.6 * 7 + 0.8 * 5
    assert F.ddim_step(sample, v, a, 0.64).item() == pytest.approx(0.8 * x0_hat + 0.6 * eps_hat)


def test_v_parametrisation_inverts(latents):
    x0, noise, _ = latents
    for a in (0.0, 0.1, 0.5, 0.999, 1.0):
        z_t = F.noisy_sample(x0, noise, a)
        v = F.v_target(x0, noise, a)
        torch.testing.assert_close(F.predicted_x0(z_t, v, a), x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(F.predicted_noise(z_t, v, a), noise, atol=1e-5, rtol=1e-5)


def test_printed_sign_of_noise_estimate_is_wrong(latents):
    x0, noise, _ = latents
    a = 0.3
    z_t, v = F.noisy_sample(x0, noise, a), F.v_target(x0, noise, a)
    printed = a**0.5 * v - (1 - a) ** 0.5 * z_t  # eq. (4)/(7) as printed
    assert not torch.allclose(printed, noise, atol=1e-2)


@pytest.mark.parametrize("betas", [(0.00085, 0.012), (0.136, 0.192), (1.0, 1.0)])
@pytest.mark.parametrize("t", [901, 501, 1])
def test_ddim_step_equals_diffusers(latents, betas, t):
    sample, v, _ = latents
    s = scheduler(*betas)
    s.set_timesteps(10)
    theirs = s.step(v, t, sample, eta=0.0).prev_sample
    acp = schedule.alphas_cumprod(*betas)
    a_prev = schedule.previous_alpha_bar(acp, t, 10)
    ours = F.ddim_step(sample, v, acp[t], a_prev)
    if a_prev > 0:
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    else:
        # diffusers computes its (unused at eta=0) variance as 0/0 when alpha_bar_prev underflows to 0 and
        # returns NaN; the update itself is well defined: z_{t-1} = eps_hat (= z_t when alpha_bar_t = 0 too)
        assert torch.isnan(theirs).all()
        torch.testing.assert_close(ours, F.predicted_noise(sample, v, acp[t]))
    # and the predicted x0 of the same step
    torch.testing.assert_close(F.predicted_x0(sample, v, acp[t]), s.step(v, t, sample).pred_original_sample)


def test_deterministic_sampler_matches_diffusers_loop(latents):
    z_x = latents[0]
    acp = schedule.alphas_cumprod(0.00085, 0.012)
    weights = torch.linspace(0.5, 1.5, 4).view(1, 4, 1, 1)

    def denoise(inp, t):  # any deterministic function of input and t
        return torch.tanh(inp * weights) * (t.view(-1, 1, 1, 1).float() / 1000)

    ours, traj = F.sample("deterministic", denoise, z_x, acp, 5, return_trajectory=True)
    s = scheduler()
    s.set_timesteps(5)
    z = z_x
    for t in s.timesteps:
        out = s.step(denoise(z, t.repeat(2)), t, z)
        z, x0 = out.prev_sample, out.pred_original_sample
    torch.testing.assert_close(ours, x0, atol=1e-5, rtol=1e-5)
    assert len(traj) == 5


def test_one_one_schedule_collapses_to_one_step(latents):
    """Eq. (8)-(9): with (1, 1) the deterministic pair and sampler are the one-step ones, for any T."""
    z_x, z_y, _ = latents
    acp = schedule.alphas_cumprod(1.0, 1.0)
    t = torch.tensor([999, 3])
    det = F.training_pair("deterministic", z_x, z_y, acp, timesteps=t)
    one = F.training_pair("one_step", z_x, z_y)
    torch.testing.assert_close(det.unet_input, z_x)
    torch.testing.assert_close(det.target, -z_y)
    torch.testing.assert_close(one.target, -z_y)
    assert one.timesteps.tolist() == [1, 1]

    def denoise(inp, t):  # v ignores t: a one-step model
        return -2.0 * inp

    for steps in (1, 2, 10):
        multi = F.sample("deterministic", denoise, z_x, acp, steps)
        torch.testing.assert_close(multi, F.sample("one_step", denoise, z_x))
    torch.testing.assert_close(F.sample("one_step", denoise, z_x), 2.0 * z_x)  # z_y = -v


def test_stochastic_pair_shapes_and_target(latents):
    z_x, z_y, noise = latents
    acp = schedule.alphas_cumprod(0.00085, 0.012)
    t = torch.tensor([0, 999])
    pair = F.training_pair("stochastic", z_x, z_y, acp, noise=noise, timesteps=t)
    assert pair.unet_input.shape == (2, 8, 8, 8)
    torch.testing.assert_close(pair.unet_input[:, 4:], z_x)
    a = acp[t].view(2, 1, 1, 1)
    torch.testing.assert_close(pair.unet_input[:, :4], a.sqrt() * z_y + (1 - a).sqrt() * noise)
    torch.testing.assert_close(pair.target, a.sqrt() * noise - (1 - a).sqrt() * z_y)
    assert F.unet_in_channels("stochastic") == 8 and F.unet_in_channels("one_step") == 4


def test_stochastic_sampler_is_seeded(latents):
    z_x = latents[0]
    acp = schedule.alphas_cumprod(0.00085, 0.012)

    def denoise(inp, t):
        return inp[:, :4] * 0.1

    a = F.sample("stochastic", denoise, z_x, acp, 3, generator=torch.Generator().manual_seed(1))
    b = F.sample("stochastic", denoise, z_x, acp, 3, generator=torch.Generator().manual_seed(1))
    c = F.sample("stochastic", denoise, z_x, acp, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_bad_formulation_and_shapes(latents):
    with pytest.raises(ValueError, match="unknown formulation 'marigold'"):
        F.training_pair("marigold", latents[0], latents[1])
    with pytest.raises(ValueError, match="expected the same latent shape"):
        F.training_pair("one_step", latents[0], latents[1][:1])
