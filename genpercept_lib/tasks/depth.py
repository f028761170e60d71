"""Affine-invariant monocular depth (the paper's main task; Marigold's recipe, supplementary sections 7, 8.1).

* label -> VAE image: per-image affine normalisation with the 2 % / 98 % quantiles of the valid pixels to
  [-1, 1], clipped, replicated to 3 channels (Marigold ``scale_shift_depth``; the authors' configs:
  ``depth_normalization: min_max_quantile 0.02, clip true``). As in the authors' ``ScaleShiftDepthNormalizer``
  the map applies to *every* pixel with a depth, valid or not, so a pixel beyond the valid range becomes +1
  (far); a pixel without one (sky and out-of-range pixels of the toy world, missing values of our readers)
  gets ``missing``: "far" (+1, default; the authors read Virtual KITTI's sky at its stored 655.35 m, which
  their normaliser clips to +1) or "zero" (0, mid-range: this reproduction before, measured in notebook 00).
  Either way invalid pixels are masked out of the loss. One departure remains on real data: a missing value the
  authors' files store as 0 m (Marigold's preprocessed Hypersim holes) is clipped to -1 (near) there, +1 here,
  because our readers keep no stored value for a missing pixel.
* decode: the mean of the decoded channels, mapped to [0, 1] (affine-invariant: [0, 1] up to scale/shift).
* ensemble: Marigold's affine-invariant ensembling (``ensemble.ensemble_depth``, median).
* pixel loss (the authors' main depth model adds pixel-space losses through the frozen decoder):
  least-squares scale-and-shift-invariant MSE + 0.5 x multi-scale gradient loss on the channel mean.
* metrics: AbsRel and delta1 after per-image least-squares alignment in depth space (Marigold protocol,
  ``metrics/depth.py``), averaged over images.
* paper profile: trained on 90 % Hypersim / 10 % Virtual KITTI, evaluated on KITTI (Eigen), NYUv2,
  ScanNet, DIODE and ETH3D with the authors' per-dataset settings (``script/eval_sd21/eval_ensemble1_step1``:
  native resolution for NYUv2, KITTI and ScanNet; 756 for ETH3D with the alignment fitted on at most
  1024 px; 640 for DIODE).

``disparity`` is the same task on inverse depth (the authors' ``unet_disparity_v2`` release), normalised as the
authors' ``ScaleShiftDisparityNormalizer`` (``disparity_to_image``): invalid pixels are -1 (far).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .. import losses
from ..domains import DOMAIN_INFO
from ..ensemble import ensemble_depth
from ..images import Processing, colorize_depth
from ..metrics import depth as depth_metrics
from .base import EvalSet, Task, register

DEPTH_QUANTILES = (0.02, 0.98)


MISSING_FILLS = {"far": 1.0, "zero": 0.0}  # a pixel without a depth -> this VAE image value


def _checked(missing: str) -> str:
    if missing not in MISSING_FILLS:
        raise ValueError(f"missing={missing!r}: expected one of {', '.join(MISSING_FILLS)}")
    return missing


def _masks(depth: torch.Tensor, valid: torch.Tensor | None):
    """(depth as float, pixels with a finite positive depth, those of them that are also ``valid``), [B, H, W] each."""
    depth = depth.float()
    has_depth = torch.isfinite(depth) & (depth > 0)
    return depth, has_depth, has_depth & valid.bool() if valid is not None else has_depth.clone()


def depth_to_image(depth: torch.Tensor, valid: torch.Tensor | None = None, missing: str = "far"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, W] depth (metres) -> ([B, 3, H, W] in [-1, 1], [B, H, W] valid mask).

    The 2 % / 98 % quantiles of the valid pixels map to -1 / +1; every pixel with a finite positive depth is
    mapped the same way and clipped (the authors' normaliser: beyond the valid range is +1 or -1); a pixel
    without one (0, NaN, inf) gets ``MISSING_FILLS[missing]``. NaN/inf never reach the VAE. An image with fewer
    than two valid pixels is returned as the fill with an all-False mask (the loss then skips it).
    """
    depth, has_depth, ok = _masks(depth, valid)  # [B, H, W] each
    out = torch.full_like(depth, MISSING_FILLS[_checked(missing)])  # [B, H, W]
    for i in range(depth.shape[0]):
        vals = depth[i][ok[i]]
        if vals.numel() < 2:
            ok[i] = False
            continue
        lo, hi = torch.quantile(vals, torch.tensor(DEPTH_QUANTILES, dtype=vals.dtype))
        scaled = (depth[i] - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0  # [H, W]
        out[i] = torch.where(has_depth[i], scaled.clamp(-1.0, 1.0), out[i])
    return out.unsqueeze(1).repeat(1, 3, 1, 1), ok  # [B, 3, H, W], [B, H, W]


def disparity_to_image(depth: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, W] depth (metres) -> ([B, 3, H, W] disparity in [-1, 1], [B, H, W] valid mask), as the authors'
    ``ScaleShiftDisparityNormalizer``: its quantile step is undone by the min-max that follows it, so disparity
    1/d is mapped affinely with the smallest disparity of any pixel with a depth (valid or not: Virtual KITTI's
    sky) to -1 and the largest valid one to +1, and every invalid pixel is -1 (far)."""
    depth, has_depth, ok = _masks(depth, valid)  # [B, H, W] each
    out = torch.full_like(depth, -1.0)  # [B, H, W]
    for i in range(depth.shape[0]):
        if int(ok[i].sum()) < 2:
            ok[i] = False
            continue
        disp = 1.0 / depth[i].clamp_min(1e-12)  # [H, W]
        lo, hi = disp[has_depth[i]].min(), disp[ok[i]].max()
        out[i] = torch.where(ok[i], (disp - lo) / (hi - lo).clamp_min(1e-12) * 2.0 - 1.0, out[i])
    return out.unsqueeze(1).repeat(1, 3, 1, 1), ok  # [B, 3, H, W], [B, H, W]


class Depth(Task):
    name = "depth"
    description = "affine-invariant depth, [H, W] in [0, 1] (near = 0 up to scale and shift)"
    channels = 1
    label_key = "depth"
    metrics = ("AbsRel", "delta1")
    lower_is_better = ("AbsRel",)
    headline = "AbsRel"
    png_bits = 16
    in_prior = True
    has_pixel_loss = True
    space = "depth"  # where predictions are aligned to the ground truth
    real_train_mix = {"hypersim": 0.9, "vkitti": 0.1}
    real_eval = {
        "kitti": EvalSet("kitti", processing_res=0, title="KITTI Eigen test"),
        "nyu": EvalSet("nyu", processing_res=0, title="NYUv2 test"),
        "scannet": EvalSet("scannet", processing_res=0, title="ScanNet"),
        "diode": EvalSet("diode", processing_res=640, title="DIODE val"),
        "eth3d": EvalSet("eth3d", processing_res=756, align_max_res=1024, title="ETH3D"),
    }

    def __init__(self, missing: str = "far"):
        self.missing = _checked(missing)  # what a pixel without a depth becomes in the VAE image (depth_to_image)

    def label_to_image(self, label, valid=None):
        return depth_to_image(label, valid, self.missing)

    def label_fingerprint(self):
        """The fill of pixels without a depth keys the toy prior (its VAE learns these images); "zero", the only
        fill before the option existed, keeps the key priors had then (the key's name, "invalid", is the one the
        committed results' prior was built with)."""
        return None if self.missing == "zero" else {"invalid": self.missing}

    def ensemble(self, members: np.ndarray, processing: Processing) -> np.ndarray:
        merged, _ = ensemble_depth(members, reduction="median", max_res=processing.ensemble_max_res)  # [H, W]
        return merged

    def pixel_loss(self, decoded, label_img, valid):
        pred, gt = decoded.mean(dim=1), label_img.mean(dim=1)  # [B, H, W] in ~[-1, 1]
        return [losses.ssi_loss(pred, gt, valid), 0.5 * losses.gradient_loss(pred, gt, valid)]

    def protocol(self, domain: str, real: bool, eval_set: EvalSet | None = None) -> dict:
        """Marigold's range and crop of the real dataset (and the authors' alignment grid), or the toy
        domain's depth range."""
        if real:
            out = {"dataset": eval_set.reader if eval_set else domain}
            if eval_set is not None and eval_set.align_max_res:
                out["align_max_res"] = eval_set.align_max_res
            return out
        lo, hi = DOMAIN_INFO[domain]["depth_range"]
        return {"min_depth": lo, "max_depth": hi}

    def scores(self, pairs, **protocol) -> dict[str, float]:
        """Per-image least-squares alignment in depth space, mean AbsRel / delta1 over images (Marigold)."""
        per_image = [depth_metrics.evaluate_depth(pred, item["depth"], item.get("valid"), space=self.space,
                                                  **protocol) for item, pred in pairs]
        m = depth_metrics.mean_metrics(per_image)
        return {"AbsRel": m["abs_rel"], "delta1": m["delta1"]}

    def image_blind(self, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The mean normalised training depth map, in [0, 1] (aligned per image like every prediction)."""
        img, ok = self.label_to_image(torch.from_numpy(np.asarray(labels, np.float32)), torch.from_numpy(valid))
        return super().image_blind((img[:, 0].numpy() + 1.0) / 2.0, ok.numpy()).astype(np.float32)

    def colored(self, out, rgb=None):
        pic = colorize_depth(np.clip(out, 0.0, 1.0), lo=0.0, hi=1.0)  # [H, W, 3] Spectral, near = red
        return Image.fromarray(np.round(pic * 255.0).astype(np.uint8))


class Disparity(Depth):
    """Affine-invariant disparity (inverse depth): the authors' ``unet_disparity_v2`` release."""

    name = "disparity"
    description = "affine-invariant disparity, [H, W] in [0, 1] (far = 0 up to scale and shift)"
    label_key = "depth"
    space = "disparity"
    in_prior = False

    def label_to_image(self, label, valid=None):
        return disparity_to_image(label, valid)


DEPTH = register(Depth())
DISPARITY = register(Disparity())
