"""Images -> predictions with any of the three formulations: encode, sample, decode, ensemble.

``perceive`` is the one inference path that every notebook uses (the toy world and the real models alike).
Labels live in the VAE's RGB space as 3-channel images in [-1, 1] (depth replicated to 3 channels,
normals as unit vectors); ``decode_label`` turns the decoded image back into the task's output.
"""

from __future__ import annotations

import torch

from . import formulations, models

TASK_CHANNELS = {"depth": 1, "disparity": 1, "dis": 1, "matting": 1, "normal": 3, "seg": 3}


def decode_label(decoded: torch.Tensor, task: str) -> torch.Tensor:
    """Decoded VAE output [B, 3, H, W] in ~[-1, 1] -> task output.

    Scalar tasks: mean over the 3 channels mapped to [0, 1], [B, H, W] (Marigold).
    normal: unit vectors [B, 3, H, W]. seg: colours in [0, 1], [B, 3, H, W].
    """
    if task not in TASK_CHANNELS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASK_CHANNELS)}")
    decoded = decoded.float().clamp(-1.0, 1.0)  # [B, 3, H, W]
    if TASK_CHANNELS[task] == 1:
        return (decoded.mean(dim=1) + 1.0) / 2.0  # [B, H, W]
    if task == "normal":
        return torch.nn.functional.normalize(decoded, dim=1, eps=1e-6)  # [B, 3, H, W]
    return (decoded + 1.0) / 2.0  # [B, 3, H, W]


@torch.no_grad()
def perceive(
    unet,
    vae,
    images: torch.Tensor,
    formulation: str = "one_step",
    alphas_cumprod: torch.Tensor | None = None,
    num_inference_steps: int = 1,
    ensemble_size: int = 1,
    task: str = "depth",
    text_embedding: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    ensemble_reduction: str = "median",
) -> torch.Tensor:
    """Predict labels for ``images`` [B, 3, H, W] in [0, 1] (H, W multiples of the VAE factor).

    Returns [B, H, W] in [0, 1] for scalar tasks (depth is affine-invariant, so [0, 1] up to scale/shift)
    or [B, 3, H, W]. With ``ensemble_size`` > 1 each image is predicted m times (stochastic: m noises) and
    the members are merged with Marigold's affine-invariant ensembling (``ensemble.py``).
    """
    if ensemble_size < 1:
        raise ValueError(f"ensemble_size={ensemble_size!r}: expected an integer >= 1")
    cond = text_embedding if text_embedding is not None else models.empty_text_embedding(unet)  # [1, L, D]
    denoise = formulations.unet_denoiser(unet, cond)
    p = next(unet.parameters())
    x = images.to(p.device, p.dtype) * 2.0 - 1.0  # [B, 3, H, W] in [-1, 1]
    z_x = models.encode(vae, x)  # [B, 4, h, w]
    members = []
    for _ in range(ensemble_size):
        z_y = formulations.sample(
            formulation, denoise, z_x, alphas_cumprod, num_inference_steps, generator=generator
        )  # [B, 4, h, w]
        members.append(decode_label(models.decode(vae, z_y), task))  # [B, H, W] or [B, 3, H, W]
    if ensemble_size == 1:
        return members[0]
    from . import ensemble

    stacked = torch.stack(members, dim=1).cpu().numpy()  # [B, E, H, W] or [B, E, 3, H, W]
    merged = []
    for per_image in stacked:
        if TASK_CHANNELS[task] == 1:
            merged.append(torch.from_numpy(ensemble.ensemble_depth(per_image, reduction=ensemble_reduction)[0]))
        else:
            merged.append(torch.from_numpy(ensemble.ensemble_normals(per_image)))
    return torch.stack(merged).float()
