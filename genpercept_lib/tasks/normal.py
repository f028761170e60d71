"""Surface normals (supplementary section 8.2): camera-space unit normals, x right, y up, z to the viewer.

* label -> VAE image: unit vectors are already in [-1, 1]; invalid pixels get (0, 0, 1) (facing the camera)
  and are masked in the losses.
* decode: the decoded image clipped to [-1, 1] (the authors' ``decode_pred`` + clip; they do not
  renormalise); with ``Processing.unit_normals`` (ours) renormalised to unit length.
* ensemble: Marigold's normals ensembling (mean direction, then the closest member).
* flip: a mirrored scene has mirrored normals (x -> -x).
* pixel loss: the authors' ``angular_loss`` (``genpercept/losses/geometry_losses.py``): arccos of the
  cosine between prediction and label, clamped to [-1 + 1e-4, 1 - 1e-4], mean over valid pixels.
* metrics: DSINE's angular error pooled over all valid pixels (``metrics/normals.py``).
* paper profile: trained on Hypersim alone (the paper's normal model); scored on DSINE's six benchmarks
  (NYUv2, ScanNet, iBims-1, Sintel, Virtual KITTI, OASIS: ``readers.DSINE_SETS``, every image, DSINE's masks)
  and on Hypersim's test split (in-domain, labelled so). The authors publish no normal evaluation script, so
  each image is predicted at 768 px (their inference default, as Hypersim here) and brought back to its own
  size, where DSINE's metrics pool the errors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ensemble import ensemble_normals
from ..images import Processing
from ..metrics import normals as normal_metrics
from ..profiles import DatasetError
from .base import EvalSet, Task, register

ANGULAR_EPS = 1e-4
# DSINE's benchmarks in its order (projects/dsine/test.py), with the titles tables print
DSINE_TITLES = {"dsine_nyuv2": "NYUv2", "dsine_scannet": "ScanNet", "dsine_ibims": "iBims-1",
                "dsine_sintel": "Sintel", "dsine_vkitti": "Virtual KITTI", "dsine_oasis": "OASIS"}
REAL_EVAL = {
    **{name: EvalSet(name, processing_res=768, title=f"{title} (DSINE)") for name, title in DSINE_TITLES.items()},
    "hypersim_test": EvalSet("hypersim", "test", processing_res=768, title="Hypersim (test)"),
}


def normal_to_image(normal: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 3, H, W] normals -> ([B, 3, H, W] unit vectors, invalid = (0, 0, 1), [B, H, W] valid mask)."""
    normal = normal.float()  # [B, 3, H, W]
    norm = normal.norm(dim=1)  # [B, H, W]
    ok = torch.isfinite(normal).all(dim=1) & (norm > 1e-3)
    if valid is not None:
        ok &= valid.bool()
    unit = F.normalize(torch.nan_to_num(normal), dim=1, eps=1e-6)  # [B, 3, H, W]
    facing = torch.zeros_like(unit)
    facing[:, 2] = 1.0
    return torch.where(ok.unsqueeze(1), unit, facing), ok


def angular_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean angle (radians) between [B, 3, H, W] prediction and target over the valid pixels [B, H, W]."""
    cos = F.cosine_similarity(pred, target, dim=1).clamp(-1 + ANGULAR_EPS, 1 - ANGULAR_EPS)  # [B, H, W]
    angle = torch.where(valid.bool(), cos.acos(), torch.zeros_like(cos))
    return angle.sum() / valid.sum().clamp_min(1)


class Normal(Task):
    name = "normal"
    description = "surface normals, [3, H, W] camera-space vectors (x right, y up, z to the viewer)"
    channels = 3
    label_key = "normal"
    metrics = normal_metrics.NORMAL_METRICS
    lower_is_better = ("mean", "median", "rmse")
    headline = "mean"
    in_prior = True
    has_pixel_loss = True
    real_train_mix = {"hypersim": 1.0}
    real_eval = REAL_EVAL

    def label_to_image(self, label, valid=None):
        return normal_to_image(label, valid)

    def flip(self, label):
        out = label.flip(-1).clone()
        out[..., 0, :, :] = -out[..., 0, :, :]  # x points right: a mirrored scene's normals mirror too
        return out

    def decode(self, decoded, processing: Processing):
        clipped = decoded.float().clamp(-1.0, 1.0)  # [B, 3, H, W]
        return F.normalize(clipped, dim=1, eps=1e-6) if processing.unit_normals else clipped

    def finish(self, pred, processing):
        return F.normalize(pred, dim=1, eps=1e-6) if processing.unit_normals else pred

    def ensemble(self, members, processing):
        return ensemble_normals(members)  # [3, H, W]

    def pixel_loss(self, decoded, label_img, valid):
        return [angular_loss(decoded, label_img, valid)]

    def scores(self, pairs, **protocol):
        errors = []
        for item, pred in pairs:
            if "normal" not in item:
                raise DatasetError(f"{item.get('path', '?')}: no normal label to evaluate against")
            errors.append(normal_metrics.angular_error(pred, item["normal"], item["valid"]))
        return normal_metrics.pool_normal_metrics(errors)

    def image_blind(self, labels, valid):
        """The mean training normal map, renormalised."""
        mean = super().image_blind(labels, valid)  # [3, H, W]
        return (mean / np.maximum(np.linalg.norm(mean, axis=0, keepdims=True), 1e-6)).astype(np.float32)

    def to_output(self, pred, processing):
        """Vectors [3, H, W] -> (n + 1) / 2 in [0, 1], [H, W, 3] (the authors' output)."""
        return np.moveaxis(((pred.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy(), 0, -1)


NORMAL = register(Normal())
