"""Tiny copies of the real datasets, in the formats and folder layouts they ship in, for the reader tests.

Each ``make_*`` writes a handful of small files under ``root`` and returns what the test needs to check
(the ground truth the files encode). Sizes are a few pixels, except where a crop needs the real size.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

COLOR = (200, 100, 50)  # the solid colour of every fixture RGB image


def write_rgb(path: Path, height: int, width: int, color=COLOR) -> Path:
    """A solid-colour RGB image (jpg or png by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty((height, width, 3), np.uint8)
    arr[:] = color
    Image.fromarray(arr).save(path)
    return path


def write_png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit single-channel PNG (Pillow >= 12 picks mode I;16 from the uint16 dtype)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16)).save(path)
    return path


def write_png8(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint8)).save(path)
    return path


def write_hdf5(path: Path, array: np.ndarray) -> Path:
    """Hypersim's HDF5: one dataset called "dataset"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=array)
    return path


# --------------------------------------------------------------------------------------------------
def plane_distance(height: int, width: int, z: float, fov_deg: float = 60.0) -> np.ndarray:
    """Distance to the camera centre of a fronto-parallel plane at depth z: z * |(x, y, 1)|, [H, W]."""
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    x = (np.arange(width) + 0.5 - width / 2) / f
    y = (np.arange(height) + 0.5 - height / 2) / f
    xx, yy = np.meshgrid(x, y)
    return z * np.sqrt(1 + xx**2 + yy**2)


def make_hypersim(root: Path, height: int = 6, width: int = 8) -> dict:
    """Scene ai_001_001, cam_00: frame 0 a plane at 2 m (float32, normals), frame 1 at 3 m (float16, nan)."""
    images = root / "ai_001_001" / "images"
    for frame in (0, 1):
        write_rgb(images / "scene_cam_00_final_preview" / f"frame.{frame:04d}.tonemap.jpg", height, width)
    geometry = images / "scene_cam_00_geometry_hdf5"
    near = plane_distance(height, width, 2.0).astype(np.float32)  # [H, W] distance to the camera centre
    write_hdf5(geometry / "frame.0000.depth_meters.hdf5", near)
    far = plane_distance(height, width, 3.0).astype(np.float16)
    far[0, 0] = np.nan  # Hypersim marks pixels without geometry with nan
    write_hdf5(geometry / "frame.0001.depth_meters.hdf5", far)
    normal = np.zeros((height, width, 3), np.float16)
    normal[..., 2] = 1.0       # facing the camera (z towards the viewer)
    normal[0, :, 2] = -2.0     # back-facing and not unit: the reader flips and normalises
    normal[1, 0] = 0.0         # unknown
    write_hdf5(geometry / "frame.0000.normal_cam.hdf5", normal)
    semantic = np.full((height, width), 1, np.int16)  # NYU40 "wall"
    semantic[-1] = 2                                  # "floor"
    semantic[0, 0] = -1                               # unlabelled
    write_hdf5(geometry / "frame.0000.semantic.hdf5", semantic)
    rows = [
        "scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name",
        "ai_001_001,cam_00,0,True,,train",
        "ai_001_001,cam_00,1,True,,val",
        "ai_999_999,cam_00,0,True,,train",  # a scene not downloaded: skipped
        "ai_001_001,cam_01,0,False,,train",  # not in the public release: skipped
    ]
    (root / "metadata_images_split_scene_v1.csv").write_text("\n".join(rows) + "\n")
    return {"shape": (height, width), "z": (2.0, 3.0)}


def make_vkitti(root: Path, height: int = 4, width: int = 6) -> dict:
    """Scene01/clone, Camera_0, one frame; depth in centimetres with a sky pixel (65535)."""
    frames = root / "Scene01" / "clone" / "frames"
    write_rgb(frames / "rgb" / "Camera_0" / "rgb_00000.jpg", height, width)
    cm = np.full((height, width), 1234, np.uint16)  # 12.34 m
    cm[0, 0] = 65535  # sky
    cm[0, 1] = 9000   # 90 m: measured, beyond the 80 m range
    write_png16(frames / "depth" / "Camera_0" / "depth_00000.png", cm)
    return {"shape": (height, width)}


def make_kitti(root: Path, height: int = 375, width: int = 1242) -> dict:
    """Two Eigen-split frames (one without ground truth: 'None'); depth = value / 256, 0 = no lidar point."""
    rgb_rel = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    depth_rel = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    write_rgb(root / rgb_rel, height, width)
    raw = np.zeros((height, width), np.uint16)
    raw[height // 2:, :] = 256 * 10  # 10 m on the lower half
    raw[-1, -1] = 256 * 100           # 100 m: beyond 80 m
    write_png16(root / depth_rel, raw)
    lines = [
        f"{rgb_rel} {depth_rel} 721.5377",
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377",
    ]
    (root / "eigen_test_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return {"shape": (height, width), "rgb": rgb_rel, "depth": depth_rel}


def make_mm_depth(rgb: Path, depth: Path, height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB image and a uint16 millimetre depth PNG (NYUv2, ScanNet): 1.5 m, one hole, one 12 m pixel."""
    write_rgb(rgb, height, width)
    mm = np.full((height, width), 1500, np.uint16)
    mm[10, 10] = 0       # no measurement
    mm[20, 20] = 12000   # 12 m: beyond the 10 m range
    write_png16(depth, mm)
    return mm


