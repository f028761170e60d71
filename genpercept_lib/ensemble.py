"""Test-time ensembling of Marigold (Ke et al., CVPR 2024, sec. 3.4), used by GenPercept's stochastic
multi-step pipeline (supplementary sec. 1.1: "m predictions ... averaged with an ensemble process").

Depth. The E members d_1..d_E are affine-invariant: each is the scene depth up to its own scale and shift.
Marigold aligns them jointly before reducing. With a_i = s_i * d_i + t_i, it minimises over (s, t)

    (A)  cost(s, t) = sum_{i<j} RMSE(a_i, a_j)  +  lambda * ( |0 - min m| + |1 - max m| ),
         m = reduce(a_1..a_E)  (pixel-wise median or mean),  lambda = regularizer_strength = 0.02

The pairwise term pulls the members onto each other; the regulariser keeps the merged map spanning
[0, 1], which removes the trivial solution s = 0 (no member is held fixed). The start point maps each
member to [0, 1] by its own min/max; scipy's BFGS (numerical gradient) then runs ``max_iter`` = 2 steps
with ``tol`` = 1e-3. The aligned members are reduced (median or mean), the result is min/max normalised to
[0, 1], and the uncertainty is the spread of the aligned members in the same units: the median absolute
deviation (MAD) for "median", the standard deviation for "mean".

This follows ``ensemble_depth`` of diffusers' ``MarigoldDepthPipeline`` and of GenPercept's
``genpercept/util/ensemble.py`` (sum of per-pair RMSEs; the first Marigold release used one RMSE over all
pairs), including its optional scale-only mode.

Normals. Marigold's normals ensembling: average the unit normals, renormalise, and either return that mean
("mean") or, per pixel, the member closest to it in angle ("closest"); uncertainty is the mean angle to the
mean direction, divided by pi.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F

from .images import processing_size

_RANGE_EPS = 1e-6  # diffusers: clamp of (max - min) when normalising


def _to_torch64(x) -> tuple[torch.Tensor, object]:
    """float64 CPU tensor of ``x`` and a function that converts a result back to ``x``'s kind."""
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        device = x.device
        return x.detach().to("cpu", torch.float64), (lambda y: y.to(device, dtype))
    return torch.from_numpy(np.asarray(x, dtype=np.float64).copy()), (lambda y: y.numpy())


def _reduce(aligned: torch.Tensor, reduction: str, with_uncertainty: bool):
    """Pixel-wise reduction of aligned members [E, ...] -> (prediction, uncertainty or None)."""
    uncertainty = None
    if reduction == "mean":
        prediction = aligned.mean(dim=0)
        if with_uncertainty:
            uncertainty = aligned.std(dim=0) if aligned.shape[0] > 1 else torch.zeros_like(prediction)
    else:  # median; torch returns the lower of the two middle values for even E, as Marigold/diffusers do
        prediction = aligned.median(dim=0).values
        if with_uncertainty:
            uncertainty = (aligned - prediction).abs().median(dim=0).values  # MAD
    return prediction, uncertainty


def _align(x: torch.Tensor, param: np.ndarray, shift_invariant: bool) -> torch.Tensor:
    """a_i = s_i * x_i + t_i (or s_i * x_i) for members x [E, ...] and parameters [s | t]."""
    e = x.shape[0]
    view = (e,) + (1,) * (x.dim() - 1)
    p = torch.from_numpy(np.asarray(param, dtype=np.float64))
    if shift_invariant:
        s, t = p[:e].view(view), p[e:].view(view)
        return x * s + t
    return x * p.view(view)


def _cost(param: np.ndarray, x: torch.Tensor, reduction: str, regularizer_strength: float,
          shift_invariant: bool) -> float:
    """Eq. (A) for members x [E, N]."""
    aligned = _align(x, param, shift_invariant)  # [E, N]
    cost = 0.0
    for i, j in torch.combinations(torch.arange(x.shape[0]), r=2).tolist():
        cost += torch.sqrt(torch.mean((aligned[i] - aligned[j]) ** 2)).item()
    if regularizer_strength > 0:
        merged, _ = _reduce(aligned, reduction, with_uncertainty=False)
        err_near = abs(0.0 - merged.min().item())
        err_far = abs(1.0 - merged.max().item())
        cost += (err_near + err_far) * regularizer_strength
    return cost


