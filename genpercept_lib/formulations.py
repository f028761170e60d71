"""The three ways of repurposing a diffusion U-Net for perception, supplementary section 1.

Symbols: z_y = E(label) the label latent (the paper's z^(y)), z_x = E(image) the image latent (z^(x)),
alpha_bar = alpha_bar_t from ``schedule.alphas_cumprod``, v = the U-Net's "v-prediction".

* ``stochastic``    eq. (1)-(4): Gaussian noise on z_y, U-Net input concat(z_t^(y), z_x) (8 channels),
                    DDIM sampling from pure noise, m samples ensembled.
* ``deterministic`` eq. (5)-(7): the image latent z_x plays the noise; U-Net input z_t^(y) (4 channels),
                    sampling starts from z_x, so it is deterministic.
* ``one_step``      eq. (8)-(9): ``deterministic`` with (beta_start, beta_end) = (1, 1), i.e. every
                    alpha_bar = 0: input z_x, target -z_y, prediction z_y = -v(z_x, t=1).

Errata (implemented correctly here, shown numerically in notebook 01):
* eq. (4) and eq. (7) print the noise estimate as sqrt(a) * v - sqrt(1-a) * z_t. From
  z_t = sqrt(a) z_0 + sqrt(1-a) eps and v = sqrt(a) eps - sqrt(1-a) z_0 one gets
  eps = sqrt(a) * v + sqrt(1-a) * z_t (a plus), which is what diffusers' DDIM computes.
* eq. (8)'s "z_{t-1} = -z_t" inherits that sign: with alpha_bar = 0 the correct update is z_{t-1} = z_t.
  Either way the chain never reads v, so the prediction is the last step's z_{1->0} = -v, as eq. (8) ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import schedule

FORMULATIONS = ("stochastic", "deterministic", "one_step")
ONE_STEP_TIMESTEP = 1  # = schedule.inference_timesteps(1)[0]: the t = 1 of eq. (8)-(9)


def _sqrt(a):
    return a**0.5 if not torch.is_tensor(a) else a.sqrt()


def noisy_sample(x0, noise, alpha_bar):
    """Forward process, eq. (1) (noise = Gaussian eps) and eq. (5) (noise = image latent z_x).

    z_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise
    """
    return _sqrt(alpha_bar) * x0 + _sqrt(1 - alpha_bar) * noise


def v_target(x0, noise, alpha_bar):
    """The v-prediction target, eq. (3) / eq. (6): v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0."""
    return _sqrt(alpha_bar) * noise - _sqrt(1 - alpha_bar) * x0


def predicted_x0(sample, v, alpha_bar):
    """The clean latent z_{t->0} from z_t and v, eq. (4) / eq. (7): sqrt(alpha_bar) * z_t - sqrt(1 - alpha_bar) * v."""
    return _sqrt(alpha_bar) * sample - _sqrt(1 - alpha_bar) * v


def predicted_noise(sample, v, alpha_bar):
    """The noise estimate of eq. (4) / eq. (7), sign corrected: sqrt(alpha_bar) * v + sqrt(1 - alpha_bar) * z_t.

    The paper prints a minus sign; see the module docstring (errata).
    """
    return _sqrt(alpha_bar) * v + _sqrt(1 - alpha_bar) * sample


def ddim_step(sample, v, alpha_bar_t, alpha_bar_prev):
    """One deterministic DDIM update (eta = 0), eq. (4) / eq. (7), last line:

    z_{t-1} = sqrt(alpha_bar_prev) * z_{t->0} + sqrt(1 - alpha_bar_prev) * eps_t.
    Equals ``DDIMScheduler.step(v, t, sample, eta=0).prev_sample`` with v_prediction, clip_sample=False.
    """
    x0 = predicted_x0(sample, v, alpha_bar_t)
    eps = predicted_noise(sample, v, alpha_bar_t)
    return _sqrt(alpha_bar_prev) * x0 + _sqrt(1 - alpha_bar_prev) * eps


# ---------------------------------------------------------------------------------------------------------
# Training pairs
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainingPair:
    unet_input: torch.Tensor  # [B, 8, h, w] (stochastic) or [B, 4, h, w]
    target: torch.Tensor      # [B, 4, h, w], the v-target
    timesteps: torch.Tensor   # [B] int64, diffusers indices 0..T-1


def _check_formulation(formulation: str) -> None:
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}: expected one of {', '.join(FORMULATIONS)}")


def unet_in_channels(formulation: str, latent_channels: int = 4) -> int:
    """8 for the stochastic pipeline (eq. 1 concatenates z_t^(y) and z_x), else 4."""
    _check_formulation(formulation)
    return 2 * latent_channels if formulation == "stochastic" else latent_channels


def sample_timesteps(batch_size: int, num_train_timesteps: int, generator=None, device=None) -> torch.Tensor:
    """t ~ U{0..T-1} (the paper's U(1..T) in diffusers indexing). [B] int64"""
    return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=device)


