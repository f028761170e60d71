"""The variance schedule, eq. (2), exactly as the authors' code (diffusers ``scaled_linear``) computes it.

Errata. The supplementary prints eq. (2) as

    beta_s = (sqrt(beta_start) + s/T * (sqrt(beta_end) - sqrt(beta_start)))^2,  s = 1..T,

but diffusers' ``DDIMScheduler(beta_schedule="scaled_linear")`` - which the authors' code uses - builds
``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``: the interpolation weight of index i = 0..T-1 is
i/(T-1), not (i+1)/T. Both end at beta_end; the printed one never reaches beta_start. We implement the
diffusers schedule (``betas``) and keep the printed one (``betas_as_printed``) so notebook 01 can show how
much the two differ.

Indexing follows diffusers: index t = 0..T-1, and ``alphas_cumprod[t]`` is alpha_bar of the paper's
timestep t + 1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

NUM_TRAIN_TIMESTEPS = 1000
SD21_BETAS = (0.00085, 0.012)  # Stable Diffusion 2.1's (beta_start, beta_end)

_PRESETS_CSV = Path(__file__).resolve().parents[1] / "data" / "paper" / "beta_presets.csv"

# The seven (beta_start, beta_end) pairs of the authors' schedule ablation (Fig. 2, section 3.1 of the main
# paper), as in data/paper/beta_presets.csv; (1.0, 1.0) makes every alpha_bar 0: one-step GenPercept.
BETA_PRESETS: tuple[tuple[float, float], ...] = (
    (0.0002125, 0.003),
    (0.000425, 0.006),
    (0.00085, 0.012),
    (0.0034, 0.048),
    (0.136, 0.192),
    (0.544, 0.768),
    (1.0, 1.0),
)


def _check(beta_start: float, beta_end: float, num_train_timesteps: int) -> None:
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name}={value!r}: expected a number in [0, 1]")
    if int(num_train_timesteps) < 1:
        raise ValueError(f"num_train_timesteps={num_train_timesteps!r}: expected an integer >= 1")


def betas(beta_start: float, beta_end: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Eq. (2) as implemented by diffusers ``scaled_linear``: linspace in sqrt(beta), squared. [T] float32."""
    _check(beta_start, beta_end, num_train_timesteps)
    sqrt_betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32)  # [T]
    return sqrt_betas**2  # [T]


def betas_as_printed(
    beta_start: float, beta_end: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Eq. (2) exactly as printed: s/T interpolation for s = 1..T (not what the code runs). [T] float32."""
    _check(beta_start, beta_end, num_train_timesteps)
    s = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64)  # [T]
    w = s / num_train_timesteps  # [T]
    b = (beta_start**0.5 + w * (beta_end**0.5 - beta_start**0.5)) ** 2  # [T]
    return b.to(torch.float32)


def alphas_cumprod_from_betas(b: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), the definition under eq. (1). [T]"""
    return torch.cumprod(1.0 - b, dim=0)  # [T]


def alphas_cumprod(
    beta_start: float, beta_end: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """alpha_bar for t = 0..T-1 (diffusers indexing), equal to ``DDIMScheduler.alphas_cumprod``. [T] float32."""
    return alphas_cumprod_from_betas(betas(beta_start, beta_end, num_train_timesteps))


def inference_timesteps(
    num_inference_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, steps_offset: int = 1
) -> torch.Tensor:
    """DDIM timesteps with ``timestep_spacing="leading"`` and ``steps_offset=1`` (the authors' config).

    10 steps -> [901, 801, ..., 1]; 1 step -> [1], the ``t = 1`` of eq. (8)-(9). [S] int64, descending.
    """
    if not 1 <= int(num_inference_steps) <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps={num_inference_steps!r}: expected an integer in [1, {num_train_timesteps}]"
        )
    step_ratio = num_train_timesteps // num_inference_steps
    steps = torch.arange(num_inference_steps, dtype=torch.int64) * step_ratio + steps_offset  # [S]
    return steps.flip(0)


def previous_alpha_bar(alphas_cumprod_: torch.Tensor, t: int, num_inference_steps: int) -> torch.Tensor:
    """alpha_bar of the step after t in the DDIM chain; past the start it is alpha_bar[0] (set_alpha_to_one=False)."""
    prev_t = int(t) - len(alphas_cumprod_) // num_inference_steps
    return alphas_cumprod_[prev_t] if prev_t >= 0 else alphas_cumprod_[0]


def load_beta_presets(path: str | Path = _PRESETS_CSV) -> list[tuple[float, float]]:
    """The presets as listed in the paper's CSV (a test checks they equal BETA_PRESETS)."""
    with open(path, newline="") as f:
        return [(float(r["beta_start"]), float(r["beta_end"])) for r in csv.DictReader(f)]
