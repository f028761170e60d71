"""Rendering and labels: one scene to RGB, depth, normals, masks, mattes, semantics and keypoints;
real-like label defects; normals from depth."""

from __future__ import annotations

import numpy as np

from ...domains import _CLS, _REALLIKE, _STYLES, DEFAULT_SIZE, EPS, VIS_TOLERANCE, _check_args, _rng
from .raycast import _coverage, _dot, _nearest, _normals, _pack, _trace
from .scene import _build_scene, _Scene
from .shading import _fog, _shade, _sky_colour


# --- rendering -------------------------------------------------------------------------------------------
def _camera_rays(size: int, f: float):  # -> unit camera dirs [P, 3], 1/|d_cam| [P]
    c = (size - 1) / 2
    i, j = np.mgrid[0:size, 0:size]
    d = np.stack([(j - c) / f, -(i - c) / f, -np.ones((size, size))], -1).reshape(-1, 3)
    length = np.linalg.norm(d, axis=-1)
    return d / length[:, None], 1 / length


def _render_scene(sc: _Scene, size: int, depth_range) -> dict:
    pk = _pack(sc)
    # 1. camera: intrinsics and one ray per pixel centre
    f = (size / 2) / np.tan(sc.hfov / 2)
    c = (size - 1) / 2
    K = np.array([[f, 0, c], [0, f, c], [0, 0, 1.0]])
    u_cam, inv_len = _camera_rays(size, f)                                 # [P, 3], [P]
    R, o = sc.cam_R, sc.cam_pos
    u = u_cam @ R.T                                                        # [P, 3] world
    # 2. ray casting: nearest solid background and foreground surfaces
    tr = _trace(pk, o, u, R, f, size)
    t_bg, g_bg = _nearest(tr, pk["solid"] & ~pk["fg"])                     # [P], [P]
    t_fg, g_fg = _nearest(tr, pk["solid"] & pk["fg"])
    fg_front = t_fg < t_bg
    t_hit, g_hit = np.where(fg_front, t_fg, t_bg), np.where(fg_front, g_fg, g_bg)
    hit = np.isfinite(t_hit)
    z_raw = np.where(hit, t_hit * inv_len, np.inf)                         # [P] planar depth, inf = miss
    # 3. geometric labels
    valid = hit & (z_raw >= depth_range[0]) & (z_raw <= depth_range[1])
    p_hit = o + np.where(hit, t_hit, 0)[:, None] * u
    n_world = _normals(pk, g_hit, p_hit, u)
    normal = np.where(valid[:, None], n_world @ R, 0)                      # [P, 3] camera frame
    semantic = np.where(hit, pk["sem"][g_hit], _CLS["sky"])
    instance = np.where(hit, pk["person"][g_hit], -1)
    # 4. foreground matte
    z_bg = np.where(np.isfinite(t_bg), t_bg * inv_len, np.inf)
    alpha, g_cov = _coverage(pk, o, u, inv_len, f, z_bg, size, R)
    # 5. colour: background, foreground, composite with alpha
    sky = _sky_colour(sc, u)
    t_safe = np.where(np.isfinite(t_bg), t_bg, 0)
    col_bg = _fog(sc, _shade(sc, pk, g_bg, t_safe, o, u), t_safe, sky)
    col_bg = np.where(np.isfinite(t_bg)[:, None], col_bg, sky)
    t_safe = np.where(fg_front, t_fg, 0)
    col_fg = _fog(sc, _shade(sc, pk, g_fg, t_safe, o, u), t_safe, sky)
    fringe = pk["c1"][np.maximum(g_cov, 0)] * (sc.ambient + 0.6 * sc.strength) * sc.light_col
    F = np.where(fg_front[:, None], col_fg, fringe)
    rgb = (alpha[:, None] * F + (1 - alpha[:, None]) * col_bg) * sc.style["exposure"]
    hw = (size, size)
    return dict(
        rgb=rgb.T.reshape(3, *hw), depth=np.where(valid, z_raw, 0).reshape(hw), valid=valid.reshape(hw),
        normal=normal.T.reshape(3, *hw), alpha=alpha.reshape(hw), semantic=semantic.reshape(hw),
        instance=instance.reshape(hw), z_raw=z_raw.reshape(hw), intrinsics=K,
    )