def make_nyu(root: Path, height: int = 48, width: int = 64) -> dict:
    scene = root / "nyu_labeled_extracted" / "test" / "kitchen_0004"
    mm = make_mm_depth(scene / "rgb_0001.png", scene / "depth_0001.png", height, width)
    return {"shape": (height, width), "mm": mm}


def make_scannet(root: Path, height: int = 48, width: int = 64) -> dict:
    scene = root / "scene0406_02"
    mm = make_mm_depth(scene / "color" / "000300.jpg", scene / "depth" / "000300.png", height, width)
    return {"shape": (height, width), "mm": mm}


def make_diode(root: Path, height: int = 4, width: int = 5) -> dict:
    """One indoor scan: NAME.png + NAME_depth.npy [H, W, 1] float32 metres + NAME_depth_mask.npy."""
    scan = root / "val" / "indoors" / "scene_00019" / "scan_00183"
    name = "00019_00183_indoors_000_010"
    write_rgb(scan / f"{name}.png", height, width)
    depth = np.full((height, width, 1), 4.25, np.float32)
    depth[0, 0, 0] = 0.0
    mask = np.ones((height, width), np.float32)
    mask[0, :] = 0.0  # the whole first row unmeasured
    np.save(scan / f"{name}_depth.npy", depth)
    np.save(scan / f"{name}_depth_mask.npy", mask)
    rel = f"indoors/scene_00019/scan_00183/{name}.png"
    return {"shape": (height, width), "mask": mask.astype(bool), "name": rel}


