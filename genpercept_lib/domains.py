"""The toy world's description as data: its domains (the toy analogues of the paper's datasets), classes, label
keys and rendering constants. Below the tasks (which name domains and classes) and the renderer
(``data/toyworld``), which both read it."""

from __future__ import annotations

import numbers
import zlib

import numpy as np

# --- defaults --------------------------------------------------------------------------------------------
VERSION = 2              # bump whenever a change alters rendered pixels or labels (caches key on it)
DEFAULT_SIZE = 64
POOL_KEYS = ("rgb", "depth", "valid", "normal")  # what a rendered pool holds unless a task asks for more
MIN_SIZE = 16
SUPERSAMPLE = 4          # foreground boxes: SUPERSAMPLE x SUPERSAMPLE sub-rays per pixel for alpha
VIS_TOLERANCE = 0.15     # m: a keypoint is visible (v = 2) unless a surface lies this much in front of it
EPS = 1e-6

CLASSES = [
    "sky", "floor", "wall", "ceiling", "road", "sidewalk", "building", "vegetation",
    "pole", "wire", "fence", "vehicle", "furniture", "object", "person",
]
_CLS = {name: i for i, name in enumerate(CLASSES)}
# [C, 3] the classes' colours: the sample grid's, and the palette of the toy segmentation task (``seg_toy``).
# Every channel is 0, 0.5 or 1, so two classes are at least 0.5 apart in RGB (NYU40's published colours: 0.04):
# a tiny VAE's colour error must reach 0.25 before a pixel decodes to the wrong class. None is black (unlabelled).
# Where a colour sits matters too: a VAE (or an unsure model) blends the colours of neighbouring classes, and a
# blend that lands on a third class's colour decodes to that class (with a grid palette, the VAE round trip of
# indoor labels painted sky, road and sidewalk along every furniture and ceiling edge). So the eight classes of
# the indoor training domain (toy Hypersim: floor, wall, ceiling, vegetation, wire, furniture, object, person)
# have red 0 or 0.5 and the seven outdoor-only classes red 1: no blend of indoor classes is nearer an outdoor
# one. Positions inside each half: scripts/toy_palette.py (a seeded search on training labels only, scored by
# ``segmentation.blend_miou``: an 8x block blur plus colour noise; it put the large indoor classes, floor, wall,
# ceiling, furniture and object, at red 0, a full unit from every outdoor colour; notebook 10 shows the effect).
SEMANTIC_COLORS = np.array([
    [1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [0.0, 1.0, 0.5], [0.0, 1.0, 0.0], [1.0, 0.5, 1.0],  # sky floor wall ceil. road
    [1.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.5], [0.5, 0.5, 0.5],  # sidew. build. veg. pole wire
    [1.0, 1.0, 0.5], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.5], [0.5, 0.5, 1.0],  # fence veh. furn. obj. person
])
# the grid palette used before (every class on the 0 / 0.5 / 1 grid, no regard for blends): notebook 10 compares
GRID_COLORS_V1 = np.array([
    [0.5, 1.0, 1.0], [0.5, 0.5, 0.0], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5],
    [1.0, 0.5, 1.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [1.0, 1.0, 0.0], [1.0, 0.5, 0.0],
    [0.5, 0.0, 0.5], [0.0, 0.0, 0.5], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0],
])
INDOOR_CLASSES = ("floor", "wall", "ceiling", "vegetation", "wire", "furniture", "object", "person")

KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
SKELETON = [  # COCO limbs, 0-based keypoint indices
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]

_TEX = {"plain": 0, "checker": 1, "stripes": 2, "noise": 3, "road": 4, "windows": 5, "bricks": 6}
_KIND = {"plane": 0, "sphere": 1, "box": 2, "capsule": 3}

# --- domains: the toy analogues of the paper's datasets, as small data -----------------------------------
_INDOOR_LIGHT = dict(elev=(40, 75), color=(1.0, 0.97, 0.9), ambient=(0.35, 0.5), strength=(0.6, 0.85))
_ROOM_FG = dict(chair=0.25, table=0.15, lamp=0.15, plant=0.15, stool=0.1, person=0.2)
_OUTDOOR_FG = dict(fence=0.3, person=0.3, tree=0.2, streetlamp=0.2)