def ensemble_depth(preds, reduction: str = "median", max_res: int | None = None,
                   regularizer_strength: float = 0.02, tol: float = 1e-3, max_iter: int = 2,
                   output_uncertainty: bool = False, scale_invariant: bool = True,
                   shift_invariant: bool = True, seed: int = 0):
    """Merge E affine-invariant depth maps ``preds`` [E, H, W] into one map in [0, 1] (eq. (A)).

    Args:
        preds: numpy array or torch tensor [E, H, W] (``[E, 1, H, W]`` is accepted too); must be finite.
        reduction: "median" (Marigold default; uncertainty = MAD) or "mean" (uncertainty = std).
        max_res: if set and max(H, W) > max_res, the scales/shifts are fitted on a nearest-neighbour
            downsampled copy whose longer side is max_res; they are then applied at full resolution.
        regularizer_strength, tol, max_iter: lambda of eq. (A) and the BFGS settings (Marigold defaults).
        output_uncertainty: also return the uncertainty map.
        scale_invariant, shift_invariant: affine (both, default), scale-only (no shift; result divided by its
            max instead of min/max normalised), or neither (plain reduction, no alignment, no normalisation).
        seed: accepted so callers can pass a run seed uniformly; unused, the procedure is deterministic.

    Returns:
        ``(depth [H, W], uncertainty [H, W] or None)``, of the input's kind (numpy float64, or a tensor with
        the input's float dtype and device). Uncertainty is in the units of the normalised depth.
    """
    del seed  # deterministic: nothing to seed
    if reduction not in ("median", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}: expected 'median' or 'mean'")
    if shift_invariant and not scale_invariant:
        raise ValueError("shift-only ensembling is not supported (as in Marigold)")
    x, back = _to_torch64(preds)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or x.shape[0] < 1:
        raise ValueError(f"preds must have shape [E, H, W] with E >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("preds contain NaN or inf")
    e, h, w = x.shape

    # 1. alignment parameters, fitted at <= max_res
    if scale_invariant:
        x_fit = x
        if max_res is not None and max(h, w) > max_res:
            size = processing_size(h, w, max_res, "truncate")  # Marigold's resize_max_res: int() of the scaled size
            x_fit = F.interpolate(x[:, None], size=size, mode="nearest-exact")[:, 0]
        x_fit = x_fit.reshape(e, -1)  # [E, N]
        lo, hi = x_fit.min(dim=1).values, x_fit.max(dim=1).values
        if shift_invariant:  # start: every member min/max-normalised to [0, 1]
            s0 = 1.0 / (hi - lo).clamp(min=_RANGE_EPS)
            param0 = torch.cat([s0, -s0 * lo]).numpy()
        else:
            param0 = (1.0 / hi.clamp(min=_RANGE_EPS)).numpy()
        res = scipy.optimize.minimize(
            partial(_cost, x=x_fit, reduction=reduction, regularizer_strength=regularizer_strength,
                    shift_invariant=shift_invariant),
            param0, method="BFGS", tol=tol, options={"maxiter": max_iter, "disp": False},
        )
        # 2. align the full-resolution members
        x = _align(x, res.x, shift_invariant)  # [E, H, W]

    # 3. reduce and normalise to [0, 1]
    depth, uncertainty = _reduce(x, reduction, output_uncertainty)  # [H, W]
    if scale_invariant:
        d_min = depth.min() if shift_invariant else torch.zeros((), dtype=depth.dtype)
        d_range = (depth.max() - d_min).clamp(min=_RANGE_EPS)
        depth = (depth - d_min) / d_range
        if uncertainty is not None:
            uncertainty = uncertainty / d_range
    return back(depth), (back(uncertainty) if uncertainty is not None else None)


def ensemble_normals(preds, reduction: str = "closest", output_uncertainty: bool = False):
    """Merge E normal maps ``preds`` [E, 3, H, W] (Marigold normals ensembling).

    Members are normalised to unit length, averaged and renormalised; "mean" returns that mean direction,
    "closest" returns, per pixel, the member with the highest cosine to it (Marigold default).

    Returns:
        ``normals [3, H, W]`` of the input's kind, or ``(normals, uncertainty [H, W])`` when
        ``output_uncertainty``; uncertainty = mean over members of arccos(cos to the mean direction) / pi,
        in [0, 1].
    """
    if reduction not in ("closest", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}: expected 'closest' or 'mean'")
    n, back = _to_torch64(preds)
    if n.dim() != 4 or n.shape[1] != 3 or n.shape[0] < 1:
        raise ValueError(f"preds must have shape [E, 3, H, W] with E >= 1, got {tuple(n.shape)}")
    if not torch.isfinite(n).all():
        raise ValueError("preds contain NaN or inf")
    n = n / n.norm(dim=1, keepdim=True).clamp(min=_RANGE_EPS)  # [E, 3, H, W]
    mean = n.mean(dim=0, keepdim=True)
    mean = mean / mean.norm(dim=1, keepdim=True).clamp(min=_RANGE_EPS)  # [1, 3, H, W]
    cos = (n * mean).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)  # [E, 1, H, W]
    uncertainty = None
    if output_uncertainty:
        uncertainty = back(cos.arccos().mean(dim=0)[0] / np.pi)  # [H, W]
    if reduction == "mean":
        normals = back(mean[0])
    else:
        closest = cos.argmax(dim=0, keepdim=True).expand(1, 3, *n.shape[2:])  # [1, 3, H, W]
        normals = back(torch.gather(n, 0, closest)[0])
    return (normals, uncertainty) if output_uncertainty else normals
