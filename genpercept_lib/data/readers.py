"""The real datasets of the paper, read from the files as those datasets ship them (``paper`` profile).

``open_dataset(name, root=None, split=None)`` returns a sequence (``len``, ``[i]``) of dicts with the
keys of the toy world, all numpy:

    rgb        [3, H, W] float32 in [0, 1]
    depth      [H, W] float32 metres, 0 where the dataset has no measurement          (depth sets)
    valid      [H, W] bool: measured, inside the dataset's depth range (Marigold's min/max) and,
               with ``crops=True``, inside the standard evaluation box (Eigen crop)   (depth sets)
    normal     [3, H, W] float32 unit camera-space normals, x right, y up, z towards the viewer
               (Hypersim's and Marigold's convention), (0, 0, 0) where unknown
               (Hypersim; DSINE's six benchmarks, with ``valid`` = the benchmark's normal mask)
    intrins    [3, 3] float32 camera matrix shipped with DSINE's benchmarks (read, not used)
    semantic   [H, W] int64 NYU40 class index 0..39 (NYU40 id - 1), 255 = unlabelled   (Hypersim)
    mask       [H, W] float32 in [0, 1] (DIS5K)     alpha, trimap [H, W] float32 in [0, 1] (P3M-10k)
    keypoints  [N, 17, 3] float32 (x, y, visibility) in pixels, boxes [N, 4] xywh       (COCO)
    path, name the RGB file, and its path relative to the dataset folder

Where the files live and what each layout looks like: data/README.md. Per-dataset settings (file
patterns, depth scale, invalid values, depth range, crops) are small data in ``SPECS``, Marigold-style;
one code path reads them all. A missing folder or a malformed file raises a one-line ``DatasetError``
naming the path and the expected layout.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..profiles import DatasetError

DATA_ENV = "GENPERCEPT_DATA"
HYPERSIM_FOV_DEG = 60.0  # horizontal field of view: f = (1024 / 2) / tan(30 deg) = 886.81 px
KITTI_BENCHMARK_SIZE = (352, 1216)  # (h, w) of the bottom-centred KITTI benchmark crop
NORMAL_CONVENTION = "camera space: x right, y up, z towards the viewer (OpenGL; Hypersim, Marigold)"


# --------------------------------------------------------------------------------------------------
# Settings as data
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Label:
    """One label file per RGB file, found by rewriting the RGB path with a regex (or a list column)."""

    key: str                           # item key: depth | valid | normal | mask | alpha | trimap
    sub: tuple[str, str] | None        # (pattern, replacement) for re.subn on the RGB path
    fmt: str                           # decoder name in DECODERS
    scale: float = 1.0                 # stored value * scale -> metres (depth) or [0, 1] (masks)
    invalid: tuple[float, ...] = ()    # stored values meaning "no measurement" (nan/inf always do)
    optional: bool = False             # a missing file is skipped instead of an error
    per_pixel: bool = True             # False: not an [.., H, W] map (a camera matrix), no size check


@dataclass(frozen=True)
class Crop:
    """An evaluation box rows [top:bottom], cols [left:right] in units of a reference size (h, w)."""

    top: float
    bottom: float
    left: float
    right: float
    ref: tuple[float, float] = (1.0, 1.0)  # (1, 1): the numbers are fractions of the image size


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str                         # for messages, e.g. "NYUv2 in the Marigold layout"
    task: str                          # depth | normal | dis | matting | pose
    folder: str                        # default folder under $GENPERCEPT_DATA
    layout: str                        # one-line sketch of the expected files, for error messages
    splits: dict  # split -> "glob:<pattern>" | "list:<file>" | "csv:<file>" | "coco:<json>"
    default_split: str
    base: str = ""                     # subfolder of the root that every relative path starts from
    labels: tuple[Label, ...] = ()
    depth_range: tuple[float, float] | None = None  # Marigold's (min, max): valid = min < depth < max
    image_crop: tuple[int, int] | None = None       # (h, w) bottom-centred crop of every array
    valid_crop: Crop | None = None                   # evaluation box ANDed into valid
    row: str = ""                      # csv splits: format string turning a csv row into the RGB path


_HYPERSIM_RGB = r"_final_preview/frame\.(\d+)\.tonemap\.jpg$"
# DSINE's normal benchmarks (baegwangbin/DSINE, data/datasets/<set>/__init__.py): how each stores its normals
DSINE_NORMAL_FORMATS = {
    "png8": "8-bit RGB PNG, n = v / 255 * 2 - 1, (0, 0, 0) = unknown",
    "png16": "16-bit RGB PNG, n = v / 65535 * 2 - 1, (0, 0, 0) = unknown",
    "exr": "float RGB OpenEXR, unknown where |n| <= 0.5",
    "pkl": "pickle {min_x, max_x, min_y, max_y, normal: [max_y-min_y+1, max_x-min_x+1, 3]}, (0, 0, 0) = unknown",
}


def _dsine_spec(key: str, title: str, split: str, scene: str, rgb_ext: str, fmt: str) -> DatasetSpec:
    """One of DSINE's normal benchmarks as its evaluation archive ships it: dsine_eval/<key>/<scene>/NAME_img.EXT
    + NAME_normal.(png|exr|pkl) + NAME_intrins.npy. ``split`` is DSINE's split name (split/<split>.txt lists
    the same files the glob finds in a complete archive); every image is evaluated at its full size, on the
    pixels the normal mask keeps (DSINE's test.py: no crop, no extra mask)."""
    normal_ext = {"png8": "png", "png16": "png"}.get(fmt, fmt)
    rgb = rf"_img\.{rgb_ext}$"
    return DatasetSpec(
        name=f"dsine_{key}", title=f"{title} in DSINE's evaluation layout", task="normal",
        folder=f"dsine_eval/{key}",
        layout=f"<root>/{scene}/NAME_img.{rgb_ext} + NAME_normal.{normal_ext} ({DSINE_NORMAL_FORMATS[fmt]}; "
               "x left, y up, z to the viewer) + NAME_intrins.npy (3 x 3)",
        splits={split: f"glob:*/*_img.{rgb_ext}"},
        default_split=split,
        labels=(Label("normal", (rgb, f"_normal.{normal_ext}"), f"dsine_{fmt}"),
                Label("intrins", (rgb, "_intrins.npy"), "intrins", per_pixel=False)),
    )


_HYPERSIM_CSV = "csv:metadata_images_split_scene_v1.csv"
_DIS_SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec(
        name="hypersim", title="Hypersim as released", task="depth", folder="hypersim",
        layout="<root>/ai_VVV_NNN/images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg + "
               "scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5 [+ frame.IIII.normal_cam.hdf5]; "
               "splits from <root>/metadata_images_split_scene_v1.csv",
        splits={"train": _HYPERSIM_CSV, "val": _HYPERSIM_CSV, "test": _HYPERSIM_CSV,
                "all": "glob:ai_*/images/scene_cam_*_final_preview/frame.*.tonemap.jpg"},
        default_split="train",
        row="{scene_name}/images/scene_{camera_name}_final_preview/frame.{frame_id:04d}.tonemap.jpg",
        labels=(
            Label("depth", (_HYPERSIM_RGB, r"_geometry_hdf5/frame.\1.depth_meters.hdf5"),
                  "hypersim_distance"),
            Label("normal", (_HYPERSIM_RGB, r"_geometry_hdf5/frame.\1.normal_cam.hdf5"), "hypersim_normal",
                  optional=True),
            Label("semantic", (_HYPERSIM_RGB, r"_geometry_hdf5/frame.\1.semantic.hdf5"), "hypersim_semantic",
                  optional=True),
        ),
        depth_range=(1e-5, 65.0),
    ),
    DatasetSpec(
        name="hypersim_marigold", title="Hypersim preprocessed by Marigold's script", task="depth",
        folder="hypersim_processed",
        layout="<root>/{train,val,test}/ai_VVV_NNN/rgb_cam_XX_frIIII.png + depth_plane_cam_XX_frIIII.png "
               "(uint16 mm)",
        splits={s: f"glob:{s}/*/rgb_cam_*_fr*.png" for s in ("train", "val", "test")},
        default_split="train",
        labels=(Label("depth", (r"/rgb_(cam_\d+_fr\d+)\.png$", r"/depth_plane_\1.png"), "png16",
                      scale=1e-3, invalid=(0,)),),
        depth_range=(1e-5, 65.0),
    ),
    DatasetSpec(
        name="vkitti", title="Virtual KITTI 2 as released", task="depth", folder="vkitti",
        layout="<root>/SceneNN/<variation>/frames/rgb/Camera_K/rgb_NNNNN.jpg + "
               "frames/depth/Camera_K/depth_NNNNN.png (uint16 cm)",
        splits={"all": "glob:Scene*/*/frames/rgb/Camera_*/rgb_*.jpg"},
        default_split="all",
        labels=(Label("depth", (r"/frames/rgb/(Camera_\d+)/rgb_(\d+)\.jpg$",
                                r"/frames/depth/\1/depth_\2.png"),
                      "png16", scale=1e-2, invalid=(65535,)),),  # 65535 cm = 655.35 m: sky
        depth_range=(1e-5, 80.0),
        image_crop=KITTI_BENCHMARK_SIZE,
    ),
    DatasetSpec(
        name="nyu", title="NYUv2 in the Marigold layout", task="depth", folder="nyuv2",
        base="nyu_labeled_extracted",
        layout="<root>/nyu_labeled_extracted/test/<scene>/rgb_NNNN.png + depth_NNNN.png (uint16 mm)",
        splits={"test": "glob:test/*/rgb_*.png", "train": "glob:train/*/rgb_*.png"},
        default_split="test",
        labels=(Label("depth", (r"rgb_(\d+)\.png$", r"depth_\1.png"), "png16", scale=1e-3, invalid=(0,)),),
        depth_range=(1e-3, 10.0),
        valid_crop=Crop(45, 471, 41, 601, ref=(480, 640)),  # Eigen crop of the 480 x 640 images
    ),
    DatasetSpec(
        name="kitti", title="KITTI Eigen test split with ground truth (652 images)", task="depth",
        folder="kitti",
        layout="<root>/eigen_test_files_with_gt.txt (lines: rgb depth focal, relative to <root>) + "
               "<root>/2011_MM_DD/<drive>_sync/image_02/data/N.png + "
               "<root>/<drive>_sync/proj_depth/groundtruth/image_02/N.png (uint16 /256)",
        splits={"eigen_test": "list:eigen_test_files_with_gt.txt"},
        default_split="eigen_test",
        labels=(Label("depth", None, "png16", scale=1 / 256, invalid=(0,)),),
        depth_range=(1e-5, 80.0),
        image_crop=KITTI_BENCHMARK_SIZE,
        valid_crop=Crop(0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen crop (Marigold, BTS)
    ),
    DatasetSpec(
        name="scannet", title="ScanNet in the Marigold layout", task="depth", folder="scannet",
        layout="<root>/sceneNNNN_NN/color/N.jpg + depth/N.png (uint16 mm, same size as color)",
        splits={"val": "glob:scene*/color/*.jpg"},
        default_split="val",
        labels=(Label("depth", (r"/color/([^/]+)\.jpg$", r"/depth/\1.png"), "png16", scale=1e-3,
                      invalid=(0,)),),
        depth_range=(1e-3, 10.0),
    ),
    DatasetSpec(
        name="diode", title="DIODE validation set as released", task="depth", folder="diode", base="val",
        layout="<root>/val/{indoors,outdoor}/scene_N/scan_N/NAME.png + NAME_depth.npy (float32 m, "
               "[H, W, 1]) + NAME_depth_mask.npy",
        splits={"val": "glob:*/scene_*/scan_*/*.png", "val_indoors": "glob:indoors/scene_*/scan_*/*.png",
                "val_outdoor": "glob:outdoor/scene_*/scan_*/*.png"},
        default_split="val",
        labels=(
            Label("depth", (r"\.png$", "_depth.npy"), "npy"),
            Label("valid", (r"\.png$", "_depth_mask.npy"), "npy"),
        ),
        depth_range=(0.6, 350.0),
    ),
    DatasetSpec(
        name="eth3d", title="ETH3D DSLR images in the Marigold layout", task="depth", folder="eth3d",
        layout="<root>/rgb/<scene>/images/dslr_images/DSC_N.JPG + "
               "<root>/depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/DSC_N.JPG "
               "(raw float32 little-endian, 6048 x 4032, inf = no depth)",
        splits={"test": "glob:rgb/*/images/dslr_images/*.JPG"},
        default_split="test",
        labels=(Label("depth", (r"^rgb/([^/]+)/images/dslr_images/([^/]+)$",
                                r"depth/\1_dslr_depth/\1/ground_truth_depth/dslr_images/\2"),
                      "raw_float32"),),
        depth_range=(1e-5, math.inf),
    ),
    DatasetSpec(
        name="taskonomy", title="Taskonomy as released (per building)", task="depth", folder="taskonomy",
        layout="<root>/<building>/rgb/point_P_view_V_domain_rgb.png + "
               "<building>/depth_zbuffer/point_P_view_V_domain_depth_zbuffer.png (uint16, 1/512 m; 65535 = none)",
        splits={"all": "glob:*/rgb/point_*_view_*_domain_rgb.png"},
        default_split="all",
        labels=(Label("depth", (r"/rgb/(point_\d+_view_\d+)_domain_rgb\.png$",
                                r"/depth_zbuffer/\1_domain_depth_zbuffer.png"),
                      "png16", scale=1 / 512, invalid=(65535,)),),
        depth_range=(1e-5, 128.0),
    ),
    DatasetSpec(
        name="cityscapes", title="Cityscapes as released", task="depth", folder="cityscapes",
        layout="<root>/leftImg8bit/<split>/<city>/NAME_leftImg8bit.png + disparity/<split>/<city>/NAME_disparity.png "
               "(uint16, disparity = (p - 1) / 256, 0 = none) + camera/<split>/<city>/NAME_camera.json",
        splits={"train_all": "glob:leftImg8bit/train*/*/*_leftImg8bit.png",
                **{s: f"glob:leftImg8bit/{s}/*/*_leftImg8bit.png" for s in ("train", "train_extra", "val")}},
        default_split="train_all",
        labels=(Label("depth", (r"^leftImg8bit/(.+)_leftImg8bit\.png$", r"disparity/\1_disparity.png"),
                      "cityscapes_disparity"),),
        depth_range=(1e-3, 80.0),
    ),
    DatasetSpec(
        name="dis5k", title="DIS5K as released", task="dis", folder="DIS5K",
        layout="<root>/{DIS-TR,DIS-VD,DIS-TE1..4}/im/NAME.jpg + gt/NAME.png (8-bit mask)",
        splits={s: f"glob:{s}/im/*.jpg" for s in _DIS_SPLITS},
        default_split="DIS-VD",
        labels=(Label("mask", (r"/im/([^/]+)\.jpg$", r"/gt/\1.png"), "png8", scale=1 / 255),),
    ),
    DatasetSpec(
        name="p3m10k", title="P3M-10k as released", task="matting", folder="P3M-10k",
        layout="<root>/train/blurred_image/NAME.jpg + train/mask/NAME.png; "
               "<root>/validation/P3M-500-P/blurred_image/*.jpg, validation/P3M-500-NP/original_image/*.jpg "
               "+ mask/NAME.png (8-bit alpha) [+ trimap/NAME.png]",
        splits={"train": "glob:train/blurred_image/*.jpg",
                "P3M-500-P": "glob:validation/P3M-500-P/blurred_image/*.jpg",
                "P3M-500-NP": "glob:validation/P3M-500-NP/original_image/*.jpg"},
        default_split="P3M-500-NP",
        labels=(
            Label("alpha", (r"/(blurred|original)_image/([^/]+)\.jpg$", r"/mask/\2.png"), "png8",
                  scale=1 / 255),
            Label("trimap", (r"/(blurred|original)_image/([^/]+)\.jpg$", r"/trimap/\2.png"), "png8",
                  scale=1 / 255, optional=True),
        ),
    ),
    DatasetSpec(
        name="coco", title="COCO 2017 person keypoints as released", task="pose", folder="coco",
        layout="<root>/annotations/person_keypoints_val2017.json + <root>/val2017/NNNNNNNNNNNN.jpg",
        splits={s: f"coco:annotations/person_keypoints_{s}.json" for s in ("val2017", "train2017")},
        default_split="val2017",
    ),
    _dsine_spec("nyuv2", "NYUv2 test (GeoNet normals)", "test", "test", "png", "png8"),
    _dsine_spec("scannet", "ScanNet test (FrameNet normals)", "test", "sceneNNNN_NN", "png", "png8"),
    _dsine_spec("ibims", "iBims-1", "ibims", "ibims", "png", "exr"),
    _dsine_spec("sintel", "Sintel", "sintel", "<scene>", "png", "exr"),
    _dsine_spec("vkitti", "Virtual KITTI (DSINE's 1000 frames)", "vkitti", "SceneNN", "jpg", "png16"),
    _dsine_spec("oasis", "OASIS validation", "val", "val", "png", "pkl"),
)}
DSINE_SETS: tuple[str, ...] = tuple(n for n in SPECS if n.startswith("dsine_"))
DATASETS: tuple[str, ...] = tuple(SPECS)