def _people_labels(sc: _Scene, out: dict, size: int) -> dict:
    """joints3d, keypoints (COCO u, v, visibility), boxes and areas of the visible people."""
    R, o, K = sc.cam_R, sc.cam_pos, out["intrinsics"]
    inst = out["instance"]
    keep, J3, KP, boxes, areas = [], [], [], [], []
    for pid, joints in enumerate(sc.people):
        rows, cols = np.nonzero(inst == pid)
        if len(rows) == 0:
            continue
        jc = (joints - o) @ R                                              # [17, 3] camera frame
        d = -jc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uu = K[0, 2] + K[0, 0] * jc[:, 0] / d
            vv = K[1, 2] - K[1, 1] * jc[:, 1] / d
        inside = (d > EPS) & (uu >= -0.5) & (uu <= size - 0.5) & (vv >= -0.5) & (vv <= size - 0.5)
        ri = np.where(inside, np.clip(np.round(np.nan_to_num(vv)), 0, size - 1), 0).astype(np.int64)
        ci = np.where(inside, np.clip(np.round(np.nan_to_num(uu)), 0, size - 1), 0).astype(np.int64)
        seen = out["z_raw"][ri, ci] >= d - VIS_TOLERANCE
        vis = np.where(inside, np.where(seen, 2, 1), 0)
        KP.append(np.stack([np.where(inside, uu, 0), np.where(inside, vv, 0), vis], -1))
        J3.append(jc)
        on = vis == 2
        xs, ys = np.r_[cols - 0.5, cols + 0.5, uu[on]], np.r_[rows - 0.5, rows + 0.5, vv[on]]
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        areas.append(len(rows))
        keep.append(pid)
    remap = np.full(len(sc.people) + 1, -1)
    remap[keep] = np.arange(len(keep))
    return dict(
        instance=remap[inst],                                              # -1 stays -1 (last slot)
        joints3d=np.array(J3, np.float32).reshape(-1, 17, 3),
        keypoints=np.array(KP, np.float32).reshape(-1, 17, 3),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        areas=np.array(areas, np.float32),
    )


def _camera_effects(rgb, st, rng, size) -> np.ndarray:
    """Per-domain sensor look: blur (ScanNet-like motion blur) and noise."""
    if st["blur"] > 0:
        from scipy.ndimage import gaussian_filter

        rgb = gaussian_filter(rgb, (0, st["blur"] * size / 64, st["blur"] * size / 64 * 0.5))
    if st["noise"] > 0:
        rgb = rgb + rng.normal(0, st["noise"], rgb.shape)
    return np.clip(rgb, 0, 1)


def render(domain: str, index: int, size: int = DEFAULT_SIZE, *, subject: bool = False) -> dict:
    """Render scene ``index`` of ``domain`` at ``size`` x ``size``; conventions in the module docstring.

    ``subject=True`` (the DIS and matting tasks) frames the foreground object as the scene's subject: nearer, large,
    near the image centre, other objects and people kept beyond twice its distance (``scene._subject``; measured by
    ``scripts/subject_check.py``). Without it the scene is exactly the plain one.

    Returns rgb [3, H, W], depth [H, W] (m, 0 = invalid), valid [H, W] bool, normal [3, H, W], mask and
    alpha [H, W], semantic and instance [H, W] int64, keypoints and joints3d [N, 17, 3], boxes [N, 4],
    areas [N], intrinsics [3, 3] (float32 unless noted), domain and index.
    """
    _check_args(domain, index, size)
    index, size = int(index), int(size)
    base = _REALLIKE[domain]["base"] if domain in _REALLIKE else domain
    if not isinstance(subject, (bool, np.bool_)):
        raise ValueError(f"subject must be a bool, got {subject!r}")
    sc = _build_scene(base, _rng(base, index), subject=bool(subject))    # the scene ignores size
    out = _render_scene(sc, size, _STYLES[base]["depth_range"])
    out.update(_people_labels(sc, out, size))
    out["rgb"] = _camera_effects(out["rgb"], _STYLES[base], _rng(base, index, size, "sensor"), size)
    alpha = out["alpha"].astype(np.float32)                                 # mask from the stored alpha
    sample = dict(
        rgb=out["rgb"].astype(np.float32), depth=out["depth"].astype(np.float32), valid=out["valid"],
        normal=out["normal"].astype(np.float32), mask=(alpha > 0.5).astype(np.float32), alpha=alpha,
        semantic=out["semantic"].astype(np.int64),
        instance=out["instance"].astype(np.int64), keypoints=out["keypoints"], joints3d=out["joints3d"],
        boxes=out["boxes"], areas=out["areas"], intrinsics=out["intrinsics"].astype(np.float32),
        domain=domain, index=index,
    )
    if domain in _REALLIKE:
        sample = _reallike(sample, _REALLIKE[domain], _rng(domain, index, size, "defects"))
    return sample


