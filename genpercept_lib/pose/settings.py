"""The pose pipeline's knobs: crop size, the U-Net level the head reads, training augmentation, evaluation boxes.

Each is a module constant (per model or profile) that ``cfg.extra`` may override from a notebook; the getters
check the override with a one-line error. Why each value is what it is: ``scripts/pose_levers.py`` and notebook 06.
"""

from __future__ import annotations

POSE_CROP = {"default": (96, 128), "smoke": (48, 64), "paper": (192, 256)}  # (width, height) of a person crop
HEAD_CHANNELS = {"sd21": (256, 256), "tiny": (64, 64)}  # ViTPose's 256 for SD2.1's features; 64 for the tiny U-Net
MIN_BOX_HEIGHT = 16  # toy training skips people smaller than this (pixels) ...
MIN_KEYPOINTS = 6    # ... or with fewer labelled keypoints (all are evaluated)
JITTER = (0.10, 0.15)  # jittered boxes: centre shift up to 10 % of the size, size scaled by 1 +- 15 %
EVAL_SETS = ("heldout_gt_boxes", "heldout_jittered_boxes")
# training augmentation (toy world): ``extra["pose_augment_copies"]`` extra crops of every training person, drawn up
# front because the toy crops are encoded once, under mmpose's RandomBBoxTransform with the settings ``AUGMENT`` (its
# ViTPose defaults) updated by ``extra["pose_augment"]``. The default profile draws four copies with box noise the size
# of the jittered evaluation boxes' (JITTER: centre shift 0.10, size 0.15, no rotation): the model must read a box a
# detector placed, not only a centred one. Measured with mmpose's own defaults at 4000 steps (1/16 features, lr 3e-4):
# two copies moved AP from 0.085 to 0.045 with ground-truth boxes, 0.019 to 0.027 with jittered ones
AUGMENT = {"copies": 0, "shift": 0.16, "shift_prob": 0.3, "scale": 0.5, "rotate": 80.0, "rotate_prob": 0.6}
# the decoder level the keypoint head reads, as a stride of the crop: ViTPose's 1/16 for SD2.1 (a 12 x 16 grid for
# 192 x 256 crops); the toy crops are half as large, so 1/8 gives the tiny U-Net the same 12 x 16 grid, from its
# finest up block (skips from the first down block); its own 1/16 level carries only its 3 x 4 bottleneck. Measured
# (scripts/pose_levers.py, lr 1e-3, 4000 steps, no augmentation): 1/16 AP 0.114 / 0.031 (GT / jittered boxes),
# 1/8 0.138 / 0.042
FEATURE_STRIDE = {"sd21": 16, "tiny": 8}


def augment_settings(cfg) -> dict:
    """``AUGMENT`` updated by ``extra["pose_augment"]``; an unknown key is a one-line error naming the valid ones."""
    changes = cfg.extra.get("pose_augment", {})
    unknown = sorted(set(changes) - (set(AUGMENT) - {"copies"})) if isinstance(changes, dict) else ["(not a dict)"]
    if unknown:
        raise ValueError(f"extra['pose_augment']: unknown setting {unknown[0]!r}: expected some of "
                         f"{', '.join(k for k in AUGMENT if k != 'copies')}")
    return {**AUGMENT, **changes}


def augment_copies(cfg) -> int:
    """How many augmented copies of every toy training person are drawn (``extra["pose_augment_copies"]``)."""
    return int(cfg.extra.get("pose_augment_copies", AUGMENT["copies"]))


def feature_stride(cfg) -> int:
    """The crop stride of the U-Net level the keypoint head reads (``FEATURE_STRIDE``,
    ``extra["pose_feature_stride"]``)."""
    default = FEATURE_STRIDE.get(cfg.model, FEATURE_STRIDE["sd21"])
    stride = cfg.extra.get("pose_feature_stride", default)
    if stride not in (8, 16):
        raise ValueError(f"extra['pose_feature_stride']={stride!r}: expected 8 or 16 (the crop stride of the U-Net "
                         "level the keypoint head reads; heatmaps are at 1/4)")
    return int(stride)


def crop_size(cfg) -> tuple[int, int]:
    """(width, height) of a person crop (``POSE_CROP``, ``extra["pose_crop"]``)."""
    return tuple(cfg.extra.get("pose_crop", POSE_CROP.get(cfg.name, POSE_CROP["default"])))