def make_eth3d(root: Path, height: int = 4, width: int = 6, truncate: bool = False) -> dict:
    """One courtyard image: JPG + raw little-endian float32 depth (same name, .JPG), inf = no depth."""
    write_rgb(root / "rgb" / "courtyard" / "images" / "dslr_images" / "DSC_0286.JPG", height, width)
    depth = np.full((height, width), 7.5, "<f4")
    depth[1, 2] = np.inf
    raw = root / "depth/courtyard_dslr_depth/courtyard/ground_truth_depth/dslr_images/DSC_0286.JPG"
    raw.parent.mkdir(parents=True, exist_ok=True)
    data = depth.tobytes()
    raw.write_bytes(data[: len(data) // 2] if truncate else data)
    return {"shape": (height, width), "raw": raw}


def make_dis5k(root: Path, height: int = 6, width: int = 7, splits=("DIS-VD", "DIS-TE1")) -> dict:
    mask = np.zeros((height, width), np.uint8)
    mask[2:5, 3:6] = 255
    mask[0, 0] = 128  # a soft edge pixel
    for split in splits:
        write_rgb(root / split / "im" / "1#Accessories#1#Bag#1.jpg", height, width)
        write_png8(root / split / "gt" / "1#Accessories#1#Bag#1.png", mask)
    return {"shape": (height, width), "mask": mask}


def make_p3m(root: Path, height: int = 5, width: int = 4, train: bool = False) -> dict:
    alpha = np.linspace(0, 255, height * width).reshape(height, width).astype(np.uint8)
    if train:
        write_rgb(root / "train" / "blurred_image" / "p_1001.jpg", height, width)
        write_png8(root / "train" / "mask" / "p_1001.png", alpha)
    np_dir = root / "validation" / "P3M-500-NP"
    write_rgb(np_dir / "original_image" / "p_0001.jpg", height, width)
    write_png8(np_dir / "mask" / "p_0001.png", alpha)
    write_png8(np_dir / "trimap" / "p_0001.png", np.full((height, width), 128, np.uint8))
    p_dir = root / "validation" / "P3M-500-P"
    write_rgb(p_dir / "blurred_image" / "p_0002.jpg", height, width)
    write_png8(p_dir / "mask" / "p_0002.png", alpha)  # no trimap: optional
    return {"shape": (height, width), "alpha": alpha}


def make_coco(root: Path, splits=("val2017",), keypoints: list[float] | None = None) -> dict:
    """val2017 (and the other ``splits``, same content) with 3 images: two persons on image 1, a crowd-only
    image 2, no annotation on image 3."""
    sizes = {1: (10, 12), 2: (8, 8), 3: (8, 8)}
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i, (h, w) in sizes.items()]
    for img in images:
        for split in splits:
            write_rgb(root / split / img["file_name"], img["height"], img["width"])
    kp = [float(v) for v in range(51)] if keypoints is None else list(keypoints)
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 3, 4], "area": 12.0,
         "num_keypoints": 17, "keypoints": kp},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 2, 2], "area": 4.0,
         "num_keypoints": 0, "keypoints": [0] * 51},
        {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 8, 8], "area": 64.0,
         "num_keypoints": 0, "keypoints": [0] * 51, "segmentation": {"counts": [64], "size": [8, 8]}},
    ]
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle"]
    categories = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": names,
                   "skeleton": [[16, 14], [14, 12]]}]
    for split in splits:
        ann = root / "annotations" / f"person_keypoints_{split}.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    ann = root / "annotations" / f"person_keypoints_{splits[0]}.json"
    return {"keypoints": np.array(kp, np.float32).reshape(17, 3), "annotation_file": ann}


def make_taskonomy(root: Path, height: int = 8, width: int = 8) -> dict:
    """Building allensville, one view: depth 2.5 m (uint16, 1/512 m) with one 65535 'no depth' pixel."""
    building = root / "allensville"
    write_rgb(building / "rgb" / "point_0_view_1_domain_rgb.png", height, width)
    raw = np.full((height, width), int(2.5 * 512), np.uint16)
    raw[0, 0] = 65535
    write_png16(building / "depth_zbuffer" / "point_0_view_1_domain_depth_zbuffer.png", raw)
    return {"shape": (height, width), "depth": 2.5}