# --------------------------------------------------------------------------------------------------
# Hypersim geometry
# --------------------------------------------------------------------------------------------------
def hypersim_focal(width: int, fov_deg: float = HYPERSIM_FOV_DEG) -> float:
    """Focal length in pixels of Hypersim's camera: (W / 2) / tan(fov / 2) = 886.81 at W = 1024."""
    return 0.5 * width / math.tan(math.radians(fov_deg) / 2)


def _hypersim_rays(height: int, width: int, fov_deg: float = HYPERSIM_FOV_DEG) -> np.ndarray:
    """Camera rays (x, y, 1) through the pixel centres, x right and y down: [H, W, 3]."""
    f = hypersim_focal(width, fov_deg)
    x = (np.arange(width) + 0.5 - width / 2) / f   # [W]
    y = (np.arange(height) + 0.5 - height / 2) / f  # [H]
    xx, yy = np.meshgrid(x, y)                      # [H, W] each
    return np.stack([xx, yy, np.ones_like(xx)], axis=-1)


def hypersim_distance_to_planar(distance: np.ndarray, fov_deg: float = HYPERSIM_FOV_DEG) -> np.ndarray:
    """Hypersim's ``depth_meters`` (distance to the camera centre) -> planar depth (along the optical axis).

    planar = dist / sqrt(1 + ((u - cx) / f)^2 + ((v - cy) / f)^2), u, v at pixel centres.
    """
    h, w = distance.shape
    rays = _hypersim_rays(h, w, fov_deg)                           # [H, W, 3]
    return (distance / np.linalg.norm(rays, axis=-1)).astype(np.float32)  # [H, W]


