"""DIS5K metrics: the six columns of the GenPercept supplementary's Table 4 (dichotomous image segmentation).

Five metrics come straight from ``pysodmetrics`` (``import py_sod_metrics``; read against v1.6.2), the
package the salient-object / DIS field evaluates with; HCE follows the DIS benchmark's own script
(Qin et al., ECCV 2022; github.com/xuebinqin/DIS, ``IS-Net/hce_metric_main.py``):

    max_F_beta       F_beta = (1 + b2) P R / (b2 P + R), b2 = beta^2 = 0.3, at 256 thresholds (pred >= t);
                     per-image curves averaged over images, then the maximum over thresholds
    weighted_F_beta  Margolin et al. (CVPR 2014), beta^2 = 1 as in pysodmetrics' WeightedFmeasure
    MAE              mean |pred - gt| per image, averaged over images
    S_alpha          structure measure (Fan et al., ICCV 2017), alpha = 0.5
    mean_E_phi       E-measure (Fan et al., IJCAI 2018) at the 256 thresholds, averaged over images, then
                     the mean over thresholds
    HCE_gamma        human correction effort, relax gamma = 5, polygon (RDP) epsilon = 2.0; lower is better

Conventions shared by all six (pysodmetrics' ``prepare_data``): the ground truth is foreground where its
uint8 value is > 128; the prediction is divided by 255 and then min-max stretched to [0, 1] per image
(MATLAB's ``mapminmax``; a constant prediction is left as it is). The curves include the threshold 0, at
which every pixel counts as foreground, so max_F_beta of an all-zero prediction is the F of "everything
is foreground", not 0. HCE does *not* stretch: as the DIS script does, it binarises the raw uint8
prediction at ``pred > 128`` (pysodmetrics would stretch first and then keep ``pred / 255 > 0.5``, which
differs whenever a prediction does not span [0, 255], and for pixels equal to 128) and takes the skeleton
of ``gt > 128`` with skimage's ``skeletonize`` (the same in both codes).

One deviation from pysodmetrics: S_alpha is NaN there (with RuntimeWarnings) when the foreground's
centroid rounds onto the last row or column (an empty quadrant); ``_Smeasure`` gives that quadrant its
weight, 0, instead.

Degenerate ground truth (pysodmetrics' defined behaviour, no warnings):
    all background: max_F_beta = 0 and weighted_F_beta = 0 for every prediction (no positives to recall),
        S_alpha = 1 - mean(stretched pred), mean_E_phi from the fraction of pixels predicted background.
    all foreground: S_alpha = mean(stretched pred); weighted_F_beta of an all-zero prediction is > 0 (the
        Gaussian filter's zero padding, as in the MATLAB original); mean_E_phi may exceed 1 (it divides by
        N - 1).
    HCE: the DIS script counts connected regions with ``np.unique`` of the labels, so when the region to
        correct covers the whole image (all-background gt with an all-foreground binarised prediction, or
        the reverse) it counts 0 regions and HCE = 0; pysodmetrics gives 1. We follow the DIS script
        (``_HCE_DIS_QUIRK``); it is a bug of the benchmark (a fully wrong mask costs nothing), and it never
        arises on DIS5K, whose masks all hold an object.
"""

from __future__ import annotations

import os

import numpy as np
import py_sod_metrics as sod
from PIL import Image

DIS_METRICS = ("max_F_beta", "weighted_F_beta", "MAE", "S_alpha", "mean_E_phi", "HCE_gamma")
BETA2 = 0.3  # beta^2 of max F_beta (pysodmetrics calls it `beta`)
ALPHA = 0.5  # S-measure weight of the object term
HCE_RELAX = 5  # gamma: erosion / dilation steps that forgive thin boundary errors
HCE_EPSILON = 2.0  # RDP tolerance (pixels) of the polygon approximation
DIS_THRESHOLD = 128  # DIS binarises uint8 maps with `> 128`
_HCE_DIS_QUIRK = True  # whole-image error region counts 0 regions, as in the DIS script (see docstring)


