"""Does the prior know geometry? A linear probe of a frozen generator U-Net's features (the paper's premise).

GenPercept rests on what a pretrained diffusion model already knows about scenes; in Stable Diffusion, linear
probes of the U-Net's activations recover depth (Chen, Viegas, Wattenberg, "Beyond Surface Statistics",
arXiv 2306.05720). The toy SD must have the same property, and this measures it directly:

1. ``unet_features``: the RGB latent, noised to timestep ``t`` with fixed noise, through the frozen U-Net; the
   outputs of its mid block and of every up block, each resized to the latent grid: [B, C, h, w].
2. ``depth_grid``: the ground-truth depth averaged over the valid pixels of each latent cell: [B, h, w].
3. ``fit_ridge`` / ``score``: per-cell ridge regression from [features, the mean depth map, the row] to the
   per-image standardised depth, fitted on scenes of every domain; scored on other scenes with per-image
   least-squares scale and shift (eq. (A), as every depth table here) and AbsRel.

The same probe on position alone (the mean map and the row: ``features=None``) is the image-blind guess; on a
randomly initialised U-Net of the same architecture it says what the architecture gives without pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import formulations, models, schedule
from .metrics import depth as depth_metrics

MIN_VALID = 0.5  # a latent cell is scored when at least half of its pixels have a depth


@torch.no_grad()
def unet_features(unet, vae, rgb: torch.Tensor, t: int = 100, seed: int = 0, batch: int = 64) -> torch.Tensor:
    """Frozen U-Net activations on noised RGB latents, [N, 3, H, W] in [0, 1] -> [N, C, h, w] (mid + up blocks)."""
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS)
    blocks = [unet.mid_block, *unet.up_blocks]
    out = []
    for k in range(0, len(rgb), batch):
        x = rgb[k:k + batch] * 2 - 1  # [B, 3, H, W] in [-1, 1]
        z0 = models.encode(vae, x)  # [B, 4, h, w]
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed + k))
        z_t = formulations.noisy_sample(z0, noise, acp[t])  # eq. (2)
        seen: list[torch.Tensor] = []

        def keep(module, inputs, output, seen=seen):
            seen.append(output[0] if isinstance(output, tuple) else output)  # [B, C_k, h_k, w_k]

        hooks = [b.register_forward_hook(keep) for b in blocks]
        try:
            cond = models.empty_text_embedding(unet, len(x))  # [B, 1, D]
            unet(z_t, torch.full((len(x),), t, dtype=torch.int64), encoder_hidden_states=cond)
        finally:
            for h in hooks:
                h.remove()
        grid = z0.shape[-2:]
        out.append(torch.cat([torch.nn.functional.adaptive_avg_pool2d(f, grid) for f in seen], dim=1))  # [B, C, h, w]
    return torch.cat(out)


def depth_grid(depth: np.ndarray, valid: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth averaged over the valid pixels of each of grid x grid cells, and which cells hold enough of them:
    [N, H, W] -> [N, grid, grid] (depth) and [N, grid, grid] (bool)."""
    n, h, w = depth.shape
    fh, fw = h // grid, w // grid
    d = np.where(valid, depth, 0.0).reshape(n, grid, fh, grid, fw).sum((2, 4))
    c = valid.reshape(n, grid, fh, grid, fw).mean((2, 4))  # share of valid pixels per cell
    return np.where(c > 0, d / np.maximum(c * fh * fw, 1), 0.0), c >= MIN_VALID


def standardised(d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each image's valid cells to zero mean and unit std (the probe learns relative depth, as the task does)."""
    out = np.zeros_like(d)
    for i in range(len(d)):
        v = d[i][m[i]]
        if v.size:
            out[i] = (d[i] - v.mean()) / (v.std() + 1e-6)
    return out


def design(features: np.ndarray | None, mean_map: np.ndarray, n: int) -> np.ndarray:
    """Per-cell rows [features, mean depth map, row, 1] of ``n`` images: [n, C, h, w] -> [n * h * w, C + 3]."""
    h, w = mean_map.shape
    rows = np.broadcast_to(np.linspace(-1, 1, h)[:, None], (h, w))
    pos = np.stack([np.broadcast_to(mean_map, (n, h, w)), np.broadcast_to(rows, (n, h, w)), np.ones((n, h, w))], 1)
    x = pos if features is None else np.concatenate([features, pos], axis=1)  # [N, C + 3, h, w]
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


@dataclass
class Ridge:
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.coef


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Ridge:
    """argmin_w |X w - y|^2 + lam |w|^2 on standardised columns (the constant column is kept as it is)."""
    mean, std = x.mean(0), x.std(0)
    const = std < 1e-8
    mean[const], std[const] = 0.0, 1.0
    xs = (x - mean) / std
    gram = xs.T @ xs + lam * len(xs) * np.eye(x.shape[1])
    return Ridge(mean, std, np.linalg.solve(gram, xs.T @ y))


def score(pred: np.ndarray, gt: np.ndarray, m: np.ndarray) -> np.ndarray:
    """AbsRel per image after per-image least-squares scale and shift (eq. (A)) over its valid cells: [N]."""
    out = []
    for p, g, v in zip(pred, gt, m):
        aligned = depth_metrics.align_scale_shift(p, g, v)[0]
        out.append(depth_metrics.abs_rel(np.clip(aligned, 1e-3, None), g, v))
    return np.array(out)


def probe(fit: dict, evals: dict[str, dict], lams=(1e-4, 1e-3, 1e-2, 1e-1)) -> dict[str, float]:
    """Fit on ``fit`` (``x`` features or None, ``depth``, ``valid`` at the grid) choosing the ridge strength on its
    last quarter, refit on all of it, and score each evaluation set: {name: mean AbsRel}."""
    d, m = fit["depth"], fit["valid"]
    y = standardised(d, m)  # [N, h, w]
    mean_map = y.mean(0)  # [h, w]: where depth is, on average (position for free)
    cut = len(d) * 3 // 4

    def rows(part, sl):
        n = len(part["depth"][sl])
        return design(None if part["x"] is None else part["x"][sl], mean_map, n)

    def fitted(sl, lam):
        keep = m[sl].reshape(-1)
        return fit_ridge(rows(fit, sl)[keep], y[sl].reshape(-1)[keep], lam)

    def evaluate(model, part, sl=slice(None)):
        pred = model.predict(rows(part, sl)).reshape(part["depth"][sl].shape)
        return float(score(pred, part["depth"][sl], part["valid"][sl]).mean())

    best = min(lams, key=lambda lam: evaluate(fitted(slice(0, cut), lam), fit, slice(cut, None)))
    model = fitted(slice(None), best)
    return {name: evaluate(model, part) for name, part in evals.items()}