def _orient_normals(normal: np.ndarray, fov_deg: float = HYPERSIM_FOV_DEG) -> np.ndarray:
    """[H, W, 3] camera normals (x right, y up, z to the viewer) -> unit, facing the camera, [3, H, W]."""
    normal = normal.astype(np.float32)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)       # [H, W, 1]
    ok = np.isfinite(length) & (length > 1e-6)
    unit = np.where(ok, normal / np.where(ok, length, 1.0), 0.0)   # [H, W, 3]
    h, w = unit.shape[:2]
    view = _hypersim_rays(h, w, fov_deg) * np.array([1.0, -1.0, -1.0])  # rays in (right, up, back) axes
    facing_away = (unit * view).sum(-1, keepdims=True) > 0          # [H, W, 1]
    unit = np.where(facing_away, -unit, unit)
    return np.ascontiguousarray(unit.transpose(2, 0, 1), dtype=np.float32)  # [3, H, W]


# --------------------------------------------------------------------------------------------------
# Decoders: path, image shape (H, W) -> array in stored units
# --------------------------------------------------------------------------------------------------
def _read_png16(path: Path, shape) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im)  # [H, W] uint16 (Pillow mode I;16) or int32 (mode I)
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32):
        raise ValueError(f"expected a 16-bit single-channel PNG, got {arr.dtype} {list(arr.shape)}")
    return arr


