"""Training losses and noise: every one masked, so NaN/inf or invalid ground truth never reaches a gradient.

* ``masked_mse``: the latent v-target loss of eq. (3)/(6)/(9), over valid latent pixels.
* ``ssi_loss``: least-squares scale-and-shift-invariant MSE (MiDaS), per image, in pixel space.
* ``gradient_loss``: multi-scale gradient matching of the aligned prediction (MiDaS).
* ``multi_res_noise``: Marigold's multi-resolution (pyramid) noise for the Gaussian-noise pipeline.

An image without a single valid pixel contributes exactly zero (the batch loss stays finite and the graph
stays connected).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def latent_valid_mask(valid: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H, W] pixel mask -> [B, 1, H/f, W/f]: a latent pixel is valid only if its whole patch is (Marigold)."""
    invalid = (~valid.bool()).float().unsqueeze(1)  # [B, 1, H, W]
    return F.max_pool2d(invalid, factor) < 0.5  # [B, 1, h, w]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` (broadcast over channels) and the target are finite."""
    ok = torch.isfinite(target) & torch.isfinite(pred)
    if mask is not None:
        ok = ok & mask.bool().expand_as(target)
    diff = torch.where(ok, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return diff.pow(2).sum() / ok.sum().clamp_min(1)


def _align_ls(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image least-squares scale s and shift t minimising |s*pred + t - gt|^2 on mask; returns s*pred+t."""
    m = mask.float()  # [B, H, W]
    n = m.sum((1, 2)).clamp_min(1)  # [B]
    p, g = pred * m, torch.nan_to_num(gt) * m
    sp, sg = p.sum((1, 2)), g.sum((1, 2))
    spp, spg = (p * pred).sum((1, 2)), (p * torch.nan_to_num(gt)).sum((1, 2))
    det = n * spp - sp * sp
    s = torch.where(det.abs() > 1e-8, (n * spg - sp * sg) / det.clamp_min(1e-8), torch.ones_like(det))
    t = (sg - s * sp) / n
    return s.view(-1, 1, 1) * pred + t.view(-1, 1, 1)  # [B, H, W]


def ssi_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant MSE: align ``pred`` [B, H, W] to ``gt`` by least squares, then MSE on valid."""
    ok = valid.bool() & torch.isfinite(gt)
    aligned = _align_ls(pred, gt, ok)  # [B, H, W]
    return masked_mse(aligned, gt, ok)


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Multi-scale gradient matching (MiDaS) of the aligned residual, [B, H, W] inputs."""
    ok = valid.bool() & torch.isfinite(gt)
    residual = torch.where(ok, _align_ls(pred, gt, ok) - torch.nan_to_num(gt), torch.zeros_like(pred))
    total, m = pred.new_zeros(()), ok.float()
    for _ in range(scales):
        gx = (residual[:, :, 1:] - residual[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]  # [B, H, W-1]
        gy = (residual[:, 1:] - residual[:, :-1]).abs() * m[:, 1:] * m[:, :-1]  # [B, H-1, W]
        total = total + (gx.sum() + gy.sum()) / m.sum().clamp_min(1)
        if min(residual.shape[-2:]) < 4:
            break
        residual = residual[:, ::2, ::2]
        m = m[:, ::2, ::2]
    return total / scales


def multi_res_noise(
    shape: tuple[int, ...],
    strength: float | torch.Tensor = 0.9,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Marigold's multi-resolution noise: Gaussian noise plus up-sampled coarser noise, re-normalised.

    ``strength`` may be a per-sample tensor [B] (Marigold anneals it with t/T). Level i adds noise drawn at
    1/r^i of the resolution (r ~ U(2, 4)) weighted by strength^i; the result has unit std per sample.
    [B, C, h, w]
    """
    b, c, h, w = shape
    noise = torch.randn(shape, generator=generator, dtype=dtype)  # [B, C, h, w]
    s = torch.as_tensor(strength, dtype=dtype).reshape(-1, 1, 1, 1).expand(b, 1, 1, 1)  # [B, 1, 1, 1]
    for i in range(1, int(math.log2(min(h, w))) + 1):
        r = float(torch.rand(1, generator=generator)) * 2 + 2
        hi, wi = max(1, int(h / r**i)), max(1, int(w / r**i))
        coarse = torch.randn(b, c, hi, wi, generator=generator, dtype=dtype)  # [B, C, hi, wi]
        noise = noise + F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * s**i
        if hi == 1 or wi == 1:
            break
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)  # [B, C, h, w]
