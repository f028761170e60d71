"""Top-down heatmap pose estimation as pure functions: box -> crop, Gaussian targets, decoding, flip test.

GenPercept's keypoint experiment follows ViTPose (Xu et al., NeurIPS 2022), which is built on mmpose 0.x.
Every function here restates one piece of that code (``ViTAE-Transformer/ViTPose``), cited by file:

* ``mmpose/datasets/datasets/base/kpt_2d_sview_rgb_img_top_down_dataset.py`` ``_xywh2cs``:
  person box -> (center, scale), grown to the crop's aspect ratio and padded by 1.25;
* ``mmpose/core/post_processing/post_transforms.py``: ``get_affine_transform`` (image -> crop),
  ``transform_preds`` (heatmap -> image), ``flip_back`` (mirror + swap left/right channels);
* ``mmpose/datasets/pipelines/top_down_transform.py`` ``TopDownGenerateTarget._msra_generate_target``:
  the "MSRA" Gaussian target (sigma 2, truncated at 3 sigma, peak 1 on the rounded joint position);
* ``mmpose/core/evaluation/top_down_eval.py``: ``_get_max_preds`` (argmax) and ``keypoints_from_heatmaps``
  with ``post_process="default"`` (a quarter-pixel step towards the higher neighbour);
* ``mmpose/models/detectors/top_down.py`` ``forward_test`` with
  ``mmpose/models/heads/topdown_heatmap_simple_head.py`` ``inference_model``: flip test;
* ``mmpose/datasets/datasets/top_down/topdown_coco_dataset.py`` ``evaluate``: rescoring of a person.

Conventions. Points are (x, y) = (column, row) in pixels, pixel centres at integers. ``scale`` is the
padded box size **in pixels** (width, height); mmpose stores it divided by ``PIXEL_STD`` = 200, so
``scale_here = 200 * scale_mmpose``. Sizes are (width, height) as in mmpose; arrays are [..., H, W].

Which variant. This is mmpose's classic pipeline (MSRA targets, "default" decoding), the one this
reproduction uses. The released ViTPose COCO configs (``configs/body/2d_kpt_sview_rgb_img/
topdown_heatmap/coco/ViTPose_*_coco_256x192.py``) instead set ``use_udp=True`` (unbiased data processing:
UDP affine, UDP targets, DARK-style decoding) with ``shift_heatmap=False``; mmpose's non-UDP configs
(``res50_coco_256x192.py``, ``hrnet_w32_coco_256x192.py``) use MSRA targets with ``shift_heatmap=True``.
``merge_flip_test`` therefore exposes ``shift_heatmap`` and defaults to ViTPose's ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PIXEL_STD = 200.0  # mmpose divides box sizes by this "pixel std"; we keep pixels
PADDING = 1.25     # _xywh2cs default: context around the person box
SIGMA = 2.0        # TopDownGenerateTarget sigma for 256x192 inputs / 64x48 heatmaps
RESCORE_THRESHOLD = 0.2  # data_cfg vis_thr of the COCO configs

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# left/right index pairs (0-based), mmpose configs/_base_/datasets/coco.py ``swap`` entries
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
# limbs as in COCO's person_keypoints json: 1-based keypoint indices
COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)


def _np(x, dtype=np.float64) -> np.ndarray:
    """numpy or torch -> numpy array of ``dtype`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _size(size, name: str) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (width, height) with positive entries, got {tuple(size)}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------------------------------------
# box -> crop -> heatmap, and back
# ---------------------------------------------------------------------------------------------------------
def box_to_center_scale(box_xyxy, aspect_ratio: float, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Person box (x0, y0, x1, y1) -> (center [2], scale [2]) in pixels (mmpose ``_xywh2cs``, test mode).

    The box is grown (never shrunk) to ``aspect_ratio`` = crop width / crop height (192 / 256 for ViTPose),
    then both sides are multiplied by ``padding``. mmpose's scale is ours / ``PIXEL_STD``. (mmpose feeds
    detector boxes (x, y, w, h) as they are; its ground-truth boxes are first shrunk to w - 1, h - 1 by the
    dataset's box sanitising, which callers may mimic by passing x1 - 1, y1 - 1.)
    """
    x0, y0, x1, y1 = (float(v) for v in _np(box_xyxy).reshape(-1))
    w, h = x1 - x0, y1 - y0
    if not (w > 0 and h > 0):
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {(x0, y0, x1, y1)}")
    if not aspect_ratio > 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    center = np.array([x0 + 0.5 * w, y0 + 0.5 * h])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w, h]) * padding


def crop_transform(center, scale, output_size, rotation_deg: float = 0.0, inverse: bool = False) -> np.ndarray:
    """2x3 affine matrix mapping image pixels to crop pixels (``inverse=True``: crop -> image).

    mmpose ``get_affine_transform`` (shift 0): a similarity that sends ``center`` to the crop centre
    (out_w / 2, out_h / 2) and scales by k = out_w / scale_w in *both* axes (mmpose uses the width only;
    ``box_to_center_scale`` makes the aspect ratios agree), rotating by ``rotation_deg``:

        [x', y'] = k * R(-rot) @ ([x, y] - center) + [out_w / 2, out_h / 2],   R(a) = [[cos a, -sin a], [sin a, cos a]]

    Use it with ``cv2.warpAffine(img, M, output_size)`` or ``apply_affine(points, M)``. To map the crop
    to heatmap pixels pass the heatmap size as ``output_size`` (the same as dividing crop pixels by the
    stride, since mmpose's non-UDP pipeline uses ``heatmap = crop / stride``).
    """
    out_w, out_h = _size(output_size, "output_size")
    c, s = _np(center).reshape(2), _np(scale).reshape(2)
    if not s[0] > 0:
        raise ValueError(f"scale must be positive, got {tuple(s)}")
    k = out_w / s[0]
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # R(-rot)
    linear = k * rot  # [2, 2]
    offset = np.array([out_w / 2.0, out_h / 2.0]) - linear @ c  # [2]
    if inverse:
        linear_inv = np.linalg.inv(linear)
        return np.concatenate([linear_inv, (-linear_inv @ offset)[:, None]], axis=1)  # [2, 3]
    return np.concatenate([linear, offset[:, None]], axis=1)  # [2, 3]


def apply_affine(points, matrix) -> np.ndarray:
    """Apply a 2x3 affine matrix to points [..., 2] (mmpose ``affine_transform`` / ``warp_affine_joints``)."""
    p = _np(points)
    m = _np(matrix)
    if m.shape != (2, 3) or p.shape[-1] != 2:
        raise ValueError(f"need points [..., 2] and a 2x3 matrix, got {tuple(p.shape)} and {tuple(m.shape)}")
    return p @ m[:, :2].T + m[:, 2]  # [..., 2]


def heatmap_to_image(coords, center, scale, heatmap_size) -> np.ndarray:
    """Heatmap pixels -> image pixels (mmpose ``transform_preds``, non-UDP).

    coords [N, K, 2] (or [K, 2]) with center, scale [N, 2] (or [2]):
        x = u * scale_w / W + c_x - scale_w / 2,     y = v * scale_h / H + c_y - scale_h / 2
    the exact inverse of ``crop_transform(center, scale, heatmap_size)`` when the aspect ratios agree.
    """
    W, H = _size(heatmap_size, "heatmap_size")
    xy = _np(coords)
    c, s = _np(center), _np(scale)
    if xy.shape[-1] != 2 or c.shape[-1] != 2 or s.shape[-1] != 2:
        raise ValueError(f"coords, center, scale must end in 2, got {xy.shape}, {c.shape}, {s.shape}")
    c, s = c[..., None, :], s[..., None, :]  # [N, 1, 2] or [1, 2]
    return xy * s / np.array([W, H]) + c - 0.5 * s  # [N, K, 2]


# ---------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------
def gaussian_targets(keypoints, heatmap_size, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """MSRA heatmap targets: (targets [K, H, W] float32, target_weight [K] float32).

    keypoints [K, 3] = (u, v, visibility) in *heatmap* pixels (crop pixels / stride). As in mmpose
    ``_msra_generate_target`` (``unbiased_encoding=False``):

    * the centre is rounded, mu = int(u + 0.5) (Python ``int``: truncation towards zero);
    * the Gaussian exp(-((x - mu_x)^2 + (y - mu_y)^2) / (2 sigma^2)) (peak exactly 1) is drawn only
      inside the window [int(mu - 3 sigma), int(mu + 3 sigma + 1)) per axis and is 0 outside it;
    * target_weight = 1 for a labelled joint (visibility 1 or 2, mmpose's min(1, v)) whose window
      touches the heatmap, else 0, and its target is all zeros. "Touches" is mmpose's test
      ``not (ul >= size or br < 0)``, so a joint whose window ends exactly at 0 (br = 0, e.g. v = -8 with
      sigma 2) keeps weight 1 with an all-zero map; we keep that edge case as mmpose has it.

    For integer 3 sigma (sigma = 2 here, ViTPose/COCO) this is mmpose's patch exactly; for other sigma
    mmpose's patch may sit one pixel off near the border, while here it is always centred at mu.
    """
    W, H = _size(heatmap_size, "heatmap_size")
    k = _np(keypoints)
    if k.ndim != 2 or k.shape[1] != 3:
        raise ValueError(f"keypoints must be [K, 3] (u, v, visibility), got {tuple(k.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = 3.0 * sigma
    mu = np.trunc(k[:, :2] + 0.5)  # [K, 2]
    ul, br = np.trunc(mu - radius), np.trunc(mu + radius + 1)  # [K, 2] each
    outside = (ul[:, 0] >= W) | (ul[:, 1] >= H) | (br[:, 0] < 0) | (br[:, 1] < 0)  # [K]
    weight = (np.minimum(1.0, k[:, 2]) > 0.5) & ~outside  # [K]
    xs, ys = np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)
    in_x = (xs >= ul[:, :1]) & (xs < br[:, :1])  # [K, W]
    in_y = (ys >= ul[:, 1:]) & (ys < br[:, 1:])  # [K, H]
    g_x = np.exp(-((xs - mu[:, :1]) ** 2) / (2 * sigma**2)) * in_x  # [K, W]
    g_y = np.exp(-((ys - mu[:, 1:]) ** 2) / (2 * sigma**2)) * in_y  # [K, H]
    targets = g_y[:, :, None] * g_x[:, None, :] * weight[:, None, None]  # [K, H, W]
    return targets.astype(np.float32), weight.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------
def decode_heatmaps(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [N, K, H, W] -> (coords [N, K, 2] in heatmap pixels, maxvals [N, K]); numpy or torch in.

    mmpose ``_get_max_preds`` + ``keypoints_from_heatmaps(post_process="default")``:
    1. the first maximum in row-major order gives (x, y); a map whose maximum is <= 0 gives (-1, -1);
    2. if 1 < x < W - 1 and 1 < y < H - 1 (strict, so column/row 1 gets no step: mmpose's rule),
       each coordinate moves 0.25 towards its higher neighbour: x += 0.25 * sign(h[y, x+1] - h[y, x-1]),
       y += 0.25 * sign(h[y+1, x] - h[y-1, x]).
    """
    hm = _np(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(hm.shape)}")
    N, K, H, W = hm.shape
    flat = hm.reshape(N, K, H * W)  # [N, K, H*W]
    idx = flat.argmax(axis=2)  # [N, K]
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]  # [N, K]
    px, py = idx % W, idx // W  # [N, K] each
    coords = np.stack([px, py], axis=-1).astype(np.float64)  # [N, K, 2]
    coords[maxvals <= 0] = -1.0
    # 2. quarter-pixel step where both neighbours exist on each axis
    inner = (maxvals > 0) & (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1)  # [N, K]
    xr, xl = np.clip(px + 1, 0, W - 1), np.clip(px - 1, 0, W - 1)
    yd, yu = np.clip(py + 1, 0, H - 1), np.clip(py - 1, 0, H - 1)

    def at(y, x):
        return np.take_along_axis(flat, (y * W + x)[..., None], axis=2)[..., 0]  # [N, K]

    diff = np.stack([at(py, xr) - at(py, xl), at(yd, px) - at(yu, px)], axis=-1)  # [N, K, 2]
    coords += np.where(inner[..., None], 0.25 * np.sign(diff), 0.0)
    return coords, maxvals


def keypoints_from_heatmaps(heatmaps, center, scale) -> tuple[np.ndarray, np.ndarray]:
    """decode_heatmaps then heatmap_to_image: (keypoints [N, K, 2] in image pixels, maxvals [N, K])."""
    coords, maxvals = decode_heatmaps(heatmaps)
    H, W = np.shape(heatmaps)[-2:]
    return heatmap_to_image(coords, center, scale, (W, H)), maxvals


# ---------------------------------------------------------------------------------------------------------
# flip test
# ---------------------------------------------------------------------------------------------------------
def _flip_permutation(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    perm = list(range(num_joints))
    for left, right in flip_pairs:
        if not (0 <= left < num_joints and 0 <= right < num_joints):
            raise ValueError(f"flip pair {(left, right)} is out of range for {num_joints} keypoint channels")
        perm[left], perm[right] = right, left
    return perm


def flip_back(heatmaps, flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS):
    """Heatmaps predicted on a mirrored image [N, K, H, W] -> the original image's frame (mmpose ``flip_back``).

    Channel ``left`` takes channel ``right`` and vice versa, then every map is mirrored left-right.
    Works on numpy (returns a new array) and torch (returns a tensor); it is its own inverse.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    perm = _flip_permutation(heatmaps.shape[1], flip_pairs)
    swapped = heatmaps[:, perm]  # [N, K, H, W]
    if hasattr(swapped, "detach"):
        return swapped.flip(-1)
    return np.ascontiguousarray(swapped[..., ::-1])


def merge_flip_test(heatmaps, heatmaps_flipped, flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS,
                    shift_heatmap: bool = False):
    """Flip-test average: (heatmaps + flip_back(heatmaps_flipped)) / 2, both [N, K, H, W].

    ``heatmaps_flipped`` is the raw output on the mirrored crop (mmpose ``TopDown.forward_test``). With
    ``shift_heatmap=True`` the flipped-back maps move one pixel right (column 0 kept), mmpose
    ``TopdownHeatmapSimpleHead.inference_model``: for non-UDP pipelines this offsets the misalignment of
    a mirrored crop and a mirrored heatmap. ViTPose's COCO configs set it False (they use UDP).
    """
    if tuple(heatmaps.shape) != tuple(heatmaps_flipped.shape):
        raise ValueError(f"shape mismatch: heatmaps {tuple(heatmaps.shape)}, "
                         f"heatmaps_flipped {tuple(heatmaps_flipped.shape)}")
    back = flip_back(heatmaps_flipped, flip_pairs)  # [N, K, H, W]
    if shift_heatmap:
        if hasattr(back, "detach"):
            import torch

            back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
        else:
            back = np.concatenate([back[..., :1], back[..., :-1]], axis=-1)
    return (heatmaps + back) * 0.5


# ---------------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------------
def rescore(box_score, maxvals, threshold: float = RESCORE_THRESHOLD) -> np.ndarray | float:
    """Person score = box score x mean of the keypoint scores above ``threshold`` (0 if none is).

    mmpose ``TopDownCocoDataset.evaluate``: keypoint scores ``> vis_thr`` (strict; 0.2 in the COCO
    configs) are averaged; with none above it the keypoint score is 0, so the person scores 0.
    maxvals [K] with a scalar box score gives a float; maxvals [N, K] with box_score [N] gives [N].
    """
    m = _np(maxvals)
    b = _np(box_score)
    above = m > threshold  # [..., K]
    count = above.sum(axis=-1)  # [...]
    total = np.where(above, m, 0.0).sum(axis=-1)  # [...]
    kpt_score = np.where(count > 0, total / np.maximum(count, 1), 0.0)  # [...]
    out = b * kpt_score
    return float(out) if np.ndim(out) == 0 else out