def _read_png8(path: Path, shape) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))  # [H, W] uint8


def _read_npy(path: Path, shape) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    return arr.reshape(arr.shape[:2]) if arr.ndim == 3 and arr.shape[2] == 1 else arr  # [H, W]


def _read_raw_float32(path: Path, shape) -> np.ndarray:
    h, w = shape
    size = path.stat().st_size
    if size != h * w * 4:
        raise ValueError(f"{size} bytes, expected {h * w * 4} = {w} x {h} float32 to match the image")
    return np.fromfile(path, dtype="<f4").reshape(h, w)  # [H, W]


def _read_hdf5(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["dataset"])


def _read_hypersim_distance(path: Path, shape) -> np.ndarray:
    distance = _read_hdf5(path).astype(np.float32)  # [H, W] metres to the camera centre, nan = none
    if distance.ndim != 2:
        raise ValueError(f"expected a [H, W] distance map, got {list(distance.shape)}")
    return hypersim_distance_to_planar(distance)


def _read_hypersim_semantic(path: Path, shape) -> np.ndarray:
    """Hypersim's ``semantic.hdf5``: NYU40 class ids 1..40 per pixel, -1 (or 0) where unlabelled -> int64
    class indices 0..39, 255 (ignore) where unlabelled."""
    ids = _read_hdf5(path)  # [H, W] int16
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"expected [H, W] integer NYU40 ids, got {ids.dtype} {list(ids.shape)}")
    if (ids > 40).any():
        raise ValueError(f"NYU40 ids go up to 40, found {int(ids.max())}")
    return np.where(ids >= 1, ids.astype(np.int64) - 1, 255)