_STYLES: dict[str, dict] = {
    "toy_hypersim": dict(
        analogue="Hypersim", split="train", scenes="indoor rooms, textured walls, bright",
        kind="room", hfov=(55, 65), depth_range=(0.1, 25.0),
        room=((4.0, 8.0), (4.5, 9.0), (2.6, 3.4)), cam_h=(1.2, 1.7), furniture=(2, 4), clutter=(1, 3),
        people=(0, 2), wall=((0, 1), (0.08, 0.35), (0.65, 0.95)),
        wall_tex=("plain", "stripes", "checker", "noise"), floor=((0.04, 0.12), (0.3, 0.6), (0.35, 0.75)),
        floor_tex=("stripes", "checker"), light=_INDOOR_LIGHT, exposure=1.0, blur=0.0, noise=0.0, fg=_ROOM_FG,
    ),
    "toy_vkitti": dict(
        analogue="Virtual KITTI 2", split="train", scenes="city streets, saturated colours",
        kind="street", hfov=(75, 85), depth_range=(0.5, 80.0),
        road_hw=(3.5, 6.0), sidewalk=(2.0, 4.0), cam_h=(1.45, 1.65), building_h=(8.0, 28.0), gap=0.2,
        trees=0.3, cars=(2, 6), people=(0, 3), building=((0, 1), (0.3, 0.6), (0.45, 0.85)),
        building_tex=("windows",), sky=((0.30, 0.55, 0.95), (0.80, 0.88, 1.0)), fog=350.0,
        light=dict(elev=(30, 60), color=(1.0, 0.98, 0.92), ambient=(0.4, 0.5), strength=(0.6, 0.8)),
        exposure=1.0, blur=0.0, noise=0.0, fg=_OUTDOOR_FG,
    ),
    "toy_kitti": dict(
        analogue="KITTI", split="eval", scenes="residential streets, wide FOV, low sun, far depth",
        kind="street", hfov=(85, 95), depth_range=(0.5, 80.0),
        road_hw=(3.0, 4.5), sidewalk=(1.5, 3.0), cam_h=(1.6, 1.75), building_h=(4.0, 10.0), gap=0.45,
        trees=0.7, cars=(3, 8), people=(0, 2), building=((0.03, 0.15), (0.1, 0.35), (0.45, 0.8)),
        building_tex=("windows", "bricks"), sky=((0.55, 0.65, 0.8), (0.9, 0.9, 0.92)), fog=220.0,
        light=dict(elev=(12, 30), color=(1.0, 0.92, 0.8), ambient=(0.35, 0.45), strength=(0.7, 0.9)),
        exposure=1.05, blur=0.0, noise=0.01, fg=_OUTDOOR_FG,
    ),
    "toy_nyu": dict(
        analogue="NYUv2", split="eval", scenes="small indoor rooms, warm light, plain walls",
        kind="room", hfov=(58, 64), depth_range=(0.1, 10.0),
        room=((3.0, 5.0), (3.0, 5.5), (2.4, 2.8)), cam_h=(1.0, 1.5), furniture=(2, 4), clutter=(2, 4),
        people=(0, 1), wall=((0.07, 0.14), (0.1, 0.3), (0.55, 0.8)), wall_tex=("plain", "noise"),
        floor=((0, 1), (0.2, 0.5), (0.3, 0.55)), floor_tex=("noise",),
        light=dict(elev=(50, 80), color=(1.0, 0.88, 0.72), ambient=(0.3, 0.45), strength=(0.5, 0.75)),
        exposure=0.95, blur=0.0, noise=0.0, fg=_ROOM_FG,
    ),
    "toy_scannet": dict(
        analogue="ScanNet", split="eval", scenes="cluttered rooms, dim bluish light, motion blur",
        kind="room", hfov=(56, 62), depth_range=(0.1, 10.0),
        room=((3.5, 6.5), (3.5, 6.5), (2.5, 3.0)), cam_h=(1.1, 1.6), furniture=(3, 5), clutter=(5, 9),
        people=(0, 1), wall=((0.5, 0.65), (0.05, 0.2), (0.5, 0.75)), wall_tex=("plain", "noise"),
        floor=((0, 1), (0.0, 0.15), (0.35, 0.6)), floor_tex=("checker", "noise"),
        light=dict(elev=(55, 85), color=(0.85, 0.9, 1.0), ambient=(0.25, 0.35), strength=(0.45, 0.65)),
        exposure=0.85, blur=0.9, noise=0.02, fg=_ROOM_FG,
    ),
    "toy_diode": dict(
        analogue="DIODE", split="eval", scenes="half large indoor halls, half open plazas, long range",
        kind="diode", hfov=(60, 70), depth_range=(0.3, 150.0),
        room=((6.0, 14.0), (6.0, 14.0), (3.0, 5.0)), cam_h=(1.3, 1.8), furniture=(2, 5), clutter=(2, 4),
        people=(0, 3), wall=((0, 1), (0.0, 0.15), (0.6, 0.9)), wall_tex=("plain", "noise", "bricks"),
        floor=((0, 1), (0.0, 0.2), (0.4, 0.7)), floor_tex=("checker", "noise"),
        building=((0, 1), (0.0, 0.2), (0.5, 0.85)), building_tex=("windows", "plain"),
        sky=((0.4, 0.6, 0.9), (0.85, 0.9, 0.95)), fog=600.0,
        light=dict(elev=(20, 70), color=(1.0, 0.97, 0.93), ambient=(0.35, 0.5), strength=(0.6, 0.85)),
        exposure=1.0, blur=0.0, noise=0.0, fg=_ROOM_FG,                   # plazas use _OUTDOOR_FG
    ),
    "toy_eth3d": dict(
        analogue="ETH3D", split="eval", scenes="stone facades, columns and stairs, looking up",
        kind="facade", hfov=(50, 70), depth_range=(0.3, 80.0), cam_h=(1.5, 1.8), people=(0, 2),
        building=((0.06, 0.12), (0.08, 0.25), (0.55, 0.85)), building_tex=("bricks", "windows"),
        sky=((0.45, 0.62, 0.9), (0.88, 0.9, 0.95)), fog=500.0,
        light=dict(elev=(25, 65), color=(1.0, 0.96, 0.9), ambient=(0.35, 0.45), strength=(0.65, 0.85)),
        exposure=1.0, blur=0.0, noise=0.005, fg=_OUTDOOR_FG,
    ),
}
# label defects of the real-like variants: relative depth noise, hole fraction, sensor range (m), cosine
# of the grazing angle below which depth is lost, blur of alpha and keypoint jitter (pixels at 64 x 64)
_REALLIKE = {
    "toy_hypersim_reallike": dict(base="toy_hypersim", depth_noise=0.005, holes=0.06, max_range=8.0,
                                  grazing=0.12, alpha_blur=0.6, kp_jitter=1.0),
    "toy_vkitti_reallike": dict(base="toy_vkitti", depth_noise=0.004, holes=0.05, max_range=60.0,
                                grazing=0.03, alpha_blur=0.6, kp_jitter=1.0),
}