def make_cityscapes(root: Path, height: int = 8, width: int = 16, split: str = "train") -> dict:
    """One aachen frame: disparity p = 256 d + 1 for depth 10 m (baseline 0.2 m, fx 2000 px), p = 0 and p = 1
    (disparity 0) pixels without depth, and the camera json beside it."""
    name = "aachen_000000_000019"
    write_rgb(root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png", height, width)
    baseline, fx, depth = 0.2, 2000.0, 10.0
    raw = np.full((height, width), int(round(256 * baseline * fx / depth + 1)), np.uint16)  # 40 px -> 10241
    raw[0, 0] = 0
    raw[0, 1] = 1
    write_png16(root / "disparity" / split / "aachen" / f"{name}_disparity.png", raw)
    camera = root / "camera" / split / "aachen" / f"{name}_camera.json"
    camera.parent.mkdir(parents=True, exist_ok=True)
    camera.write_text(json.dumps({"extrinsic": {"baseline": baseline}, "intrinsic": {"fx": fx, "fy": fx}}))
    return {"shape": (height, width), "depth": depth, "camera": camera}


# --------------------------------------------------------------------------------------------------
# DSINE's normal benchmarks (dsine_eval/<set>/<scene>/NAME_img.* + NAME_normal.* + NAME_intrins.npy)
# --------------------------------------------------------------------------------------------------
# (set, scene folder, image name, rgb extension, normal format) as DSINE's split files name them
DSINE_FILES = {
    "nyuv2": ("test", "000001", "png", "png8"),
    "scannet": ("scene0532_00", "000000", "png", "png8"),
    "ibims": ("ibims", "corridor_01", "png", "exr"),
    "sintel": ("alley_1", "frame_0001", "png", "exr"),
    "vkitti": ("Scene01", "000000", "jpg", "png16"),
    "oasis": ("val", "100277_DT", "png", "pkl"),
}


def room_normals(height: int, width: int) -> np.ndarray:
    """[H, W, 3] normals in OUR axes (x right, y up, z to the viewer): the left half a wall facing right, the
    right half a wall facing the camera, the bottom row the floor (facing up)."""
    n = np.zeros((height, width, 3), np.float32)
    n[:, : width // 2, 0] = 1.0
    n[:, width // 2:, 2] = 1.0
    n[-1] = (0.0, 1.0, 0.0)
    return n


def write_rgb16(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit 3-channel PNG (cv2: Pillow cannot write one), rgb [H, W, 3] uint16."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def write_exr(path: Path, rgb: np.ndarray) -> Path:
    """A float32 3-channel OpenEXR file, rgb [H, W, 3] (cv2, as DSINE wrote them)."""
    import os

    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32))
    return path


def make_dsine(root: Path, key: str, height: int = 6, width: int = 8) -> dict:
    """One image of DSINE's benchmark ``key`` under ``root`` (= dsine_eval/<key>), its normals stored as DSINE
    stores them: x LEFT, y up, z to the viewer, in the set's format. Pixel (0, 0) is unknown in every format
    (all-zero); EXR sets also get a short vector (|n| = 0.3, unknown by DSINE's |n| > 0.5); OASIS labels only
    the box rows 1.., columns 1..W-2 (the rest unknown). Returns our-axes ground truth and its valid mask."""
    scene, name, ext, fmt = DSINE_FILES[key]
    folder = root / scene
    write_rgb(folder / f"{name}_img.{ext}", height, width)
    np.save(folder / f"{name}_intrins.npy", np.array([[500.0, 0, width / 2], [0, 500.0, height / 2], [0, 0, 1]]))
    ours = room_normals(height, width)              # [H, W, 3]
    dsine = ours * np.array([-1.0, 1.0, 1.0])       # DSINE's x points left (utils/d2n/cross.py)
    valid = np.ones((height, width), bool)
    valid[0, 0] = False
    dsine[0, 0] = 0.0
    if fmt in ("png8", "png16"):
        top = 255 if fmt == "png8" else 65535
        v = np.round((dsine + 1.0) / 2.0 * top)
        v[0, 0] = 0                                  # all channels 0: unknown
        if fmt == "png8":
            write_png8(folder / f"{name}_normal.png", v)
        else:
            write_rgb16(folder / f"{name}_normal.png", v.astype(np.uint16))
    elif fmt == "exr":
        dsine[0, 1] *= 0.3                           # |n| = 0.3 <= 0.5: unknown
        valid[0, 1] = False
        write_exr(folder / f"{name}_normal.exr", dsine)
    else:  # OASIS: a box of the image, in OASIS's own axes (DSINE negates x and y to reach its own)
        y0, y1, x0, x1 = 0, height - 1, 1, width - 2
        roi = dsine[y0:y1 + 1, x0:x1 + 1] * np.array([-1.0, -1.0, 1.0])
        box = np.zeros((height, width), bool)
        box[y0:y1 + 1, x0:x1 + 1] = True
        roi[0, 0] = 0.0                              # an unknown pixel inside the box
        valid &= box
        valid[y0, x0] = False
        with open(folder / f"{name}_normal.pkl", "wb") as f:
            pickle.dump({"min_x": x0, "max_x": x1, "min_y": y0, "max_y": y1, "normal": roi.astype(np.float32)}, f)
    normal = np.where(valid[..., None], ours, 0.0).transpose(2, 0, 1)
    return {"shape": (height, width), "normal": normal.astype(np.float32), "valid": valid,
            "name": f"{scene}/{name}_img.{ext}"}


def make_dsine_eval(root: Path, height: int = 6, width: int = 8) -> dict:
    """All six benchmarks under ``root`` (= dsine_eval): {reader name: its folder}."""
    for key in DSINE_FILES:
        make_dsine(root / key, key, height, width)
    return {f"dsine_{key}": root / key for key in DSINE_FILES}
