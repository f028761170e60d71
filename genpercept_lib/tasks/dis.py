"""Dichotomous image segmentation (supplementary section 8.3, Table 4): a binary mask of the salient object,
thin structures included (chair legs, wires, fence bars, plant stems, hair).

* label -> VAE image: the mask in [0, 1] mapped linearly to [-1, 1], replicated to 3 channels (the authors'
  ``dis_raw_norm``: a min-max normalisation, which for a mask spanning 0..1 is the same map; we do not stretch
  a mask that does not span the range). Every pixel counts (the sky is background, not "unknown").
* decode: the mean of the decoded channels, in [0, 1] (``genpercept_pipeline.py``, ``decode_pred``).
* pixel loss: the authors' DIS loss, per-pixel MSE between the decoded prediction and the label through the
  frozen decoder (``config/main_paper/..._dis_..._pixel_mse_loss.yaml``: ``mse_loss``).
* metrics: the six of Table 4 (``metrics/dis.py``): max F-beta, weighted F-beta, MAE, S-alpha, mean E-phi and
  HCE-gamma, scored at the ground truth's resolution.
* toy evaluation: the held-out domains' scenes, split like DIS5K into a validation set (every fifth scene,
  ``DIS-VD``) and four test sets of growing structural complexity (``DIS-TE1`` .. ``DIS-TE4``: quartiles of
  the ground truth's isoperimetric quotient P^2 / (4 pi A), the measure DIS5K orders its test sets by; about
  1.3-1.6 for compact shapes, large for thin, branching ones). Scenes whose mask is empty are left out.
* paper profile: trained on DIS-TR (768 x 768, the authors' ``dataset_train_dis_768x768.yaml``), evaluated on
  DIS-VD and DIS-TE1..4.
* ``genpercept predict --task dis``: ``_pred.npy`` in [0, 1], an 8-bit ``_pred.png`` mask, and
  ``_colored.png``: the mask tinted over the image (like the released ``unet_dis_v2`` outputs).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..domains import EVAL_DOMAINS
from ..metrics import dis as dis_metrics
from ..profiles import PerProfile, TaskSettings
from .base import EvalSet, Task, register

SPLITS = ("DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


def isoperimetric_quotient(mask: np.ndarray) -> float:
    """P^2 / (4 pi A) of a binary mask [H, W]: P counts the pixel edges between object and background (the
    image border included), A the object's pixels. 4/pi for an axis-aligned square, about 16/pi^2 for a
    digital disc (its staircase boundary), large for thin, branching shapes."""
    m = np.pad(np.asarray(mask) > 0.5, 1)
    area = m.sum()
    if area == 0:
        return float("nan")
    perimeter = np.count_nonzero(m[1:, :] != m[:-1, :]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
    return float(perimeter**2 / (4 * np.pi * area))


def complexity_splits(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of a held-out pool per DIS split: every fifth scene validates (``DIS-VD``), the rest are sorted
    by isoperimetric quotient into four equal test sets (``DIS-TE1`` simplest .. ``DIS-TE4``)."""
    ipq = np.array([isoperimetric_quotient(m) for m in masks])
    keep = np.flatnonzero(np.isfinite(ipq))
    vd = keep[::5]
    rest = np.setdiff1d(keep, vd)
    ordered = rest[np.argsort(ipq[rest], kind="stable")]
    return {"DIS-VD": vd, **{f"DIS-TE{i + 1}": part for i, part in enumerate(np.array_split(ordered, 4))}}


class DIS(Task):
    name = "dis"
    description = "dichotomous segmentation mask, [H, W] in [0, 1]"
    channels = 1
    label_key = "mask"
    label_resize = "bilinear"
    metrics = dis_metrics.DIS_METRICS
    lower_is_better = ("MAE", "HCE_gamma")
    headline = "max_F_beta"
    pool_keys = ("rgb", "valid", "mask", "alpha", "semantic")  # DIS and matting share one render
    subject_framing = True  # one salient subject per scene, as in DIS5K / P3M (toyworld.render(subject=True))
    has_pixel_loss = True
    toy_eval = SPLITS
    real_train_mix = {"dis5k": 1.0}
    real_eval = {s: EvalSet("dis5k", s, processing_res=768, title=s) for s in SPLITS}
    # default profile: rendered at 96 px, where wires, fence mesh and hair strands are one or two pixels wide
    # (sub-pixel at 64)
    own_settings = PerProfile(smoke=TaskSettings(), default=TaskSettings(size=96), paper=TaskSettings())

    def label_to_image(self, label, valid=None):
        mask = label.float().clamp(0.0, 1.0)  # [B, H, W]
        return (mask * 2.0 - 1.0)[:, None].repeat(1, 3, 1, 1), torch.ones_like(mask, dtype=torch.bool)

    def pixel_loss(self, decoded, label_img, valid):
        diff = decoded.mean(dim=1) - label_img.mean(dim=1)  # [B, H, W] in ~[-2, 2]
        return [diff.pow(2).mean()]

    def eval_pool(self, cfg, name, render):
        """The toy DIS split ``name`` of one held-out pool (5 x ``n_eval`` scenes of the held-out domains), or a
        training domain's unseen scenes (in-domain)."""
        if name in self.indomain_sets():  # unseen scenes of a training domain, those with a mask
            data = render(name, cfg.n_eval, self.toy_size(cfg), split="eval", seed=cfg.seed, keys=self.pool_keys,
                          subject=self.subject_framing)
            idx = np.flatnonzero(data["mask"].reshape(len(data["mask"]), -1).max(1) > 0.5)
            return {k: v[idx] for k, v in data.items()}
        if name not in SPLITS:
            raise ValueError(f"toy DIS evaluation set {name!r}: expected one of "
                             f"{', '.join(SPLITS + self.indomain_sets())}")
        data = render({d: 1.0 for d in EVAL_DOMAINS}, 5 * cfg.n_eval, self.toy_size(cfg), split="eval", seed=cfg.seed,
                      keys=self.pool_keys, subject=self.subject_framing)
        idx = complexity_splits(data["mask"])[name]
        return {k: v[idx] for k, v in data.items()}

    def scores(self, pairs, **protocol):
        pairs = [(np.asarray(pred, np.float64), np.asarray(item["mask"], np.float64)) for item, pred in pairs]
        if not pairs:  # an empty toy split (a smoke-sized pool): nothing to score
            return {m: float("nan") for m in self.metrics}
        preds, gts = zip(*pairs)
        return dis_metrics.evaluate(list(preds), list(gts))

    def image_blind(self, labels, valid):
        """The mean training mask (every pixel counts)."""
        return np.asarray(labels, np.float64).mean(0).astype(np.float32)

    def colored(self, out, rgb=None):
        """The mask tinted red over the image (grey mask alone without one)."""
        if rgb is None:
            return super().colored(out)
        a = np.clip(out, 0.0, 1.0)[..., None] * 0.6
        pic = np.clip(rgb, 0.0, 1.0) * (1 - a) + np.array([1.0, 0.1, 0.1]) * a  # [H, W, 3]
        return Image.fromarray(np.round(pic * 255.0).astype(np.uint8))


DIS_TASK = register(DIS())