# --- real-like label defects -----------------------------------------------------------------------------
def _reallike(s: dict, cfg: dict, rng) -> dict:
    """Degrade the labels as a real capture and annotation would; the RGB is untouched."""
    from scipy.ndimage import gaussian_filter, maximum_filter, minimum_filter

    H, W = s["depth"].shape
    k = H / 64
    depth, valid = s["depth"].astype(np.float64), s["valid"].copy()
    # 1. blurred depth edges: flying pixels mix the two sides of every discontinuity
    big = np.where(valid, depth, np.nan)
    hi, lo = maximum_filter(np.nan_to_num(big, nan=0), 3), minimum_filter(np.nan_to_num(big, nan=1e9), 3)
    edge = valid & (hi > lo * 1.05)
    w = gaussian_filter(valid.astype(float), 1.0)
    smooth = gaussian_filter(np.where(valid, depth, 0), 1.0) / np.maximum(w, 1e-6)
    depth = np.where(edge, smooth, depth)
    # 2. noise growing with distance: a smooth wobble plus per-pixel jitter
    wobble = gaussian_filter(rng.normal(size=(H, W)), 2 * k)
    noise = 0.8 * wobble / (wobble.std() + 1e-9) + 0.4 * rng.normal(size=(H, W))
    depth = depth * (1 + cfg["depth_noise"] * noise * (1 + depth / cfg["max_range"]))
    # 3. holes: blobs, dropouts, beyond the sensor range, at grazing angles
    blobs = gaussian_filter(rng.normal(size=(H, W)), 3 * k)
    holes = blobs > np.quantile(blobs, 1 - cfg["holes"])
    holes |= rng.random((H, W)) < cfg["holes"] / 10
    holes |= depth > cfg["max_range"]
    K = s["intrinsics"]
    i, j = np.mgrid[0:H, 0:W]
    ray = np.stack([(j - K[0, 2]) / K[0, 0], -(i - K[1, 2]) / K[1, 1], -np.ones((H, W))])  # [3, H, W]
    cos_view = np.abs((s["normal"] * ray).sum(0)) / np.linalg.norm(ray, axis=0)
    holes |= cos_view < cfg["grazing"]
    valid &= ~holes
    depth = np.where(valid, depth, 0)
    # 4. normals fitted to the noisy depth (as for NYUv2 / ScanNet normal labels)
    smooth = gaussian_filter(depth, 1.2 * k) / np.maximum(gaussian_filter(valid * 1.0, 1.2 * k), 1e-6)
    normal = normals_from_depth(smooth, K, valid)
    valid &= np.abs(normal).sum(0) > 0                                    # holes grow by a pixel
    depth = np.where(valid, depth, 0)
    # 5. a coarse matte: blurred alpha, so thin wires fade out of the mask; coarse semantic boundaries
    alpha = gaussian_filter(s["alpha"].astype(np.float64), cfg["alpha_blur"] * k)
    alpha = np.clip(alpha, 0, 1).astype(np.float32)
    semantic = np.repeat(np.repeat(s["semantic"][::2, ::2], 2, 0), 2, 1)[:H, :W]
    # 6. annotators click keypoints a pixel or so off
    kp = s["keypoints"].copy()
    jitter = rng.normal(0, cfg["kp_jitter"] * k, kp[..., :2].shape)
    kp[..., :2] = np.where(kp[..., 2:] > 0, kp[..., :2] + jitter, 0)
    return {**s, "depth": depth.astype(np.float32), "valid": valid, "normal": normal * valid,
            "alpha": alpha, "mask": (alpha > 0.5).astype(np.float32),
            "semantic": semantic.astype(np.int64), "keypoints": kp.astype(np.float32)}


# --- geometry helper -------------------------------------------------------------------------------------
def normals_from_depth(depth, intrinsics, valid=None) -> np.ndarray:
    """Surface normals [3, H, W] from a planar depth map: back-project with K into the camera frame
    (x right, y up, z toward the camera), central differences, cross product, turned toward the camera.
    Zero where the pixel or one of its 4 neighbours (inside the image) is invalid (depth <= 0 unless
    ``valid`` is given); one-sided differences at the image border."""
    depth = np.asarray(depth, np.float64)
    K = np.asarray(intrinsics, np.float64)
    H, W = depth.shape
    valid = depth > 0 if valid is None else np.asarray(valid, bool) & (depth > 0)
    v, u = np.mgrid[0:H, 0:W]
    x, y = (u - K[0, 2]) * depth / K[0, 0], -(v - K[1, 2]) * depth / K[1, 1]
    pts = np.stack([x, y, -depth], -1)                                    # [H, W, 3] camera frame
    d_du = np.gradient(pts, axis=1)                                        # [H, W, 3]
    d_dv = np.gradient(pts, axis=0)
    n = np.cross(d_dv, d_du)
    n = np.where((_dot(n, pts) > 0)[..., None], -n, n)
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    ok = valid.copy()
    pad = np.pad(valid, 1, mode="edge")                                     # the image border is no hole
    for di, dj in ((0, 1), (2, 1), (1, 0), (1, 2)):
        ok &= pad[di:di + H, dj:dj + W]
    return np.where(ok[..., None], n, 0).transpose(2, 0, 1).astype(np.float32)


