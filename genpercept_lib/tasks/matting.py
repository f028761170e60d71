"""Image matting (supplementary section 8.4): the alpha matte of the foreground object, [H, W] in [0, 1].

* label -> VAE image: alpha in [0, 1] mapped linearly to [-1, 1], replicated to 3 channels; every pixel
  counts.
* decode: the mean of the decoded channels in [0, 1] (``genpercept_pipeline.py``, ``decode_pred``).
* pixel loss: the authors' matting loss, per-pixel MSE through the frozen decoder
  (``config/main_paper/..._matting_..._pixel_mse_loss.yaml``: ``mse_loss``).
* metrics: P3M-500's SAD, MSE, MAD, Grad, Conn over the whole image (``metrics/matting.py``: SAD and Conn / 1000,
  Grad / 10 on [0, 1] mattes, as P3M's ``core/evaluate.py``).
* toy world: the exact alpha (fractional coverage of hair and wires, a semi-transparent lamp shade; the RGB is
  composited with it). The generalisation study of Fig. 11 trains on scenes whose foreground is a person
  (``train_subset="people"``, the P3M setting) and tests on every kind of object: the held-out scenes are
  grouped by the foreground's class (``OBJECT_SETS``).
* paper profile: trained on P3M-10k's training set, evaluated on P3M-500-NP.
* ``genpercept predict --task matting``: ``_pred.npy`` in [0, 1], an 8-bit ``_pred.png`` and ``_colored.png``:
  the image composited with the predicted alpha on a checkerboard.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..domains import CLASSES, EVAL_DOMAINS
from ..metrics import matting as matting_metrics
from ..profiles import PerProfile, TaskSettings
from .base import EvalSet, Task, register

# held-out scenes grouped by the foreground object's semantic class (toy world classes)
OBJECT_SETS = {"people": "person", "furniture": "furniture", "lamps_pots": "object", "plants": "vegetation",
               "fences": "fence", "poles": "pole"}


def foreground_class(data: dict) -> np.ndarray:
    """The semantic class id under most of each scene's foreground (alpha > 0.5), -1 where there is none: [N]."""
    out = np.full(len(data["alpha"]), -1, dtype=np.int64)
    for i, (alpha, sem) in enumerate(zip(data["alpha"], data["semantic"])):
        under = sem[alpha > 0.5]
        if under.size:
            out[i] = np.bincount(under).argmax()
    return out


def look_alike_elsewhere(alpha: np.ndarray, semantic: np.ndarray, share: float = 0.5) -> bool:
    """Does an object of the foreground's class, covering at least ``share`` of the foreground's area, lie outside
    the matte (alpha < 0.01)? Then the image alone does not say which object is *the* foreground (two people, one
    of them matted). alpha, semantic: [H, W]; False where there is no foreground (alpha > 0.5 nowhere)."""
    fg = alpha > 0.5  # [H, W]
    if not fg.any():
        return False
    cls = np.bincount(semantic[fg]).argmax()
    return bool(((semantic == cls) & (alpha < 0.01)).sum() >= share * fg.sum())


def people_scenes(data: dict) -> np.ndarray:
    """[N] bool: scenes whose foreground object is a person (the P3M training setting)."""
    return foreground_class(data) == CLASSES.index("person")


def checkerboard(height: int, width: int, cell: int = 8) -> np.ndarray:
    """[H, W, 3] light/dark grey checkerboard, the usual background for showing a matte."""
    yy, xx = np.mgrid[0:height, 0:width]
    tile = ((yy // cell + xx // cell) % 2).astype(np.float64)
    return np.repeat((0.6 + 0.3 * tile)[..., None], 3, axis=-1)


class Matting(Task):
    name = "matting"
    description = "alpha matte, [H, W] in [0, 1]"
    channels = 1
    label_key = "alpha"
    label_resize = "bilinear"
    metrics = matting_metrics.METRICS
    lower_is_better = matting_metrics.METRICS
    headline = "SAD"
    pool_keys = ("rgb", "valid", "mask", "alpha", "semantic")  # DIS and matting share one render
    subject_framing = True  # one salient subject per scene, as in DIS5K / P3M (toyworld.render(subject=True))
    has_pixel_loss = True
    in_prior = True  # the toy VAE reconstructs mattes (hair, wires, soft shades) only after seeing some
    train_subsets = {"people": people_scenes}
    real_train_mix = {"p3m10k": 1.0}
    real_eval = {"P3M-500-NP": EvalSet("p3m10k", "P3M-500-NP", processing_res=768, title="P3M-500-NP")}
    # default profile: rendered at 96 px (hair strands and wires are sub-pixel at 64) and trained longer, as its
    # notebook trains two models, not the dozens of the depth notebooks (docs/measurements.md)
    own_settings = PerProfile(smoke=TaskSettings(), default=TaskSettings(size=96, steps=400), paper=TaskSettings())

    def label_to_image(self, label, valid=None):
        alpha = label.float().clamp(0.0, 1.0)  # [B, H, W]
        return (alpha * 2.0 - 1.0)[:, None].repeat(1, 3, 1, 1), torch.ones_like(alpha, dtype=torch.bool)

    def pixel_loss(self, decoded, label_img, valid):
        diff = decoded.mean(dim=1) - label_img.mean(dim=1)  # [B, H, W]
        return [diff.pow(2).mean()]

    def eval_pool(self, cfg, name, render):
        """A held-out domain, or an object set (``OBJECT_SETS``): the held-out scenes whose foreground is of that
        class, drawn from a pool of 5 x ``n_eval`` scenes of every held-out domain."""
        if name not in OBJECT_SETS:
            return super().eval_pool(cfg, name, render)
        data = render({d: 1.0 for d in EVAL_DOMAINS}, 5 * cfg.n_eval, self.toy_size(cfg), split="eval", seed=cfg.seed,
                      keys=self.pool_keys, subject=self.subject_framing)
        idx = np.flatnonzero(foreground_class(data) == CLASSES.index(OBJECT_SETS[name]))
        return {k: v[idx] for k, v in data.items()}

    def scores(self, pairs, **protocol):
        preds, gts = [], []
        for item, pred in pairs:
            preds.append(np.clip(np.asarray(pred, np.float64), 0.0, 1.0))
            gts.append(np.asarray(item["alpha"], np.float64))
        if not preds:
            return {m: float("nan") for m in self.metrics}
        return matting_metrics.evaluate(preds, gts)

    def image_blind(self, labels, valid):
        """The mean training alpha (every pixel counts)."""
        return np.asarray(labels, np.float64).mean(0).astype(np.float32)

    def colored(self, out, rgb=None):
        """The image composited with the predicted alpha on a checkerboard (the alpha alone without one)."""
        if rgb is None:
            return super().colored(out)
        a = np.clip(out, 0.0, 1.0)[..., None]
        pic = np.clip(rgb, 0.0, 1.0) * a + checkerboard(*out.shape) * (1 - a)  # [H, W, 3]
        return Image.fromarray(np.round(pic * 255.0).astype(np.uint8))


MATTING = register(Matting())