def _read_hypersim_normal(path: Path, shape) -> np.ndarray:
    normal = _read_hdf5(path)  # [H, W, 3]
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] normals, got {list(normal.shape)}")
    return _orient_normals(normal)


def _read_cityscapes_disparity(path: Path, shape) -> np.ndarray:
    """Cityscapes disparity PNG + the frame's camera json -> depth in metres (inf where there is none).

    disparity = (p - 1) / 256 px for p > 0 (p = 0: no measurement); depth = baseline * fx / disparity.
    """
    import json

    raw = _read_png16(path, shape).astype(np.float64)  # [H, W]
    camera = Path(re.sub(r"/disparity/(.+)_disparity\.png$", r"/camera/\1_camera.json", path.as_posix()))
    try:
        calib = json.loads(camera.read_text())
        baseline, fx = float(calib["extrinsic"]["baseline"]), float(calib["intrinsic"]["fx"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"camera file {camera}: {_one_line(exc)}") from None
    disparity = np.where(raw > 0, (raw - 1.0) / 256.0, 0.0)  # [H, W] px
    with np.errstate(divide="ignore"):
        return np.where(disparity > 0, baseline * fx / disparity, np.inf).astype(np.float32)  # [H, W] m


# --------------------------------------------------------------------------------------------------
# DSINE's normal benchmarks
# --------------------------------------------------------------------------------------------------
# DSINE's normals are x left, y up, z towards the viewer (its OASIS reader's "to LUB"): its depth-to-normal
# code (utils/d2n/cross.py, plane_svd.py) gives a wall facing the camera (0, 0, 1) and the left wall of a room,
# facing right, (-1, 0, 0). Ours is x right (Hypersim): only x changes sign.
DSINE_TO_OURS = np.array([-1.0, 1.0, 1.0], np.float32)
OASIS_TO_DSINE = np.array([-1.0, -1.0, 1.0], np.float32)  # DSINE's oasis reader negates x and y of the pkl
_PICKLE_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                   for n in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                             ("collections", "OrderedDict")}