TRAIN_DOMAINS = ["toy_hypersim", "toy_vkitti"]
EVAL_DOMAINS = ["toy_kitti", "toy_nyu", "toy_scannet", "toy_diode", "toy_eth3d"]
REALLIKE_DOMAINS = list(_REALLIKE)
DOMAINS = TRAIN_DOMAINS + EVAL_DOMAINS + REALLIKE_DOMAINS
TRAIN_MIX = {"toy_hypersim": 0.9, "toy_vkitti": 0.1}


def _domain_info(name: str) -> dict:
    if name in _REALLIKE:
        base = _STYLES[_REALLIKE[name]["base"]]
        return dict(analogue=base["analogue"] + " (real-like labels)", split="reallike",
                    base=_REALLIKE[name]["base"], scenes=base["scenes"], depth_range=base["depth_range"],
                    hfov_deg=base["hfov"])
    st = _STYLES[name]
    return dict(analogue=st["analogue"], split=st["split"], base=name, scenes=st["scenes"],
                depth_range=st["depth_range"], hfov_deg=st["hfov"])


# per domain: analogue (the dataset it stands for), split (train / eval / reallike), base (the domain whose
# scenes it renders), scenes (in words), depth_range (min, max metres: valid depth), hfov_deg (range)
DOMAIN_INFO: dict[str, dict] = {name: _domain_info(name) for name in DOMAINS}


# --- input checks ----------------------------------------------------------------------------------------
def _check_args(domain, index, size) -> None:
    if domain not in DOMAIN_INFO:
        raise ValueError(f"unknown toy-world domain {domain!r}; expected one of: {', '.join(DOMAINS)}")
    if not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")


def _rng(*parts) -> np.random.Generator:
    """A Generator seeded by a stable hash of ``parts`` (zlib, never Python's salted hash())."""
    key = ":".join(str(p) for p in parts).encode()
    return np.random.default_rng([zlib.crc32(key), zlib.adler32(key)])


