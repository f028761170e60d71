"""Labels as VAE inputs: how depth and normals become 3-channel images in [-1, 1] (Marigold / GenPercept).

* depth: per-image affine normalisation with the 2% and 98% quantiles of the valid pixels to [-1, 1],
  clipped, replicated to 3 channels; invalid pixels get a neutral value and are masked in the losses.
* normal: unit vectors are already in [-1, 1]; invalid pixels get (0, 0, 1) (facing the camera).
* NaN/inf never reach the VAE: they are invalid.
"""

from __future__ import annotations

import torch

DEPTH_QUANTILES = (0.02, 0.98)


def depth_to_image(depth: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, W] depth (metres) -> ([B, 3, H, W] in [-1, 1], [B, H, W] valid mask).

    An image with no valid pixel is returned as zeros with an all-False mask (the loss then skips it).
    """
    depth = depth.float()  # [B, H, W]
    ok = torch.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= valid.bool()
    out = torch.zeros_like(depth)  # [B, H, W]
    for i in range(depth.shape[0]):
        vals = depth[i][ok[i]]
        if vals.numel() < 2:
            ok[i] = False
            continue
        lo, hi = torch.quantile(vals, torch.tensor(DEPTH_QUANTILES, dtype=vals.dtype))
        scaled = (depth[i] - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0  # [H, W]
        out[i] = torch.where(ok[i], scaled.clamp(-1.0, 1.0), torch.zeros_like(scaled))
    return out.unsqueeze(1).repeat(1, 3, 1, 1), ok  # [B, 3, H, W], [B, H, W]


def normal_to_image(normal: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 3, H, W] normals -> ([B, 3, H, W] unit vectors, invalid = (0, 0, 1), [B, H, W] valid mask)."""
    normal = normal.float()  # [B, 3, H, W]
    norm = normal.norm(dim=1)  # [B, H, W]
    ok = torch.isfinite(normal).all(dim=1) & (norm > 1e-3)
    if valid is not None:
        ok &= valid.bool()
    unit = torch.nn.functional.normalize(torch.nan_to_num(normal), dim=1, eps=1e-6)  # [B, 3, H, W]
    facing = torch.zeros_like(unit)
    facing[:, 2] = 1.0
    return torch.where(ok.unsqueeze(1), unit, facing), ok


def label_to_image(task: str, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE input for ``task`` from a batch dict with ``depth``/``normal`` and ``valid`` tensors."""
    valid = sample.get("valid")
    if task == "depth":
        return depth_to_image(sample["depth"], valid)
    if task == "normal":
        return normal_to_image(sample["normal"], valid)
    raise ValueError(f"unknown label task {task!r}: expected depth or normal")