def _to_uint8(x, name: str) -> np.ndarray:
    """One map -> uint8 ``[H, W]``: uint8 as is, bool as {0, 255}, float in [0, 1] as ``np.rint(x * 255)``.

    ``np.rint`` rounds half to even; ``u / 255`` for a uint8 ``u`` maps back to ``u`` exactly, so the uint8
    and float forms of a map score the same. Torch tensors are accepted (moved to CPU, floats to float64).
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [H, W] map, got shape {tuple(a.shape)}")
    if a.size == 0:
        raise ValueError(f"{name}: empty map of shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 in [0, 255], bool or float in [0, 1], got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: float maps must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return np.rint(a * 255.0).astype(np.uint8)


class _Smeasure(sod.Smeasure):
    """pysodmetrics' S-measure, except that an empty quadrant scores 0 instead of NaN.

    The region term splits the image at the foreground centroid, rounded, plus one; when that lands on the
    last row or column, two quadrants are empty and pysodmetrics returns NaN with RuntimeWarnings. An empty
    quadrant's area weight is 0, so dropping it is what the area-weighted sum of Fan et al. (2017) means.
    """

    def ssim(self, pred: np.ndarray, gt: np.ndarray) -> float:
        return 0.0 if pred.size == 0 else super().ssim(pred, gt)


def _hce(pred_u8: np.ndarray, gt_u8: np.ndarray, measure: sod.HumanCorrectionEffortMeasure) -> float:
    """HCE of one uint8 pair, binarised the DIS way (``> 128``) before pysodmetrics' ``cal_hce``.

    ``cal_hce`` tests ``pred > 0.5`` on the map it is given, so a {0, 1} map passes through unchanged; its
    relaxation, skeleton, contour filtering and RDP counting are those of the DIS script.
    """
    pred_fg, gt_fg = pred_u8 > DIS_THRESHOLD, gt_u8 > DIS_THRESHOLD  # [H, W] bool
    whole_image_wrong = (not gt_fg.any() and pred_fg.all()) or (gt_fg.all() and not pred_fg.any())
    if _HCE_DIS_QUIRK and whole_image_wrong:
        return 0.0
    return float(measure.cal_hce(pred_fg.astype(np.float64), gt_fg))


def human_correction_effort(pred, gt) -> float:
    """HCE_gamma (gamma = 5, epsilon = 2.0) of one prediction against its ground truth, DIS convention.

    Same input rules as ``evaluate``; the number of polygon control points plus independent regions a
    person would need to fix the prediction ``pred > 128`` into ``gt > 128``.
    """
    p, g = _to_uint8(pred, "pred"), _to_uint8(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt has {g.shape}: resize the prediction first")
    return _hce(p, g, sod.HumanCorrectionEffortMeasure(relax=HCE_RELAX, epsilon=HCE_EPSILON))


def evaluate(preds, gts) -> dict[str, float]:
    """The six DIS5K metrics of a list of predictions against their ground truths (see module docstring).

    preds, gts: lists (or tuples) of the same length of 2-D maps ``[H, W]`` (numpy or torch), each either
    uint8 in [0, 255], bool, or float in [0, 1] (converted with ``np.rint(x * 255)``). Each pair must have
    the same size: metrics are taken at the ground truth's resolution and the caller resizes beforehand.
    Returns ``{name: float}`` with the keys ``DIS_METRICS``. Bad input raises a one-line ValueError naming
    the offending list entry.
    """
    # 1. validate and convert every pair to uint8 [H, W]
    if not isinstance(preds, (list, tuple)) or not isinstance(gts, (list, tuple)):
        raise ValueError(f"preds and gts must be lists of 2-D maps, got {type(preds).__name__}, {type(gts).__name__}")
    if len(preds) == 0 or len(preds) != len(gts):
        raise ValueError(f"preds and gts must be non-empty lists of equal length, got {len(preds)} and {len(gts)}")
    pairs = []
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        p, g = _to_uint8(pred, f"preds[{i}]"), _to_uint8(gt, f"gts[{i}]")
        if p.shape != g.shape:
            raise ValueError(f"preds[{i}] has shape {p.shape} but gts[{i}] has {g.shape}: resize the prediction")
        pairs.append((p, g))

    # 2. accumulate pysodmetrics' per-image scores (FmeasureV2 + FmeasureHandler = Fmeasure's "curve")
    fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=BETA2)})
    wfm, sm, em, mae = sod.WeightedFmeasure(), _Smeasure(alpha=ALPHA), sod.Emeasure(), sod.MAE()
    hce = sod.HumanCorrectionEffortMeasure(relax=HCE_RELAX, epsilon=HCE_EPSILON)
    hces = []
    for p, g in pairs:
        for measure in (fm, wfm, sm, em, mae):
            measure.step(p, g)
        hces.append(_hce(p, g, hce))

    # 3. reduce: curves are averaged over images first, then max (F) or mean (E) over thresholds
    return {
        "max_F_beta": float(fm.get_results()["fm"]["dynamic"].max()),  # [256] -> scalar
        "weighted_F_beta": float(wfm.get_results()["wfm"]),
        "MAE": float(mae.get_results()["mae"]),
        "S_alpha": float(sm.get_results()["sm"]),
        "mean_E_phi": float(em.get_results()["em"]["curve"].mean()),  # [256] -> scalar
        "HCE_gamma": float(np.mean(hces)),
    }


def read_mask(path) -> np.ndarray:
    """A DIS5K mask file as uint8 ``[H, W]``.

    8-bit grayscale ('L') as is; 1-bit as {0, 255}; RGB / RGBA / LA / palette: the first channel (after
    palette -> RGB), as DIS's training loader does (``gt[:, :, 0]`` in ``data_loader_cache.gt_preprocess``;
    its HCE script reads with OpenCV's grayscale conversion instead, the same when R = G = B);
    16-bit grayscale: ``np.rint(value / 257)``, so 65535 -> 255 (16-bit colour PNGs reach us as 8-bit:
    Pillow keeps their high byte). An unreadable file or an unusual mode raises ValueError.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im, mode = im.convert("RGB"), "RGB"
            a = np.array(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read mask {os.fspath(path)!s}: {type(e).__name__}") from e
    if mode in ("L", "1"):
        return a.astype(np.uint8) * (255 if mode == "1" else 1)
    if mode in ("RGB", "RGBA", "LA"):
        return np.ascontiguousarray(a[..., 0], dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"cannot read mask {os.fspath(path)!s}: values outside the 16-bit range")
        return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)
    raise ValueError(f"cannot read mask {os.fspath(path)!s}: unsupported image mode {mode!r}")