def _dsine_normals(normal: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[H, W, 3] normals in DSINE's axes and its [H, W] mask -> [3, H, W] unit normals in ours, 0 where unknown."""
    n = normal.astype(np.float32) * DSINE_TO_OURS
    length = np.linalg.norm(n, axis=-1, keepdims=True)                       # [H, W, 1]
    ok = known[..., None] & np.isfinite(length) & (length > 0)
    unit = np.where(ok, n / np.where(ok, length, 1.0), 0.0)                  # [H, W, 3]
    return np.ascontiguousarray(unit.transpose(2, 0, 1), dtype=np.float32)  # [3, H, W]


def _imread_rgb(path: Path, dtype) -> np.ndarray:
    """A 3-channel image as [H, W, 3] RGB of ``dtype``, read as DSINE reads it (cv2: Pillow reads neither
    16-bit RGB PNGs nor OpenEXR)."""
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # cv2 reads EXR only with this set
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # [H, W, 3] BGR
    if arr is None:
        raise ValueError("not an image file cv2 can read")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != dtype:
        raise ValueError(f"expected a 3-channel {np.dtype(dtype).name} image, got {arr.dtype} {list(arr.shape)}")
    return arr[..., ::-1]  # RGB


def _read_dsine_png(path: Path, dtype) -> np.ndarray:
    """NYUv2, ScanNet (8-bit), Virtual KITTI (16-bit): n = v / max * 2 - 1, known where the channels sum > 0."""
    v = _imread_rgb(path, dtype)                                      # [H, W, 3]
    known = v.astype(np.int64).sum(-1) > 0                              # [H, W]
    return _dsine_normals(v.astype(np.float32) / np.iinfo(dtype).max * 2.0 - 1.0, known)


def _read_dsine_exr(path: Path, shape) -> np.ndarray:
    """iBims-1, Sintel: float normals, known where |n| > 0.5 (DSINE's mask)."""
    n = _imread_rgb(path, np.float32)                                 # [H, W, 3]
    with np.errstate(invalid="ignore"):
        known = np.linalg.norm(n, axis=-1) > 0.5
    return _dsine_normals(n, known)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts of numbers and numpy arrays only: a pickle runs whatever code it names otherwise."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise ValueError(f"refused to unpickle {module}.{name} (expected only numbers and numpy arrays)")
        return super().find_class(module, name)


def _read_oasis_pkl(path: Path, shape) -> np.ndarray:
    """OASIS: the normals of a box [min_y:max_y+1, min_x:max_x+1] of the image, (0, 0, 0) = unknown."""
    with open(path, "rb") as f:
        try:
            d = _ArraysOnly(f, encoding="latin1").load()  # latin1: numpy arrays pickled by Python 2
        except pickle.UnpicklingError as exc:
            raise ValueError(f"not a readable pickle ({_one_line(exc)})") from None
    keys = ("min_x", "max_x", "min_y", "max_y", "normal")
    if not isinstance(d, dict) or not all(k in d for k in keys):
        raise ValueError(f"expected a dict with {', '.join(keys)}")
    x0, x1, y0, y1 = (int(d[k]) for k in keys[:4])
    h, w = shape
    if not (0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h):
        raise ValueError(f"box x {x0}..{x1}, y {y0}..{y1} is not inside the {w} x {h} image")
    roi = np.asarray(d["normal"], np.float32)
    if roi.shape != (y1 - y0 + 1, x1 - x0 + 1, 3):
        raise ValueError(f"normal is {list(roi.shape)}, expected [{y1 - y0 + 1}, {x1 - x0 + 1}, 3] for the box")
    full = np.zeros((h, w, 3), np.float32)
    full[y0:y1 + 1, x0:x1 + 1] = roi * OASIS_TO_DSINE
    return _dsine_normals(full, (full != 0).any(-1))


def _read_intrins(path: Path, shape) -> np.ndarray:
    k = np.load(path, allow_pickle=False)
    if k.shape != (3, 3):
        raise ValueError(f"expected a 3 x 3 camera matrix, got {list(k.shape)}")
    return k.astype(np.float32)


DECODERS = {
    "png16": _read_png16,
    "png8": _read_png8,
    "npy": _read_npy,
    "raw_float32": _read_raw_float32,
    "hypersim_distance": _read_hypersim_distance,
    "hypersim_normal": _read_hypersim_normal,
    "hypersim_semantic": _read_hypersim_semantic,
    "cityscapes_disparity": _read_cityscapes_disparity,
    "dsine_png8": lambda path, shape: _read_dsine_png(path, np.uint8),
    "dsine_png16": lambda path, shape: _read_dsine_png(path, np.uint16),
    "dsine_exr": _read_dsine_exr,
    "dsine_pkl": _read_oasis_pkl,
    "intrins": _read_intrins,
}
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, TypeError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Finding the samples of a split
# --------------------------------------------------------------------------------------------------
def data_root(name: str) -> Path:
    """The default folder of dataset ``name``: ``$GENPERCEPT_DATA/<folder>``."""
    spec = get_spec(name)
    value = os.environ.get(DATA_ENV)
    if not value:
        raise DatasetError(f"{DATA_ENV} is not set: point it at the folder holding the real datasets, "
                           f"or pass root= (expected {spec.title} in $GENPERCEPT_DATA/{spec.folder}; "
                           "see data/README.md)")
    return Path(value).expanduser() / spec.folder


def get_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return SPECS[name]


def _expected(spec: DatasetSpec) -> str:
    return f"expected {spec.title}: {spec.layout} (see data/README.md)"


def _read_list(spec: DatasetSpec, path: Path) -> list[tuple[str, str | None]]:
    """Lines 'rgb [label ...]' (Marigold/BTS filename lists); rows with label 'None' are skipped."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such split file; {_expected(spec)}")
    samples = []
    for line in path.read_text().splitlines():
        cols = line.split()
        if not cols or cols[0].startswith("#"):
            continue
        if len(cols) > 1 and cols[1] == "None":
            continue
        samples.append((cols[0], cols[1] if len(cols) > 1 else None))
    return samples


def _read_hypersim_csv(spec: DatasetSpec, path: Path, split: str, base: Path) -> list[tuple[str, None]]:
    """Hypersim's official split csv; only rows of scenes present on disk (downloads are per scene)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such split file (use split='all' to take every frame found); "
                           f"{_expected(spec)}")
    samples = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("split_partition_name") != split or row.get("included_in_public_release") != "True":
                continue
            if not (base / row["scene_name"]).is_dir():
                continue
            values = {k: int(v) if v.isdigit() else v for k, v in row.items()}
            samples.append((spec.row.format(**values), None))
    return samples


