"""Semantic segmentation (supplementary section 8.5): labels as colours through the VAE, and back.

The authors predict a colour-coded image: each class has a palette colour, the label image is the colour of
each pixel's class, and a prediction is read back as classes by the nearest palette colour. We do exactly
that, with the palette as data:

* ``seg``: Hypersim's 40 NYU classes and their published colours (``configs/nyu40_palette.json``): the authors'
  training set and the released ``unet_seg_v2``;
* ``seg_toy``: the toy world's 15 classes (``toyworld.CLASSES``, ``toyworld.SEMANTIC_COLORS``: channels 0, 0.5 or 1,
  so classes are at least 0.5 apart, where NYU40's colours come within 0.04; the classes of the indoor training
  domain sit in one half of the colour cube, so that a blend of two of them never decodes to an outdoor class,
  ``blend_miou``; the toy VAE sees these palette images while it pretrains, ``in_prior``).

* label -> VAE image: the palette colour of each pixel's class, in [-1, 1]; unlabelled pixels (255) are masked.
  Where we depart from the authors' data loader: it stretches each label image's colours by their own min and
  max (``depth_normalization`` applied to the colour image), so one class would get different colours in
  different images; we map the palette's [0, 1] to [-1, 1] for every image, so one class has one colour.
* decode: the decoded colours, clipped, in [0, 1] ([B, 3, H, W]; no channel mean).
* resizing: class maps nearest-neighbour, never bilinear; colour predictions bilinearly (then decoded).
* pixel loss: MSE of the decoded colours through the frozen decoder (the authors' ``mse_loss``).
* metrics: mIoU over the classes present in the ground truth or the prediction, per-class IoU, pixel accuracy
  (``metrics/segmentation.py``), plus the colour-decoding error: the share of pixels whose colour lies farther
  than half the smallest palette spacing from every palette colour ("between colours").
* ``genpercept predict --task seg``: ``_pred.npy`` the class map (int), ``_pred.png`` a palette PNG of it and
  ``_colored.png`` the predicted colours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..domains import CLASSES, SEMANTIC_COLORS
from ..metrics import segmentation as seg_metrics
from ..profiles import PerProfile, TaskSettings
from .base import EvalSet, Task, register

IGNORE = 255
COLOUR_NOISE = 0.15  # blend_miou's stand-in for a toy model's colour error (the toy palette was chosen with it)


def nyu40_palette() -> tuple[tuple[str, ...], np.ndarray]:
    """(class names, [40, 3] colours in [0, 1]) of Hypersim's NYU40 labels."""
    doc = json.loads((Path(__file__).resolve().parents[1] / "configs" / "nyu40_palette.json").read_text())
    names = tuple(c["name"] for c in doc["classes"])
    return names, np.array([c["rgb"] for c in doc["classes"]], np.float64) / 255.0


