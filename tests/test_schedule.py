import pytest
import torch
from diffusers import DDIMScheduler

from genpercept_lib import schedule


def ddim(beta_start, beta_end, **kw):
    return DDIMScheduler(
        beta_start=beta_start, beta_end=beta_end, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="leading", **kw,
    )


@pytest.mark.parametrize("beta_start,beta_end", schedule.BETA_PRESETS)
def test_alphas_cumprod_equals_diffusers(beta_start, beta_end):
    ours = schedule.alphas_cumprod(beta_start, beta_end)
    theirs = ddim(beta_start, beta_end).alphas_cumprod
    assert ours.shape == (1000,)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(schedule.betas(beta_start, beta_end), ddim(beta_start, beta_end).betas)


def test_one_one_preset_zeroes_every_alpha_bar():
    assert torch.count_nonzero(schedule.alphas_cumprod(1.0, 1.0)) == 0


def test_sd21_values_at_both_ends():
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS)
    assert acp[0].item() == pytest.approx(1 - 0.00085, rel=1e-6)  # index 0 is the paper's t = 1
    assert acp[-1].item() == pytest.approx(0.0047, abs=2e-4)
    assert torch.all(acp[1:] < acp[:-1])


def test_presets_match_paper_csv():
    assert schedule.load_beta_presets() == list(schedule.BETA_PRESETS)
    assert len(schedule.BETA_PRESETS) == 7 and schedule.BETA_PRESETS[-1] == (1.0, 1.0)


def test_printed_eq2_differs_slightly_from_code():
    code, printed = schedule.betas(0.00085, 0.012), schedule.betas_as_printed(0.00085, 0.012)
    assert printed[-1].item() == pytest.approx(code[-1].item(), rel=1e-6)  # both end at beta_end
    assert code[0].item() == pytest.approx(0.00085, rel=1e-6)
    assert printed[0].item() > code[0].item()  # the printed form never reaches beta_start
    assert 0 < (printed - code).abs().max().item() < 1e-4


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_inference_timesteps_equal_diffusers(n):
    s = ddim(0.00085, 0.012)
    s.set_timesteps(n)
    assert schedule.inference_timesteps(n).tolist() == s.timesteps.tolist()
    assert schedule.inference_timesteps(1).tolist() == [1]


@pytest.mark.parametrize("bad", [(-0.1, 0.012), (0.00085, 1.5)])
def test_bad_betas(bad):
    with pytest.raises(ValueError, match="expected a number in"):
        schedule.betas(*bad)


def test_bad_num_steps():
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        schedule.inference_timesteps(0)