def _list_samples(spec: DatasetSpec, base: Path, split: str, split_file) -> list[tuple[str, str | None]]:
    """(RGB path, first label path or None) relative to ``base``, in a stable order."""
    if split_file is not None:
        return _read_list(spec, Path(split_file))
    source = spec.splits[split]
    kind, _, arg = source.partition(":")
    if kind == "glob":
        return [(p.relative_to(base).as_posix(), None) for p in sorted(base.glob(arg))]
    if kind == "list":
        return _read_list(spec, base / arg)
    if kind == "csv":
        return _read_hypersim_csv(spec, base / arg, split, base)
    raise ValueError(f"unknown split source {source!r}")  # a bug in SPECS, not in the data


# --------------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------------
def box_mask(crop: Crop, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool, True inside the evaluation box (int() of the scaled bounds, as the reference code)."""
    h, w = shape
    ref_h, ref_w = crop.ref
    mask = np.zeros((h, w), dtype=bool)
    mask[int(crop.top * h / ref_h):int(crop.bottom * h / ref_h),
         int(crop.left * w / ref_w):int(crop.right * w / ref_w)] = True
    return mask


def _bottom_centre_crop(item: dict, size: tuple[int, int], path: str) -> dict:
    """KITTI benchmark crop: the bottom ``size`` rows, centred columns, of every [..., H, W] array."""
    h, w = item["rgb"].shape[-2:]
    ch, cw = size
    if h < ch or w < cw:
        raise DatasetError(f"{path}: {w} x {h} image is smaller than the {cw} x {ch} KITTI benchmark crop "
                           "(pass crops=False to read it uncropped)")
    top, left = h - ch, int((w - cw) / 2)
    return {k: v[..., top:top + ch, left:left + cw] if isinstance(v, np.ndarray) and v.ndim >= 2 else v
            for k, v in item.items()}


# --------------------------------------------------------------------------------------------------
# The datasets
# --------------------------------------------------------------------------------------------------
def read_rgb(path: Path) -> np.ndarray:
    """An image file -> [3, H, W] float32 in [0, 1] (a one-line DatasetError if unreadable)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    except _READ_ERRORS as exc:
        raise DatasetError(f"{path}: cannot read the image ({_one_line(exc)})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / 255.0  # [3, H, W]


class FileDataset:
    """One split of a dataset whose labels are files next to the RGB files (every set but COCO)."""

    def __init__(self, spec: DatasetSpec, root: Path, split: str, split_file=None, crops: bool = True):
        self.spec, self.root, self.split, self.crops = spec, root, split, crops
        self.base = root / spec.base
        self.samples = _list_samples(spec, self.base, split, split_file)
        if not self.samples:
            where = split_file or spec.splits[split]
            raise DatasetError(f"{self.base}: no samples for split {split!r} ({where}); {_expected(spec)}")
        self.depth_range = spec.depth_range

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.spec.name!r}, split={self.split!r}, n={len(self)}, root={self.root})"

    def _label_path(self, label: Label, index: int, rgb_rel: str) -> Path:
        listed = self.samples[index][1]
        if listed is not None and label is self.spec.labels[0]:
            return self.base / listed
        if label.sub is None:
            raise DatasetError(f"{self.base / rgb_rel}: no {label.key} file listed; {_expected(self.spec)}")
        rel, n = re.subn(label.sub[0], label.sub[1], rgb_rel)
        if n != 1:
            raise DatasetError(f"{self.base / rgb_rel}: name does not fit the layout; {_expected(self.spec)}")
        return self.base / rel

    def _read_label(self, label: Label, path: Path, shape: tuple[int, int]) -> np.ndarray:
        try:
            raw = DECODERS[label.fmt](path, shape)
        except _READ_ERRORS as exc:
            raise DatasetError(f"{path}: cannot read {label.key} ({_one_line(exc)}); "
                               f"{_expected(self.spec)}") from None
        if label.per_pixel and tuple(raw.shape[-2:]) != tuple(shape):
            raise DatasetError(f"{path}: {label.key} is {raw.shape[-1]} x {raw.shape[-2]} but the image is "
                               f"{shape[1]} x {shape[0]}; {_expected(self.spec)}")
        return self._convert(label, raw)

    @staticmethod
    def _convert(label: Label, raw: np.ndarray) -> np.ndarray:
        """Stored values -> the item's units."""
        if label.key == "depth":
            bad = ~np.isfinite(raw) | np.isin(raw, label.invalid)              # [H, W]
            return np.where(bad, 0.0, raw.astype(np.float64) * label.scale).astype(np.float32)
        if label.key == "valid":
            return np.nan_to_num(raw) > 0                                     # [H, W] bool
        if label.key in ("normal", "semantic", "intrins"):
            return raw                                                        # [3, H, W] / [H, W] int64 / [3, 3]
        return np.clip(raw.astype(np.float32) * label.scale, 0.0, 1.0)       # [H, W] in [0, 1]

    def _valid(self, item: dict) -> np.ndarray:
        """Marigold's rule: min < depth < max; a shipped mask (DIODE) replaces the range, as Marigold does."""
        depth = item["depth"]
        if "valid" in item:
            return item["valid"] & (depth > 0)
        lo, hi = self.depth_range
        return (depth > lo) & (depth < hi)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        rgb_rel = self.samples[index][0]
        rgb_path = self.base / rgb_rel
        if not rgb_path.is_file():
            raise DatasetError(f"{rgb_path}: no such file; {_expected(self.spec)}")
        # 1. image
        item = {"rgb": read_rgb(rgb_path), "path": str(rgb_path), "name": rgb_rel}
        shape = item["rgb"].shape[-2:]
        # 2. labels
        for label in self.spec.labels:
            path = self._label_path(label, index, rgb_rel)
            if not path.is_file():
                if label.optional:
                    continue
                raise DatasetError(f"{path}: no such file; {_expected(self.spec)}")
            item[label.key] = self._read_label(label, path, shape)
        if "depth" in item:
            item["valid"] = self._valid(item)
        elif "normal" in item:  # a normal benchmark: its decoder zeroed what the dataset marks unknown
            item["valid"] = np.abs(item["normal"]).sum(0) > 0                 # [H, W]
        # 3. crops: KITTI benchmark crop of every array, then the evaluation box on valid
        if self.crops and self.spec.image_crop:
            item = _bottom_centre_crop(item, self.spec.image_crop, str(rgb_path))
        if self.crops and self.spec.valid_crop and "valid" in item:
            item["valid"] = item["valid"] & box_mask(self.spec.valid_crop, item["valid"].shape)
        return item