def colors_to_classes(colors: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[3, H, W] colours in [0, 1] -> ([H, W] int64 nearest palette class, [H, W] distance to it)."""
    flat = np.moveaxis(np.asarray(colors, np.float64), 0, -1)  # [H, W, 3]
    dist = np.linalg.norm(flat[..., None, :] - palette, axis=-1)  # [H, W, C]
    cls = dist.argmin(-1)
    return cls.astype(np.int64), np.take_along_axis(dist, cls[..., None], -1)[..., 0]


def classes_to_colors(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """[H, W] class indices -> [3, H, W] palette colours in [0, 1]; ids outside the palette are an error (255 is
    unlabelled: black)."""
    classes = np.asarray(classes)
    bad = (classes != IGNORE) & ((classes < 0) | (classes >= len(palette)))
    if bad.any():
        raise ValueError(f"class ids {sorted(set(classes[bad].tolist()))[:5]} outside the palette: expected 0.."
                         f"{len(palette) - 1} or {IGNORE} (unlabelled)")
    table = np.vstack([palette, np.zeros((1, 3))])
    return np.moveaxis(table[np.where(classes == IGNORE, len(palette), classes)], -1, 0)  # [3, H, W]


def blend_miou(palette: np.ndarray, labels: np.ndarray, factor: int = 8, noise: float = 0.0, seed: int = 0) -> float:
    """mIoU of label maps sent through a blur that stands in for an autoencoder, then decoded to the nearest
    palette colour: how much a palette loses to blends of neighbouring classes before any model is trained.

    Each [N, H, W] class map (255: unlabelled, black) becomes its palette colours, is area-averaged over
    ``factor`` x ``factor`` blocks (a VAE's latent grid: 8 for SD's) and upsampled back bilinearly; a pixel whose
    blend lies nearer a third class's colour than either source class decodes to that third class (the VAE
    round trip and an unsure model do the same). ``noise``: the standard deviation of Gaussian colour noise added
    after the blur (a model's colour error; seeded, the same draw for every palette). Used to choose the toy
    palette (scripts/toy_palette.py)."""
    labels = np.asarray(labels, np.int64)
    palette = np.asarray(palette, np.float64)
    colors = np.stack([classes_to_colors(c, palette) for c in labels])  # [N, 3, H, W]
    x = torch.from_numpy(colors).float()
    low = F.avg_pool2d(x, factor)  # [N, 3, H / factor, W / factor]
    blurred = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False).numpy()  # [N, 3, H, W]
    if noise:
        blurred = blurred + noise * np.random.default_rng(seed).standard_normal(blurred.shape).astype(np.float32)
    preds = [colors_to_classes(b, palette)[0] for b in blurred]
    return seg_metrics.evaluate(preds, list(labels), len(palette), ignore_index=IGNORE)["mIoU"]


class Segmentation(Task):
    channels = 3
    label_key = "semantic"
    label_resize = "nearest"
    metrics = ("mIoU", "pixel_accuracy", "between_colors")
    lower_is_better = ("between_colors",)
    headline = "mIoU"
    pool_keys = ("rgb", "valid", "semantic")
    has_pixel_loss = True

    def __init__(self, name: str, class_names, palette: np.ndarray, description: str):
        self.name, self.class_names, self.description = name, tuple(class_names), description
        self.palette = np.asarray(palette, np.float64)  # [C, 3] in [0, 1]
        if len(self.class_names) != len(self.palette):
            raise ValueError(f"{name}: {len(self.class_names)} class names for {len(self.palette)} colours")
        gaps = np.linalg.norm(self.palette[:, None] - self.palette[None], axis=-1)
        self.tolerance = 0.5 * gaps[~np.eye(len(gaps), dtype=bool)].min()  # half the closest pair's distance

    def label_fingerprint(self):
        return np.round(self.palette, 6).tolist()  # new colours make new label images, so a new toy prior

    def label_to_image(self, label, valid=None):
        classes = label.long()  # [B, H, W]
        ok = classes != IGNORE
        if valid is not None:
            ok &= valid.bool()
        colors = torch.stack([torch.from_numpy(classes_to_colors(c.numpy(), self.palette)) for c in classes.cpu()])
        return (colors.float() * 2.0 - 1.0), ok  # [B, 3, H, W], [B, H, W]

    def decode(self, decoded, processing):
        return (decoded.float().clamp(-1.0, 1.0) + 1.0) / 2.0  # [B, 3, H, W] colours in [0, 1]

    def ensemble(self, members, processing):
        return members.mean(axis=0)  # mean colour, then decoded to the nearest class

    def pixel_loss(self, decoded, label_img, valid):
        diff = (decoded - label_img).pow(2).mean(dim=1)  # [B, H, W]
        return [torch.where(valid, diff, torch.zeros_like(diff)).sum() / valid.sum().clamp_min(1)]

    def classes(self, colors: np.ndarray) -> np.ndarray:
        """A colour prediction [3, H, W] in [0, 1] -> its class map [H, W]."""
        return colors_to_classes(colors, self.palette)[0]

    def scores(self, pairs, **protocol):
        preds, gts, between, total = [], [], 0, 0
        for item, pred in pairs:
            cls, dist = colors_to_classes(pred, self.palette)
            gt = np.asarray(item["semantic"], np.int64)
            known = gt != IGNORE
            between += int((dist > self.tolerance)[known].sum())
            total += int(known.sum())
            preds.append(cls)
            gts.append(gt)
        out = seg_metrics.evaluate(preds, gts, len(self.palette), ignore_index=IGNORE)
        return {"mIoU": out["mIoU"], "pixel_accuracy": out["pixel_accuracy"],
                "between_colors": between / max(total, 1)}

    def image_blind(self, labels, valid):
        """The most frequent training class of each pixel, as its palette colour [3, H, W]."""
        labels = np.asarray(labels)
        counts = np.stack([(labels == c).sum(0) for c in range(len(self.palette))])  # [C, H, W]
        return classes_to_colors(counts.argmax(0), self.palette).astype(np.float32)

    def npy_array(self, out):
        """``_pred.npy``: the class map [H, W] (int64) of the colour prediction [H, W, 3]."""
        return self.classes(np.moveaxis(np.asarray(out), -1, 0))

    def prediction_png(self, out):
        """``_pred.png``: the class map as a palette PNG (pixel value = class index, shown in its colour)."""
        classes = np.ascontiguousarray(self.npy_array(out).astype(np.uint8))
        img = Image.frombuffer("P", (classes.shape[1], classes.shape[0]), classes.tobytes(), "raw", "P", 0, 1)
        img.putpalette(np.round(self.palette * 255).astype(np.uint8).ravel().tolist())
        return img


class NYU40Segmentation(Segmentation):
    """``seg``: Hypersim's NYU40 classes, the authors' training set and the released ``unet_seg_v2``."""

    real_train_mix = {"hypersim": 1.0}
    real_eval = {"hypersim_test": EvalSet("hypersim", "test", processing_res=768, title="Hypersim (test)")}

    def __init__(self):
        super().__init__("seg", *nyu40_palette(), "NYU40 classes as palette colours, [3, H, W] in [0, 1]")


class ToySegmentation(Segmentation):
    """``seg_toy``: the toy world's classes."""

    in_prior = True  # SD's VAE reconstructs flat palette colours; the toy VAE must see some to do the same
    toy_train_mix = {"toy_hypersim": 1.0}  # the authors train segmentation on Hypersim (indoor) alone
    # default profile: trained longer, as its notebook trains two models, not the dozens of the depth notebooks
    own_settings = PerProfile(smoke=TaskSettings(), default=TaskSettings(steps=800), paper=TaskSettings())

    def __init__(self):
        super().__init__("seg_toy", CLASSES, SEMANTIC_COLORS,
                         "toy-world semantic classes as palette colours, [3, H, W] in [0, 1]")


SEG = register(NYU40Segmentation())
SEG_TOY = register(ToySegmentation())


class ListedSegmentation(Segmentation):
    """Segmentation with the classes of a folder's ``classes.csv`` (``data/folders.py``): class index i is the csv's
    row i, painted in its colour; ``genpercept predict`` writes the csv's ids, not the indices."""

    def __init__(self, name: str, ids, class_names, palette: np.ndarray):
        super().__init__(name, class_names, palette, "the classes of classes.csv as palette colours, [3, H, W]")
        self.class_ids = np.asarray(ids, np.int64)  # [C] the id stored in the label PNGs for each index

    def npy_array(self, out):
        """``_pred.npy``: the class map [H, W] as the ids of classes.csv."""
        return self.class_ids[super().npy_array(out)]

    def prediction_png(self, out):
        """``_pred.png``: the ids as a palette PNG (pixel value = id, shown in its colour)."""
        ids = np.ascontiguousarray(self.npy_array(out).astype(np.uint8))
        img = Image.frombuffer("P", (ids.shape[1], ids.shape[0]), ids.tobytes(), "raw", "P", 0, 1)
        table = np.zeros((256, 3), np.uint8)
        table[self.class_ids] = np.round(self.palette * 255).astype(np.uint8)
        img.putpalette(table.ravel().tolist())
        return img