def training_pair(
    formulation: str,
    z_x: torch.Tensor,
    z_y: torch.Tensor,
    alphas_cumprod: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> TrainingPair:
    """U-Net input, v-target and timesteps for one batch of latents z_x, z_y [B, 4, h, w].

    stochastic:    eq. (1) + (3); ``noise`` defaults to N(0, I) (pass multi-resolution noise to override).
    deterministic: eq. (5) + (6); the "noise" is z_x.
    one_step:      eq. (9); alpha_bar = 0 and t = 1 whatever ``alphas_cumprod`` says: input z_x, target -z_y.
    """
    _check_formulation(formulation)
    if z_x.shape != z_y.shape:
        raise ValueError(f"z_x {tuple(z_x.shape)} and z_y {tuple(z_y.shape)}: expected the same latent shape")
    b = z_x.shape[0]
    if formulation == "one_step":
        t = torch.full((b,), ONE_STEP_TIMESTEP, dtype=torch.int64, device=z_x.device)  # [B]
        return TrainingPair(unet_input=z_x, target=v_target(z_y, z_x, 0.0), timesteps=t)  # target = -z_y

    if alphas_cumprod is None:
        raise ValueError(f"formulation {formulation!r} needs alphas_cumprod (schedule.alphas_cumprod(...))")
    if timesteps is None:
        timesteps = sample_timesteps(b, len(alphas_cumprod), generator=generator).to(z_x.device)
    a = alphas_cumprod.to(z_x.device, z_x.dtype)[timesteps].view(b, 1, 1, 1)  # [B, 1, 1, 1]
    if formulation == "stochastic":
        if noise is None:
            noise = torch.randn(z_y.shape, generator=generator, dtype=z_y.dtype).to(z_y.device)  # [B, 4, h, w]
        z_t = noisy_sample(z_y, noise, a)  # eq. (1): [B, 4, h, w]
        return TrainingPair(torch.cat([z_t, z_x], dim=1), v_target(z_y, noise, a), timesteps)  # [B, 8, h, w]
    z_t = noisy_sample(z_y, z_x, a)  # eq. (5): [B, 4, h, w]
    return TrainingPair(z_t, v_target(z_y, z_x, a), timesteps)  # eq. (6)


# ---------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (unet_input, timesteps [B]) -> v


def sample(
    formulation: str,
    denoise: Denoiser,
    z_x: torch.Tensor,
    alphas_cumprod: torch.Tensor | None = None,
    num_inference_steps: int = 10,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
):
    """Run a pipeline's sampler and return the predicted label latent z_{1->0} [B, 4, h, w].

    stochastic:    eq. (4), starting from z_T = eps ~ N(0, I), input concat(z_t, z_x) at every step.
    deterministic: eq. (7), starting from z_T = z_x.
    one_step:      eq. (9), z_y = -v(z_x, t = 1): one U-Net call.

    The prediction is the last step's z_{t->0} (the paper's y = D(z_{1->0})), not the DDIM ``prev_sample``:
    the two agree up to sqrt(alpha_bar_0) ~ 0.9996 for SD2.1's schedule, but for (1, 1) the prev_sample is
    the input itself and carries no prediction at all.
    """
    _check_formulation(formulation)
    b = z_x.shape[0]
    if formulation == "one_step":
        t = torch.full((b,), ONE_STEP_TIMESTEP, dtype=torch.int64, device=z_x.device)  # [B]
        x0 = predicted_x0(z_x, denoise(z_x, t), 0.0)  # = -v: [B, 4, h, w]
        return (x0, [x0]) if return_trajectory else x0
    if alphas_cumprod is None:
        raise ValueError(f"formulation {formulation!r} needs alphas_cumprod (schedule.alphas_cumprod(...))")
    acp = alphas_cumprod.to(z_x.device, torch.float32)  # [T]
    if formulation == "stochastic":
        z_t = torch.randn(z_x.shape, generator=generator, dtype=z_x.dtype).to(z_x.device)  # eps: [B, 4, h, w]
    else:
        z_t = z_x  # RGB "noise": [B, 4, h, w]
    trajectory = []
    for t in schedule.inference_timesteps(num_inference_steps, len(acp)).tolist():
        unet_input = torch.cat([z_t, z_x], dim=1) if formulation == "stochastic" else z_t  # [B, 8|4, h, w]
        v = denoise(unet_input, torch.full((b,), t, dtype=torch.int64, device=z_x.device))  # [B, 4, h, w]
        alpha_bar_t = acp[t]
        alpha_bar_prev = schedule.previous_alpha_bar(acp, t, num_inference_steps)
        x0 = predicted_x0(z_t, v, alpha_bar_t)  # z_{t->0}
        z_t = ddim_step(z_t, v, alpha_bar_t, alpha_bar_prev)  # z_{t-1}
        trajectory.append(x0)
    return (x0, trajectory) if return_trajectory else x0


def unet_denoiser(unet, encoder_hidden_states: torch.Tensor) -> Denoiser:
    """Wrap a diffusers UNet2DConditionModel as ``denoise(unet_input, t) -> v`` with a fixed text embedding."""

    def denoise(unet_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = encoder_hidden_states.expand(unet_input.shape[0], -1, -1)  # [B, L, D]
        return unet(unet_input, t, encoder_hidden_states=cond).sample  # [B, 4, h, w]

    return denoise