class CocoKeypoints:
    """COCO person keypoints: one item per image with at least one non-crowd person annotation."""

    def __init__(self, spec: DatasetSpec, root: Path, split: str):
        from pycocotools.coco import COCO

        self.spec, self.root, self.split = spec, root, split
        self.annotation_file = root / spec.splits[split].partition(":")[2]
        if not self.annotation_file.is_file():
            raise DatasetError(f"{self.annotation_file}: no such file; {_expected(spec)}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(self.annotation_file))
        except (*_READ_ERRORS, AssertionError) as exc:
            raise DatasetError(f"{self.annotation_file}: cannot read COCO annotations ({_one_line(exc)}); "
                               f"{_expected(spec)}") from None
        person = self.coco.loadCats(1)[0] if 1 in self.coco.cats else {}
        self.keypoint_names = tuple(person.get("keypoints", ()))
        self.skeleton = tuple(tuple(pair) for pair in person.get("skeleton", ()))
        self.image_ids = [i for i in sorted(self.coco.getImgIds()) if self.annotations(i)]
        if not self.image_ids:
            raise DatasetError(f"{self.annotation_file}: no images with person annotations; "
                               f"{_expected(spec)}")

    def annotations(self, image_id: int) -> list[dict]:
        """The image's non-crowd person annotations (COCO dicts: bbox xywh, keypoints, num_keypoints, ...)."""
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], catIds=[1], iscrowd=False))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return f"CocoKeypoints(split={self.split!r}, n={len(self)}, root={self.root})"

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image_id = self.image_ids[index]
        info = self.coco.loadImgs([image_id])[0]
        path = self.root / self.split / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{path}: no such file; {_expected(self.spec)}")
        anns = self.annotations(image_id)
        keypoints = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)  # [N, 17, 3]
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)               # [N, 4] xywh
        return {
            "rgb": read_rgb(path),  # [3, H, W]
            "keypoints": keypoints,
            "boxes": boxes,
            "annotation_ids": [a["id"] for a in anns],
            "areas": np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], np.float32),  # [N]
            "image_id": image_id,
            "path": str(path),
            "name": f"{self.split}/{info['file_name']}",
        }


def open_dataset(name: str, root=None, split: str | None = None, *, split_file=None, crops: bool = True):
    """One split of a real dataset as a sequence of sample dicts (keys: module docstring).

    name: one of ``DATASETS``. root: the dataset's folder (default ``$GENPERCEPT_DATA/<folder>``).
    split: one of the spec's splits (default: the one the paper evaluates or trains on).
    split_file: a filename list ('rgb [label ...]' per line, e.g. Marigold's data_split lists) instead of
    the split's own enumeration; the file is absolute or relative to ``root``, the paths in it relative
    to ``root / spec.base`` (``<root>/nyu_labeled_extracted`` for NYUv2, ``<root>/val`` for DIODE).
    crops: apply the standard crops (KITTI benchmark crop of images, Eigen evaluation box on ``valid``).
    """
    spec = get_spec(name)
    root = Path(root).expanduser() if root is not None else data_root(name)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; {_expected(spec)}")
    split = split or spec.default_split
    if split not in spec.splits:
        raise DatasetError(f"unknown split {split!r} for {name}: expected one of {', '.join(spec.splits)}")
    if spec.task == "pose":
        return CocoKeypoints(spec, root, split)
    if split_file is not None:
        split_file = Path(split_file) if Path(split_file).is_absolute() else root / split_file
    return FileDataset(spec, root, split, split_file, crops)


@functools.lru_cache(maxsize=16)
def open_listed(name: str, root: str | None = None, split: str | None = None):
    """``open_dataset`` once per process for each (name, root, split): listing a benchmark or loading COCO's
    annotation file is paid once however many models and reference rows read it."""
    return open_dataset(name, root=root, split=split)


