"""The pose pipeline's settings: one typed ``PoseSettings`` per profile (``SETTINGS``), the model-keyed head sizes,
and the constants of its training and evaluation sets.

A notebook changes a setting with ``overrides = {"tasks": {"pose": {"crop": [64, 96]}}}`` (checked: one line for a
wrong name or value). Why each value is what it is: ``scripts/pose_levers.py``, notebook 06 and docs/measurements.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..profiles import PerProfile, Settings, TaskSettings, settings_of

# ViTPose's 256 for SD2.1's features; 64 for the toy U-Nets
HEAD_CHANNELS = {"sd21": (256, 256), "tiny": (64, 64), "toy_sd": (64, 64)}
MIN_BOX_HEIGHT = 16  # toy training skips people smaller than this (pixels) ...
MIN_KEYPOINTS = 6    # ... or with fewer labelled keypoints (all are evaluated)
JITTER = (0.10, 0.15)  # jittered boxes: centre shift up to 10 % of the size, size scaled by 1 +- 15 %
EVAL_SETS = ("heldout_gt_boxes", "heldout_jittered_boxes")
# the decoder level the keypoint head reads, as a stride of the crop: ViTPose's 1/16 for SD2.1 (a 12 x 16 grid for
# 192 x 256 crops); the toy crops are half as large, so 1/8 gives the tiny U-Net the same 12 x 16 grid, from its
# finest up block (skips from the first down block); its own 1/16 level carries only its 3 x 4 bottleneck. The toy
# SD's VAE downsamples 4x, so its 1/8 level (the same 12 x 16 grid) is its U-Net's second
FEATURE_STRIDE = {"sd21": 16, "tiny": 8, "toy_sd": 8}


def _probability(v) -> bool:
    return 0 <= v <= 1


@dataclass(frozen=True)
class Augment(Settings):
    """mmpose's ``RandomBBoxTransform`` (its ViTPose defaults): with probability ``shift_prob`` the box centre moves
    by up to ``shift`` of the padded box, the box is scaled by 1 + ``scale`` t, and with probability
    ``rotate_prob`` the crop is rotated by ``rotate`` t degrees (t a standard normal truncated to [-1, 1])."""

    shift: float = 0.16
    shift_prob: float = 0.3
    scale: float = 0.5
    rotate: float = 80.0
    rotate_prob: float = 0.6

    CHECKS: ClassVar[dict[str, tuple]] = {
        "shift": ((int, float), lambda v: v >= 0, "a number >= 0 (a share of the box)"),
        "shift_prob": ((int, float), _probability, "a probability in [0, 1]"),
        "scale": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "rotate": ((int, float), lambda v: v >= 0, "a number of degrees >= 0"),
        "rotate_prob": ((int, float), _probability, "a probability in [0, 1]"),
    }


@dataclass(frozen=True)
class PoseSettings(TaskSettings):
    """Pose's own settings beside a task's render size, steps and learning rate (``TaskSettings``)."""

    crop: tuple[int, int] = (96, 128)  # (width, height) of a person crop
    feature_stride: int | None = None  # crop stride of the U-Net level the head reads; None: FEATURE_STRIDE by model
    # toy training: this many augmented copies of every person, drawn up front (the toy crops are encoded once)
    augment_copies: int = 0
    augment: Augment = Augment()       # how each copy is drawn
    train_samples: int = 15_000        # paper profile: COCO people it trains on (the supplementary's 15K)
    detections: str | None = None      # paper profile: a COCO results file of person boxes to evaluate on
                                       # (e.g. the authors' detector's); None: the ground-truth boxes

    CHECKS: ClassVar[dict[str, tuple]] = {
        **TaskSettings.CHECKS,
        "crop": ((tuple,), lambda v: len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 16
                                                         for x in v), "a (width, height) pair of integers >= 16"),
        "feature_stride": ((int, type(None)), lambda v: v in (None, 8, 16),
                           "8 or 16 (the crop stride of the U-Net level the keypoint head reads; heatmaps are at "
                           "1/4), or null (the model's)"),
        "augment_copies": ((int,), lambda v: v >= 0, "an integer >= 0"),
        "augment": ((Augment,), lambda v: True, "a dict of some of shift, shift_prob, scale, rotate, rotate_prob"),
        "train_samples": ((int,), lambda v: v >= 1, "an integer >= 1"),
        "detections": ((str, type(None)), lambda v: True, "a path to a COCO results file, or null (ground truth)"),
    }


# per profile: scenes rendered at 128 px in the default profile (people in a 64 px scene are a few pixels tall),
# crops half of ViTPose's 192 x 256 (a quarter in smoke), and the default profile's longer training, own learning
# rate and four box-jittered copies with box noise the size of the jittered evaluation boxes' (JITTER), so the model
# must read a box a detector placed, not only a centred one
SETTINGS = PerProfile(
    smoke=PoseSettings(crop=(48, 64)),
    default=PoseSettings(size=128, steps=1200, lr=1.5e-3, crop=(96, 128), augment_copies=4,
                         augment=Augment(shift=0.10, shift_prob=1.0, scale=0.15, rotate_prob=0.0)),
    paper=PoseSettings(crop=(192, 256)),
)


def pose_settings(cfg) -> PoseSettings:
    """Pose's settings in profile ``cfg`` (``SETTINGS``, changed by ``{"tasks": {"pose": {...}}}`` overrides)."""
    return settings_of("pose", SETTINGS, cfg)


def augment_settings(cfg) -> dict:
    """How the augmented copies are drawn, as a dict (with the copies, part of a pose model's cache key)."""
    return dataclasses.asdict(pose_settings(cfg).augment)


def augment_copies(cfg) -> int:
    """How many augmented copies of every toy training person are drawn."""
    return pose_settings(cfg).augment_copies


def feature_stride(cfg) -> int:
    """The crop stride of the U-Net level the keypoint head reads (``FEATURE_STRIDE`` for the model, unless set)."""
    stride = pose_settings(cfg).feature_stride
    return FEATURE_STRIDE.get(cfg.model, FEATURE_STRIDE["sd21"]) if stride is None else stride


def crop_size(cfg) -> tuple[int, int]:
    """(width, height) of a person crop."""
    return tuple(pose_settings(cfg).crop)
