"""Person crops (mmpose's top-down data path): a box becomes a crop at the crop's aspect ratio with 1.25 padding
(``keypoints.box_to_center_scale``, ``crop_transform``, ``cv2.warpAffine`` as mmpose), joints follow the pixels,
training adds mmpose's flip and ``RandomBBoxTransform``, and the targets are MSRA Gaussians at 1/4 of the crop."""

from __future__ import annotations

import numpy as np

from . import keypoints as kp
from .settings import Augment, crop_size

MMPOSE = Augment()  # mmpose's defaults


def warp(rgb_chw: np.ndarray, center, scale, size, rotation_deg: float = 0.0) -> np.ndarray:
    """The crop of an image [3, H, W] in [0, 1] -> [3, h, w] (cv2.warpAffine, bilinear, as mmpose)."""
    import cv2

    m = kp.crop_transform(center, scale, size, rotation_deg=rotation_deg)
    hwc = np.ascontiguousarray(np.moveaxis(np.asarray(rgb_chw, np.float32), 0, -1))
    out = cv2.warpAffine(hwc, m, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)  # [h, w, 3]
    return np.moveaxis(out, -1, 0)


def flip_joints(joints: np.ndarray, width: int) -> np.ndarray:
    """Joints [..., 17, 3] of a crop ``width`` pixels wide, mirrored (x -> w - 1 - x, left/right swapped; mmpose
    fliplr_joints)."""
    out = joints.copy()
    out[..., 0] = width - 1 - out[..., 0]
    for a, b in kp.COCO_FLIP_PAIRS:
        out[..., [a, b], :] = out[..., [b, a], :]
    return out


def flip_crop(crop: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a crop [3, h, w] and its joints [17, 3]."""
    return np.ascontiguousarray(crop[..., ::-1]), flip_joints(joints, crop.shape[-1])


def crop_joints(joints: np.ndarray, box, crop_wh) -> np.ndarray:
    """A person's joints [17, 3] in the pixels of its crop (box xyxy, crop (w, h)); joints outside: invisible."""
    w, h = crop_wh
    center, scale = kp.box_to_center_scale(box, w / h)
    return _joints_through(joints, kp.crop_transform(center, scale, (w, h)), crop_wh)


def _joints_through(joints: np.ndarray, matrix: np.ndarray, crop_wh) -> np.ndarray:
    """Joints [17, 3] mapped by a crop's 2x3 affine ``matrix``; those that leave the crop become invisible."""
    w, h = crop_wh
    out = np.array(joints, np.float32, copy=True)
    out[:, :2] = kp.apply_affine(out[:, :2], matrix)
    inside = (out[:, 0] >= 0) & (out[:, 0] < w) & (out[:, 1] >= 0) & (out[:, 1] < h)
    out[~inside, 2] = 0
    return out


def _truncnorm(rng: np.random.Generator, size) -> np.ndarray:
    """Standard normal samples truncated to [-1, 1] (mmpose ``RandomBBoxTransform._truncnorm``)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1
    return out


def augmented_crop(rgb_chw: np.ndarray, box, joints: np.ndarray, crop_wh, rng: np.random.Generator,
                   settings: Augment = MMPOSE) -> tuple[np.ndarray, np.ndarray]:
    """One training crop [3, h, w] and its joints [17, 3] under mmpose's ``RandomBBoxTransform`` (the default of
    its ViTPose configs): with probability 0.3 the box centre moves by up to 0.16 of the padded box
    (truncated normal), the box is scaled by 1 + 0.5 t, and with probability 0.6 the crop is rotated by 80 t
    degrees (t a standard normal truncated to [-1, 1]). ``settings`` (``PoseSettings.augment``) replace those numbers.
    Joints leaving the crop become invisible."""
    a = settings
    w, h = crop_wh
    center, scale = kp.box_to_center_scale(box, w / h)
    shift = _truncnorm(rng, 2) * a.shift * scale if rng.random() < a.shift_prob else 0.0
    center = center + shift
    scale = scale * (1.0 + a.scale * float(_truncnorm(rng, 1)[0]))
    rotation = a.rotate * float(_truncnorm(rng, 1)[0]) if rng.random() < a.rotate_prob else 0.0
    out = _joints_through(joints, kp.crop_transform(center, scale, (w, h), rotation_deg=rotation), (w, h))
    return warp(rgb_chw, center, scale, (w, h), rotation), out


def mean_pose(joints: np.ndarray) -> np.ndarray:
    """The mean position [17, 2] of each joint over the people [P, 17, 3] where it is labelled."""
    vis = joints[:, :, 2:] > 0  # [P, 17, 1]
    return (joints[:, :, :2] * vis).sum(0) / np.maximum(vis.sum(0), 1)


def person_crops(cfg, data: dict, boxes: np.ndarray | None = None) -> dict:
    """Person crops of ``data``'s people (their boxes, or ``boxes``): crop [P, 3, h, w], joints in crop
    pixels [P, 17, 3], center and scale [P, 2]. ``data``: rgb [N, 3, H, W], each person's scene index, keypoints."""
    w, h = crop_size(cfg)
    boxes = data["boxes"] if boxes is None else boxes
    out = {"crop": [], "joints": [], "center": [], "scale": []}
    for p, box in enumerate(boxes):
        center, scale = kp.box_to_center_scale(box, w / h)
        joints = crop_joints(data["keypoints"][p], box, (w, h))
        out["crop"].append(warp(data["rgb"][data["scene"][p]], center, scale, (w, h)))
        out["joints"].append(joints)
        out["center"].append(center)
        out["scale"].append(scale)
    empty = {"crop": (0, 3, h, w), "joints": (0, 17, 3), "center": (0, 2), "scale": (0, 2)}
    return {k: np.stack(v).astype(np.float32) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}


def targets(joints: np.ndarray, crop_wh) -> tuple[np.ndarray, np.ndarray]:
    """MSRA targets at 1/4 of the crop: ([P, 17, h/4, w/4], [P, 17])."""
    w, h = crop_wh
    size = (w // 4, h // 4)
    t, wt = [], []
    for j in joints:
        hm = j.copy()
        hm[:, :2] = hm[:, :2] * (size[0] / w)  # heatmap = crop / stride (non-UDP)
        a, b = kp.gaussian_targets(hm, size)
        t.append(a)
        wt.append(b)
    return np.stack(t), np.stack(wt)
