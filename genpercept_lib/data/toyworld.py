"""The toy world: procedural scenes with exact labels for every GenPercept task, rendered by a small
vectorised numpy ray-caster (no OpenGL, no downloads).

The paper fine-tunes on Hypersim and Virtual KITTI and evaluates zero-shot on KITTI, NYUv2, ScanNet,
DIODE and ETH3D. Here each dataset has a *toy analogue*: a family of procedural scenes with its own
layouts, textures, focal lengths, lighting and depth ranges (``DOMAIN_INFO``), so "train on two, test on
five unseen" is a real experiment at small scale. Two more domains, ``toy_hypersim_reallike`` and
``toy_vkitti_reallike``, render the *same* scenes as their clean counterparts (identical RGB) but their
labels carry the defects of real captures (depth holes and noise, blurred edges, normals fitted to noisy
depth, coarse masks, jittered keypoints), for the synthetic-vs-real study (Fig. 3).

Scenes are built from four analytic primitives, each intersected with every camera ray at once:
infinite planes (floors, walls, ceilings, roads), spheres, axis-aligned boxes and capsules (cylinders with
round caps: limbs, legs, poles, wires, fence bars). The nearest hit per pixel gives depth, normal,
semantic class and instance; textures (checker, stripes, value noise, bricks, windows, road markings) and
Lambertian shading under a random key light make the RGB informative about geometry.

Conventions
-----------
* World frame: metres, y up, the ground / floor is the plane y = 0.
* Camera frame (all labels): x right, y up, z toward the camera (OpenGL style); the camera looks along
  -z. A point in front of the camera has z < 0; its ``depth`` is the planar distance d = -z (not the
  ray length), in metres.
* Pixels: row i, column j; pixel centres sit at image coordinates (u, v) = (j, i).
  ``intrinsics`` K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with cx = cy = (size - 1) / 2, and
  u = cx + fx * x / d,   v = cy - fy * y / d    (d = -z; the minus on v because y points up),
  i.e. K applied to the OpenCV-frame point (x, -y, -z).
* ``normal`` [3, H, W]: unit vectors in the camera frame, on the side of the surface that faces the
  camera (n . p < 0 for the surface point p); zeros where ``valid`` is False.
* ``valid``: a surface was hit and its depth lies inside the domain's depth range
  (``DOMAIN_INFO[domain]["depth_range"]``); ``depth`` is 0 elsewhere (sky, too far, too near).
* ``mask`` and ``alpha`` describe one foreground object per scene (a chair with thin legs, a lamp with a
  semi-transparent shade and a cord, a plant, a fence with wire mesh, a person with hair strands ...).
  ``alpha`` is the object's coverage of each pixel times its opacity: analytic for spheres and capsules
  (a wire thinner than a pixel gets a fractional alpha), 4 x 4 supersampled for boxes, zero where
  something else is in front. The RGB is composited with it, rgb = alpha * F + (1 - alpha) * B, so the
  matting equation holds exactly (before the sensor blur / noise of some domains).
  **mask == (alpha > 0.5)** always (for the real-like domains too): thin structures wider than about
  half a pixel are in the mask; hair strands and semi-transparent parts (a lamp shade) add soft alpha
  around it. Depth, normal and semantic come from the pixel-centre
  ray, so at a few edge pixels they may disagree with the mask.
  Outdoors (street, plaza, facade) the foreground stands 2.5-8 m from the camera and every other object of
  its kind (people, trees, street lamps) at least twice as far, so the image says which object is matted, as
  in P3M's portraits and DIS5K's images (version 2; before, a far foreground beside a nearer look-alike was
  common: measured with ``tasks.matting.look_alike_elsewhere``, 38% -> 12% of toy KITTI scenes, 12% -> 0% of
  toy ETH3D). Indoors the foreground may still share its class with nearby furniture.
* ``semantic`` [H, W] int64 indexes ``CLASSES`` (0 = sky).
* People are articulated 3D stick figures (capsules between COCO joints, a sphere head).
  ``joints3d`` [N, 17, 3] are the COCO keypoints in the camera frame; ``keypoints`` [N, 17, 3] hold their
  projection (u, v, visibility) with COCO visibility 2 = visible, 1 = in the image but occluded,
  0 = outside the image (u = v = 0 then). ``boxes`` [N, 4] = (x0, y0, x1, y1), in the same image
  coordinates (pixel j spans [j - 0.5, j + 0.5]), enclose each person's visible pixels and visible
  keypoints (a limb thinner than a pixel may miss every pixel centre); ``areas`` [N] count the visible
  pixels; ``instance`` [H, W] int64 is the person index (-1 elsewhere). People with no visible pixel
  are not listed.

Determinism: the scene is drawn from a numpy Generator seeded by a stable hash (zlib) of
(domain, index), so one index is the same scene at every ``size``; pixel-level randomness (sensor noise,
label defects) is seeded by (domain, index, size). A 64 x 64 sample renders in about 10 ms on one CPU
core (``scripts/bench_toyworld.py``): bounding spheres are culled in screen space, so the cost grows
with the pixels each primitive covers.
"""

from __future__ import annotations

import colorsys
import numbers
import zlib
from pathlib import Path

import numpy as np

# --- defaults --------------------------------------------------------------------------------------------
VERSION = 2              # bump whenever a change alters rendered pixels or labels (caches key on it)
DEFAULT_SIZE = 64
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


# --- scene description -----------------------------------------------------------------------------------
class _Scene:
    """Primitives, camera, light and people of one scene (world frame)."""

    def __init__(self, rng: np.random.Generator, style: dict):
        self.rng, self.style = rng, style
        self.prims: list[dict] = []
        self.people: list[np.ndarray] = []      # [17, 3] world joints per person
        self.occupied: list[tuple] = []          # (x, z, radius) ground discs already used
        self.fg_disc = None                      # (x, z, radius) of the foreground object: keep it in sight
        self.noise_table = rng.random((64, 64))  # value-noise lattice for the textures
        self.sky = None                          # (horizon rgb, zenith rgb) outdoors, None indoors
        self.fog = np.inf

    def add(self, kind, a, b=(0, 0, 0), r=0.0, *, mat, sem, fg=False, solid=True, opacity=1.0, person=-1):
        self.prims.append(dict(kind=_KIND[kind], a=np.asarray(a, float), b=np.asarray(b, float), r=float(r),
                               mat=mat, sem=_CLS[sem], fg=fg, solid=solid, opacity=opacity, person=person))

    def plane(self, point, normal, mat, sem):
        self.add("plane", point, normal, mat=mat, sem=sem)

    def sphere(self, centre, r, mat, sem, **kw):
        self.add("sphere", centre, (0, 0, 0), r, mat=mat, sem=sem, **kw)

    def box(self, lo, hi, mat, sem, **kw):
        self.add("box", np.minimum(lo, hi), np.maximum(lo, hi), mat=mat, sem=sem, **kw)

    def capsule(self, a, b, r, mat, sem, **kw):
        self.add("capsule", a, b, r, mat=mat, sem=sem, **kw)

    def set_camera(self, pos, yaw, pitch, hfov_deg):
        self.cam_pos = np.asarray(pos, float)                      # [3] world
        self.cam_R = _rotation(yaw, pitch)                           # [3, 3] camera -> world
        self.yaw, self.hfov = yaw, np.deg2rad(hfov_deg)
        self.occupied.append((self.cam_pos[0], self.cam_pos[2], 0.5))

    def set_light(self, light: dict, rng):
        elev = np.deg2rad(rng.uniform(*light["elev"]))
        azim = rng.uniform(0, 2 * np.pi)
        self.light_dir = np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)])
        self.light_col = np.asarray(light["color"]) * rng.uniform(0.95, 1.05, 3)
        self.ambient = rng.uniform(*light["ambient"])
        self.strength = rng.uniform(*light["strength"])


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation: yaw about world y, then pitch about the camera x axis (up positive)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return ry @ rx


def _mat(kind: str, c1, c2=None, scale: float = 1.0) -> tuple:
    c1 = np.clip(np.asarray(c1, float), 0, 1)
    c2 = c1 * 0.6 if c2 is None else np.clip(np.asarray(c2, float), 0, 1)
    return (_TEX[kind], c1, c2, float(scale))


def _hsv(rng, ranges) -> np.ndarray:
    h, s, v = (rng.uniform(*r) for r in ranges)
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _greys(rng, lo: float, hi: float) -> tuple:
    """Two nearly neutral colours (paving, cobbles)."""
    return tuple(np.full(3, v) * rng.uniform(0.95, 1.05, 3) for v in rng.uniform(lo, hi, 2))


def _bright(rng) -> np.ndarray:
    return _hsv(rng, ((0, 1), (0.35, 0.85), (0.4, 0.9)))


# --- placement -------------------------------------------------------------------------------------------
def _spot(sc: _Scene, dist, spread: float, radius: float, bounds=None, tries: int = 40):
    """A free ground point (x, z) in front of the camera: ``dist`` metres away, within ``spread`` of the
    half field of view, inside ``bounds`` (x0, x1, z0, z1), clear of the discs placed so far."""
    fwd = np.array([-np.sin(sc.yaw), -np.cos(sc.yaw)])            # camera forward on the ground (x, z)
    right = np.array([np.cos(sc.yaw), -np.sin(sc.yaw)])
    for _ in range(tries):
        s, th = sc.rng.uniform(*dist), sc.rng.uniform(-spread, spread) * sc.hfov / 2
        x, z = sc.cam_pos[[0, 2]] + s * (np.cos(th) * fwd + np.sin(th) * right)
        if bounds is not None and not (bounds[0] + radius < x < bounds[1] - radius
                                       and bounds[2] + radius < z < bounds[3] - radius):
            continue
        if _claim(sc, x, z, radius):
            return float(x), float(z)
    return None


def _claim(sc: _Scene, x: float, z: float, radius: float) -> bool:
    """Reserve a ground disc if it is free and does not hide the foreground object."""
    if any((x - ox) ** 2 + (z - oz) ** 2 < (radius + orad) ** 2 for ox, oz, orad in sc.occupied):
        return False
    if sc.fg_disc is not None and _blocks(sc, x, z, radius):
        return False
    sc.occupied.append((x, z, radius))
    return True


def _blocks(sc: _Scene, x: float, z: float, radius: float) -> bool:
    """Would a disc at (x, z) stand between the camera and the foreground object?"""
    fx, fz, fr = sc.fg_disc
    cam = sc.cam_pos[[0, 2]]
    to_fg, to_p = np.array([fx, fz]) - cam, np.array([x, z]) - cam
    along = to_p @ to_fg / (to_fg @ to_fg)
    side = np.linalg.norm(to_p - along * to_fg)
    return bool(0 < along < 1 and side < fr + radius)


# --- objects ---------------------------------------------------------------------------------------------
def _chair(sc, x, z, *, fg=False):
    rng = sc.rng
    mat, seat_h, w = _mat("plain", _bright(rng)), rng.uniform(0.42, 0.5), rng.uniform(0.4, 0.5)
    leg_r, m = rng.uniform(0.015, 0.025), w / 2 - 0.03
    sc.box((x - w / 2, seat_h, z - w / 2), (x + w / 2, seat_h + 0.05, z + w / 2), mat, "furniture", fg=fg)
    for dx, dz in ((-m, -m), (-m, m), (m, -m), (m, m)):
        sc.capsule((x + dx, 0, z + dz), (x + dx, seat_h, z + dz), leg_r, mat, "furniture", fg=fg)
    ex, ez = [(1, 0), (-1, 0), (0, 1), (0, -1)][rng.integers(4)]      # side of the backrest
    top = seat_h + rng.uniform(0.4, 0.5)
    ends = [(x + ex * m + ez * s * m, z + ez * m + ex * s * m) for s in (-1, 1)]
    for px, pz in ends:
        sc.capsule((px, seat_h, pz), (px, top, pz), leg_r, mat, "furniture", fg=fg)
    (ax, az), (bx, bz) = ends
    for y in np.linspace(seat_h + 0.15, top, 3):                        # slats of the backrest
        sc.capsule((ax, y, az), (bx, y, bz), leg_r * 0.8, mat, "furniture", fg=fg)


def _table(sc, x, z, *, fg=False, clutter=0):
    rng = sc.rng
    mat = _mat("stripes", *(_hsv(rng, ((0.05, 0.1), (0.4, 0.7), (v, v + 0.2))) for v in (0.35, 0.5)), 0.08)
    h, wx, wz = rng.uniform(0.7, 0.8), rng.uniform(0.9, 1.4), rng.uniform(0.6, 0.9)
    leg_r = rng.uniform(0.02, 0.035)
    sc.box((x - wx / 2, h - 0.04, z - wz / 2), (x + wx / 2, h, z + wz / 2), mat, "furniture", fg=fg)
    for sx in (-1, 1):
        for sz in (-1, 1):
            lx, lz = x + sx * (wx / 2 - 0.06), z + sz * (wz / 2 - 0.06)
            sc.capsule((lx, 0, lz), (lx, h - 0.04, lz), leg_r, mat, "furniture", fg=fg)
    for _ in range(clutter):                                          # things on the table (background)
        ox, oz = x + rng.uniform(-wx / 3, wx / 3), z + rng.uniform(-wz / 3, wz / 3)
        s = rng.uniform(0.05, 0.12)
        if rng.random() < 0.5:
            sc.sphere((ox, h + s, oz), s, _mat("plain", _bright(rng)), "object")
        else:
            top = h + 2 * s * rng.uniform(0.5, 2)
            sc.box((ox - s, h, oz - s), (ox + s, top, oz + s), _mat("noise", _bright(rng)), "object")


def _lamp(sc, x, z, *, fg=False):
    rng = sc.rng
    metal, top = _mat("plain", np.full(3, rng.uniform(0.2, 0.5))), rng.uniform(1.4, 1.75)
    sc.box((x - 0.14, 0, z - 0.14), (x + 0.14, 0.04, z + 0.14), metal, "object", fg=fg)
    sc.capsule((x, 0.04, z), (x, top, z), rng.uniform(0.012, 0.02), metal, "object", fg=fg)
    sc.sphere((x, top, z), 0.05, _mat("plain", (1.0, 0.95, 0.7)), "object", fg=fg)
    shade = _mat("plain", _hsv(rng, ((0.05, 0.15), (0.2, 0.6), (0.8, 1.0))))
    sc.sphere((x, top + 0.02, z), rng.uniform(0.17, 0.25), shade, "object", fg=fg, solid=False,
              opacity=rng.uniform(0.35, 0.6))
    a = np.array([x + 0.1, 0.01, z])                                  # the cord: a thin polyline on the floor
    for _ in range(2):
        b = a + np.array([rng.uniform(0.3, 0.8), 0, rng.uniform(-0.6, 0.6)])
        sc.capsule(a, b, 0.008, metal, "wire", fg=fg)
        a = b


def _plant(sc, x, z, *, fg=False):
    rng = sc.rng
    pot_h = rng.uniform(0.25, 0.4)
    clay = _mat("noise", _hsv(rng, ((0.02, 0.08), (0.5, 0.7), (0.4, 0.7))))
    sc.capsule((x, 0.12, z), (x, pot_h, z), 0.13, clay, "object", fg=fg)
    green = _mat("noise", _hsv(rng, ((0.22, 0.38), (0.5, 0.8), (0.3, 0.6))), None, 0.05)
    for _ in range(rng.integers(4, 7)):
        base = np.array([x, pot_h + 0.1, z])
        d = np.array([rng.normal(0, 0.5), 1.0, rng.normal(0, 0.5)])
        tip = base + d / np.linalg.norm(d) * rng.uniform(0.4, 0.9)
        sc.capsule(base, tip, rng.uniform(0.008, 0.014), green, "vegetation", fg=fg)
        for f in (0.6, 1.0):
            sc.sphere(base + f * (tip - base), rng.uniform(0.04, 0.08), green, "vegetation", fg=fg)


def _stool(sc, x, z, *, fg=False):
    rng = sc.rng
    mat, h = _mat("plain", _bright(rng)), rng.uniform(0.55, 0.7)
    sc.capsule((x, h - 0.02, z), (x, h, z), rng.uniform(0.15, 0.19), mat, "furniture", fg=fg)
    angles = np.arange(4) * np.pi / 2 + rng.uniform(0, 1)
    feet = [(x + 0.22 * np.cos(a), z + 0.22 * np.sin(a)) for a in angles]
    tops = [(x + 0.1 * np.cos(a), z + 0.1 * np.sin(a)) for a in angles]
    for (fx, fz), (tx, tz) in zip(feet, tops):
        sc.capsule((fx, 0, fz), (tx, h - 0.02, tz), 0.015, mat, "furniture", fg=fg)
    ring = [(f[0] * 0.65 + t[0] * 0.35, f[1] * 0.65 + t[1] * 0.35) for f, t in zip(feet, tops)]
    for k in range(4):
        (ax, az), (bx, bz) = ring[k], ring[(k + 1) % 4]
        sc.capsule((ax, 0.25, az), (bx, 0.25, bz), 0.01, mat, "furniture", fg=fg)


def _fence(sc, x, z, along: np.ndarray, *, fg=False, length=None, thick=1.0):
    rng = sc.rng
    along = along / np.linalg.norm(along)
    n_posts, h = rng.integers(3, 6) if length is None else int(length) + 1, rng.uniform(1.0, 1.4)
    mat = _mat("plain", np.full(3, rng.uniform(0.25, 0.6)) * rng.uniform(0.9, 1.1, 3))
    start = np.array([x, 0, z]) - along * (n_posts - 1) / 2
    posts = [start + along * k for k in range(n_posts)]
    for p in posts:
        sc.capsule(p, p + (0, h, 0), 0.035 * thick, mat, "fence", fg=fg)
    for y in (0.15, h - 0.08):
        sc.capsule(posts[0] + (0, y, 0), posts[-1] + (0, y, 0), 0.02 * thick, mat, "fence", fg=fg)
    wire = 0.008 * thick
    for p, q in zip(posts[:-1], posts[1:]):                           # wire mesh: an X and a middle wire
        sc.capsule(p + (0, 0.15, 0), q + (0, h - 0.08, 0), wire, mat, "fence", fg=fg)
        sc.capsule(q + (0, 0.15, 0), p + (0, h - 0.08, 0), wire, mat, "fence", fg=fg)
        sc.capsule(p + (0, h / 2, 0), q + (0, h / 2, 0), wire, mat, "fence", fg=fg)


def _tree(sc, x, z, *, fg=False, scale=1.0):
    rng = sc.rng
    bark = _mat("noise", _hsv(rng, ((0.05, 0.1), (0.4, 0.6), (0.25, 0.4))), None, 0.2)
    leaves = _mat("noise", _hsv(rng, ((0.2, 0.35), (0.5, 0.8), (0.25, 0.5))), None, 0.3)
    h = rng.uniform(2.0, 3.2) * scale
    sc.capsule((x, 0, z), (x, h, z), rng.uniform(0.1, 0.18) * scale, bark, "vegetation", fg=fg)
    for _ in range(rng.integers(3, 6)):
        d = np.array([rng.normal(0, 0.7), 1.0, rng.normal(0, 0.7)])
        tip = np.array([x, h * 0.7, z]) + d / np.linalg.norm(d) * rng.uniform(0.8, 1.4) * scale
        sc.capsule((x, h * 0.7, z), tip, 0.04 * scale, bark, "vegetation", fg=fg)
        sc.sphere(tip, rng.uniform(0.45, 0.8) * scale, leaves, "vegetation", fg=fg)


def _streetlamp(sc, x, z, *, fg=False):
    rng = sc.rng
    metal, h = _mat("plain", np.full(3, rng.uniform(0.2, 0.45))), rng.uniform(5.0, 7.0)
    arm = np.array([-np.sign(x) if x != 0 else 1.0, 0, 0]) * rng.uniform(1.2, 2.0)
    sc.capsule((x, 0, z), (x, h, z), 0.08, metal, "pole", fg=fg)
    sc.capsule((x, h, z), np.array([x, h + 0.3, z]) + arm, 0.04, metal, "pole", fg=fg)
    head = np.array([x, h + 0.2, z]) + arm
    sc.box(head - (0.3, 0.08, 0.15), head + (0.3, 0.08, 0.15), metal, "pole", fg=fg)


def _car(sc, x, z):
    rng = sc.rng
    paint, glass = _mat("plain", _bright(rng)), _mat("plain", (0.15, 0.2, 0.25))
    w, ln = rng.uniform(1.7, 1.9), rng.uniform(3.8, 4.6)
    sc.box((x - w / 2, 0.3, z - ln / 2), (x + w / 2, 1.0, z + ln / 2), paint, "vehicle")
    sc.box((x - w / 2 + 0.1, 1.0, z - ln / 4), (x + w / 2 - 0.1, 1.5, z + ln / 5), glass, "vehicle")
    for sz in (-1, 1):
        wz = z + sz * (ln / 2 - 0.7)
        tyre = _mat("plain", (0.05,) * 3)
        sc.capsule((x - w / 2 - 0.02, 0.33, wz), (x + w / 2 + 0.02, 0.33, wz), 0.32, tyre, "vehicle")


# --- people ----------------------------------------------------------------------------------------------
def _limb(flex: float, abd: float, side: float) -> np.ndarray:
    """Unit limb direction in the body frame (x' = the person's left, y up, z' forward)."""
    return np.array([side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)])


def _skeleton(rng, s: float) -> tuple[np.ndarray, dict]:
    """COCO joints [17, 3] of a posed figure in its body frame (feet on y = 0), plus helper points."""
    pose = rng.choice(["stand", "walk", "wave", "arms_out"])
    swing = rng.uniform(0.2, 0.45) if pose == "walk" else rng.uniform(-0.1, 0.1)
    hip_flex = {1: swing, -1: -swing}                                  # left, right
    knee = {1: rng.uniform(0, 0.3), -1: rng.uniform(0.05, 0.6) if pose == "walk" else rng.uniform(0, 0.2)}
    sh_flex = {1: -swing * 1.2, -1: swing * 1.2}
    sh_abd = {1: rng.uniform(0.05, 0.25), -1: rng.uniform(0.05, 0.25)}
    elbow = {1: rng.uniform(0.1, 0.6), -1: rng.uniform(0.1, 0.6)}
    if pose == "arms_out":
        sh_abd = {1: rng.uniform(1.2, 1.6), -1: rng.uniform(1.2, 1.6)}
    if pose == "wave":
        side = int(rng.choice([1, -1]))
        sh_abd[side], elbow[side] = rng.uniform(2.2, 2.7), rng.uniform(0.3, 0.9)
        sh_flex[side] = rng.uniform(-0.3, 0.3)
    j = {}
    for side, tag in ((1, "left"), (-1, "right")):
        j[f"{tag}_shoulder"] = np.array([side * 0.19, 1.45, 0.0]) * s
        j[f"{tag}_elbow"] = j[f"{tag}_shoulder"] + 0.30 * s * _limb(sh_flex[side], sh_abd[side], side)
        forearm = _limb(sh_flex[side] + elbow[side], sh_abd[side], side)   # the elbow bends forward
        j[f"{tag}_wrist"] = j[f"{tag}_elbow"] + 0.27 * s * forearm
        j[f"{tag}_hip"] = np.array([side * 0.10, 0.95, 0.0]) * s
        j[f"{tag}_knee"] = j[f"{tag}_hip"] + 0.45 * s * _limb(hip_flex[side], 0.03, side)
        j[f"{tag}_ankle"] = j[f"{tag}_knee"] + 0.43 * s * _limb(hip_flex[side] - knee[side], 0.0, side)
    head_r, head_yaw = 0.11 * s, rng.uniform(-0.5, 0.5)
    hc = np.array([0.0, 1.64, 0.01]) * s
    cy, sy = np.cos(head_yaw), np.sin(head_yaw)
    turn = lambda v: np.array([cy * v[0] + sy * v[2], v[1], -sy * v[0] + cy * v[2]])
    j["nose"] = hc + turn(np.array([0.0, -0.02, 0.11]) * s)
    for side, tag in ((1, "left"), (-1, "right")):
        j[f"{tag}_eye"] = hc + turn(np.array([side * 0.035, 0.035, 0.1]) * s)
        j[f"{tag}_ear"] = hc + turn(np.array([side * 0.11, 0.0, -0.005]) * s)
    joints = np.stack([j[name] for name in KEYPOINT_NAMES])           # [17, 3]
    lift = 0.07 * s - joints[15:17, 1].min()                            # ankles 7 cm above the ground
    joints[:, 1] += lift
    extra = dict(head=hc + (0, lift, 0), head_r=head_r, neck=np.array([0, 1.5 * s + lift, 0]), turn=turn)
    return joints, extra


def _person(sc, x, z, yaw, *, fg=False, hair=False):
    """An articulated stick figure standing at (x, 0, z) facing world direction yaw (0 = +z)."""
    rng = sc.rng
    s = rng.uniform(1.55, 1.9) / 1.75
    local, ex = _skeleton(rng, s)
    c, sn = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]])                # body -> world
    to_world = lambda p: np.asarray(p) @ rot.T + np.array([x, 0.0, z])
    J = to_world(local)                                                  # [17, 3] world joints
    pid = len(sc.people)
    sc.people.append(J)
    skin = _mat("plain", _hsv(rng, ((0.03, 0.09), (0.3, 0.6), (0.45, 0.95))))
    shirt, pants = _mat("plain", _bright(rng)), _mat("plain", _hsv(rng, ((0, 1), (0.1, 0.6), (0.15, 0.5))))
    hair_mat = _mat("plain", _hsv(rng, ((0.04, 0.1), (0.3, 0.8), (0.05, 0.5))))
    kw = dict(fg=fg, person=pid)
    lsh, rsh, lhip, rhip = J[5], J[6], J[11], J[12]
    neck, pelvis = to_world(ex["neck"]), (lhip + rhip) / 2
    head = to_world(ex["head"])
    parts = [  # (a, b, radius, material)
        (neck, pelvis, 0.13, shirt), (lsh, rsh, 0.06, shirt), (lhip, rhip, 0.08, pants),
        (neck, head - (0, 0.08 * s, 0), 0.05, skin),
        (J[5], J[7], 0.045, shirt), (J[6], J[8], 0.045, shirt),
        (J[7], J[9], 0.04, skin), (J[8], J[10], 0.04, skin),
        (J[11], J[13], 0.07, pants), (J[12], J[14], 0.07, pants), (J[13], J[15], 0.055, pants),
        (J[14], J[16], 0.055, pants),
    ]
    for a, b, r, m in parts:
        sc.capsule(a, b, r * s, m, "person", **kw)
    fwd = rot @ np.array([0, 0, 1.0])
    for ank in (J[15], J[16]):
        sc.capsule(ank, ank + fwd * 0.13 * s - (0, 0.02 * s, 0), 0.04 * s, pants, "person", **kw)
    sc.sphere(head, ex["head_r"], skin, "person", **kw)
    sc.sphere(head + rot @ np.array([0, 0.015, -0.02]) * s, ex["head_r"] * 1.05, hair_mat, "person", **kw)
    if hair:                                                             # semi-transparent strands (matting)
        for _ in range(14):
            az = rng.uniform(0.6, 2 * np.pi - 0.6)                       # away from the face
            pol = rng.uniform(0.3, 1.6)
            d_body = np.array([np.sin(pol) * np.sin(az), np.cos(pol), np.sin(pol) * np.cos(az)])
            root = head + rot @ d_body * ex["head_r"]
            tip = root + rot @ (0.35 * d_body + np.array([0, -1.0, -0.15])) * rng.uniform(0.12, 0.28) * s
            sc.capsule(root, tip, rng.uniform(0.004, 0.009) * s, hair_mat, "person", fg=fg, solid=False,
                       opacity=0.85)


def _people(sc, n: int, dist, bounds=None, spread=0.9):
    for _ in range(n):
        spot = _spot(sc, dist, spread, 0.4, bounds)
        if spot is not None:
            _person(sc, *spot, sc.rng.uniform(0, 2 * np.pi))


def _foreground(sc, choice: str, x, z, *, along=None, length=None, thick=1.0):
    """The scene's foreground object (the DIS mask / matte)."""
    sc.fg_disc = (x, z, 0.7)
    if choice == "person":
        to_cam = np.arctan2(sc.cam_pos[0] - x, sc.cam_pos[2] - z)
        _person(sc, x, z, to_cam + sc.rng.uniform(-0.9, 0.9), fg=True, hair=True)
    elif choice == "fence":
        along = np.array([1.0, 0, 0]) if along is None else along
        _fence(sc, x, z, along, fg=True, length=length, thick=thick)
    else:
        {"chair": _chair, "table": _table, "lamp": _lamp, "plant": _plant, "stool": _stool,
         "tree": _tree, "streetlamp": _streetlamp}[choice](sc, x, z, fg=True)


def _twice_as_far(sc) -> float:
    """Twice the ground distance from the camera to the foreground object (0 without one): outdoors, other objects
    of its kind are placed beyond it, so the image says which one is matted (version 2). A fence (no disc) has
    no look-alike to keep away."""
    if sc.fg_disc is None:
        return 0.0
    x, z, _ = sc.fg_disc
    return 2.0 * float(np.hypot(x - sc.cam_pos[0], z - sc.cam_pos[2]))


def _pick(rng, weights: dict) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], float)
    return str(rng.choice(names, p=p / p.sum()))


# --- scene layouts ---------------------------------------------------------------------------------------
def _room(sc: _Scene, st: dict) -> None:
    """A closed box room: floor, ceiling and four walls as planes, furniture, clutter, people."""
    rng = sc.rng
    W, D, H = (rng.uniform(*r) for r in st["room"])              # x in [-W/2, W/2], z in [-D, 0], y in [0, H]
    pos = (rng.uniform(-W / 4, W / 4), rng.uniform(*st["cam_h"]), -rng.uniform(0.4, 0.9))
    sc.set_camera(pos, rng.uniform(-0.45, 0.45), rng.uniform(-0.4, -0.08), rng.uniform(*st["hfov"]))
    sc.set_light(st["light"], rng)
    wall_c = _hsv(rng, st["wall"])
    walls = [_mat(str(rng.choice(st["wall_tex"])), wall_c * rng.uniform(0.9, 1.05, 3),
                  wall_c * rng.uniform(0.75, 0.9), rng.uniform(0.15, 0.5)) for _ in range(2)]
    floor_c = _hsv(rng, st["floor"])
    sc.plane((0, 0, 0), (0, 1, 0), _mat(str(rng.choice(st["floor_tex"])), floor_c, floor_c * 0.7,
                                         rng.uniform(0.2, 0.6)), "floor")
    sc.plane((0, H, 0), (0, -1, 0), _mat("plain", np.full(3, rng.uniform(0.85, 0.97))), "ceiling")
    for k, (p, n) in enumerate((((-W / 2, 0, 0), (1, 0, 0)), ((W / 2, 0, 0), (-1, 0, 0)),
                                ((0, 0, -D), (0, 0, 1)), ((0, 0, 0), (0, 0, -1)))):
        sc.plane(p, n, walls[k % 2], "wall")
    bounds = (-W / 2, W / 2, -D, 0.0)
    # 1. pictures and doors on the back and side walls
    for _ in range(rng.integers(1, 4)):
        w, h, c = rng.uniform(0.4, 1.2), rng.uniform(0.3, 0.9), rng.uniform(-W / 2 + 0.8, W / 2 - 0.8)
        y = rng.uniform(1.0, H - h - 0.2)
        art = _mat(str(rng.choice(["noise", "stripes", "checker"])), _bright(rng), _bright(rng), 0.1)
        sc.box((c - w / 2, y, -D - 0.01), (c + w / 2, y + h, -D + 0.03), art, "object")
    # 2. the foreground object, in view and in front
    fg_spot = _spot(sc, (1.5, max(1.8, min(3.5, D * 0.6))), 0.5, 0.6, bounds)
    if fg_spot is not None:
        _foreground(sc, _pick(rng, st["fg"]), *fg_spot)
    # 3. furniture against the walls (cabinets, shelves, sofas)
    for _ in range(rng.integers(*st["furniture"], endpoint=True)):
        w, d, h = rng.uniform(0.6, 2.0), rng.uniform(0.35, 0.9), rng.uniform(0.4, 2.0)
        mat = _mat(str(rng.choice(["plain", "stripes", "noise"])), _bright(rng) * 0.8, None, 0.1)
        side = rng.integers(3)
        if side == 0:                                                       # back wall
            c = rng.uniform(-W / 2 + w / 2, W / 2 - w / 2)
            lo, hi = (c - w / 2, 0, -D), (c + w / 2, h, -D + d)
        else:                                                               # left / right wall
            c, xw = rng.uniform(-D + w / 2, -1.5), (-W / 2 if side == 1 else W / 2)
            lo, hi = (xw, 0, c - w / 2), (xw - np.sign(xw) * d, h, c + w / 2)
        if _claim(sc, (lo[0] + hi[0]) / 2, (lo[2] + hi[2]) / 2, w / 2):
            sc.box(lo, hi, mat, "furniture")
    # 4. free-standing clutter: tables with things on them, balls, bins, boxes
    for _ in range(rng.integers(*st["clutter"], endpoint=True)):
        spot = _spot(sc, (1.2, D), 0.95, 0.5, bounds)
        if spot is None:
            continue
        x, z = spot
        kind = rng.choice(["table", "chair", "ball", "bin", "box"])
        if kind == "table":
            _table(sc, x, z, clutter=int(rng.integers(0, 4)))
        elif kind == "chair":
            _chair(sc, x, z)
        elif kind == "ball":
            r = rng.uniform(0.1, 0.3)
            sc.sphere((x, r, z), r, _mat("stripes", _bright(rng), _bright(rng), 0.1), "object")
        elif kind == "bin":
            r = rng.uniform(0.12, 0.25)
            sc.capsule((x, r, z), (x, rng.uniform(0.3, 0.6), z), r, _mat("plain", _bright(rng)), "object")
        else:
            s = rng.uniform(0.15, 0.45)
            sc.box((x - s, 0, z - s), (x + s, 2 * s, z + s), _mat("checker", _bright(rng), _bright(rng), 0.1),
                   "object")
    _people(sc, int(rng.integers(*st["people"], endpoint=True)), (1.8, D), bounds)


def _sky(sc: _Scene, st: dict) -> None:
    rng = sc.rng
    sc.sky = tuple(np.clip(np.asarray(c) * rng.uniform(0.92, 1.05, 3), 0, 1) for c in st["sky"][::-1])
    sc.fog = st["fog"] * rng.uniform(0.8, 1.25)


def _building(sc, lo, hi, st):
    rng = sc.rng
    c = _hsv(rng, st["building"])
    kind = str(rng.choice(st["building_tex"]))
    c2 = _hsv(rng, ((0.55, 0.65), (0.2, 0.5), (0.15, 0.35))) if kind == "windows" else c * 0.55
    sc.box(lo, hi, _mat(kind, c, c2, rng.uniform(0.8, 1.3)), "building")


def _street(sc: _Scene, st: dict) -> None:
    """A straight street along -z: road, sidewalks, facades, poles with wires, cars, trees, people."""
    rng = sc.rng
    hw, sw = rng.uniform(*st["road_hw"]), rng.uniform(*st["sidewalk"])
    sc.set_camera((rng.uniform(-hw + 1.5, hw - 1.5), rng.uniform(*st["cam_h"]), 0.0),
                  rng.uniform(-0.2, 0.2), rng.uniform(-0.12, 0.03), rng.uniform(*st["hfov"]))
    sc.set_light(st["light"], rng)
    _sky(sc, st)
    sc.plane((0, 0, 0), (0, 1, 0), _mat("road", np.full(3, rng.uniform(0.22, 0.35)), None, hw - 0.3), "road")
    pave = _mat("checker", *_greys(rng, 0.5, 0.7), 0.5)
    for side in (-1, 1):
        sc.box((side * hw, 0, -300), (side * (hw + sw), 0.15, 20), pave, "sidewalk")
        z = 15.0
        while z > -220:                                                    # a row of facades
            length = rng.uniform(8, 25)
            if rng.random() > st["gap"]:
                x0 = side * (hw + sw + rng.uniform(0, 3))
                x1, top = x0 + side * rng.uniform(8, 15), rng.uniform(*st["building_h"])
                _building(sc, (x0, 0, z - length), (x1, top, z), st)
            z -= length + rng.uniform(0, 2)
    bounds = (-hw - sw, hw + sw, -120, -3)
    fg = _pick(rng, st["fg"])
    if fg == "fence":
        fx = float(rng.choice([-1, 1])) * (hw + 0.3)
        _foreground(sc, fg, fx, -rng.uniform(5, 8), along=np.array([0, 0, 1.0]), length=rng.uniform(6, 9),
                    thick=2.0)                                             # a sturdy railing
        sc.fg_disc = None                                                  # seen obliquely along the sidewalk
    else:
        spot = _spot(sc, (4.0, 7.0), 0.45, 0.6, bounds)
        if spot is not None:
            _foreground(sc, fg, *spot)
    near = _twice_as_far(sc)
    # poles along one sidewalk, wires between their tops (thin structures, background)
    side, z, tops = rng.choice([-1, 1]), rng.uniform(-8, -2), []
    if fg == "streetlamp":
        z = min(z, -near)
    metal = _mat("plain", np.full(3, rng.uniform(0.25, 0.45)))
    while z > -90:
        top = np.array([side * (hw + 0.4), rng.uniform(6.5, 8.0), z])
        sc.capsule(top * (1, 0, 1), top, 0.1, metal, "pole")
        tops.append(top)
        z -= rng.uniform(18, 30)
    for a, b in zip(tops[:-1], tops[1:]):
        for k in (-1, 1):
            mid = (a + b) / 2 - (0, 0.6, 0)
            off = np.array([0.4 * k, -0.2, 0])
            sc.capsule(a + off, mid + off, 0.025, metal, "wire")
            sc.capsule(mid + off, b + off, 0.025, metal, "wire")
    for _ in range(rng.integers(*st["cars"], endpoint=True)):
        x, z = rng.uniform(-hw + 1.2, hw - 1.2), -rng.uniform(7, 70)
        x = (hw - 1.2) * np.sign(x) if rng.random() < 0.6 else x           # parked or driving
        if _claim(sc, x, z, 2.4):
            _car(sc, x, z)
    for side in (-1, 1):
        for z in np.arange(-6.0, -120.0, -rng.uniform(8, 16)):
            x, z = side * (hw + sw * 0.6), z + rng.uniform(-2, 2)
            if fg == "tree" and np.hypot(x - sc.cam_pos[0], z) < near:
                continue
            if rng.random() < st["trees"] and _claim(sc, x, z, 1.0):
                _tree(sc, x, z, scale=rng.uniform(1.0, 1.6))
    _people(sc, int(rng.integers(*st["people"], endpoint=True)), (max(4.0, near) if fg == "person" else 4, 30),
            bounds)


def _plaza(sc: _Scene, st: dict) -> None:
    """An open square: paved or grass ground, scattered buildings up to ~120 m, trees, people."""
    rng = sc.rng
    sc.set_camera((0.0, rng.uniform(*st["cam_h"]), 0.0), rng.uniform(-np.pi, np.pi), rng.uniform(-0.15, 0.05),
                  rng.uniform(*st["hfov"]))
    sc.set_light(st["light"], rng)
    _sky(sc, st)
    if rng.random() < 0.5:
        ground = _mat("checker", *_greys(rng, 0.45, 0.7), rng.uniform(0.5, 2.0))
    else:
        ground = _mat("noise", _hsv(rng, ((0.2, 0.32), (0.4, 0.7), (0.3, 0.5))), None, 0.7)
    sc.plane((0, 0, 0), (0, 1, 0), ground, "floor")
    spot, fg = _spot(sc, (2.5, 5.5), 0.45, 0.8), _pick(rng, _OUTDOOR_FG)
    if spot is not None:
        _foreground(sc, fg, *spot)                                         # outdoor objects, also for DIODE
    near = _twice_as_far(sc)
    for _ in range(rng.integers(2, 7)):
        spot = _spot(sc, (max(6.0, near) if fg == "tree" else 6, 45), 1.2, 1.5)
        if spot is not None:
            _tree(sc, *spot, scale=rng.uniform(1.0, 2.0))
    for _ in range(rng.integers(5, 10)):
        w, d = rng.uniform(8, 30, 2)
        half = np.hypot(w, d) / 2
        spot = _spot(sc, (half + 12, 120), 1.4, half)
        if spot is not None:
            x, z = spot
            _building(sc, (x - w / 2, 0, z - d / 2), (x + w / 2, rng.uniform(6, 40), z + d / 2), st)
    _people(sc, int(rng.integers(*st["people"], endpoint=True)), (max(3.0, near) if fg == "person" else 3, 25))


def _facade(sc: _Scene, st: dict) -> None:
    """A courtyard in front of a large facade with a portico of columns and stairs; the camera looks up."""
    rng = sc.rng
    dist, width, height = rng.uniform(8, 20), rng.uniform(20, 40), rng.uniform(10, 25)
    sc.set_camera((rng.uniform(-4, 4), rng.uniform(*st["cam_h"]), 0.0), rng.uniform(-0.6, 0.6),
                  rng.uniform(0.05, 0.3), rng.uniform(*st["hfov"]))
    sc.set_light(st["light"], rng)
    _sky(sc, st)
    cob = rng.uniform(0.35, 0.6)
    cobbles = _mat("bricks", cob * rng.uniform(0.9, 1.1, 3), np.full(3, cob * 0.6), rng.uniform(1.5, 3))
    sc.plane((0, 0, 0), (0, 1, 0), cobbles, "floor")
    _building(sc, (-width / 2, 0, -dist - 15), (width / 2, height, -dist), st)
    for side in (-1, 1):                                                     # side wings around the court
        x0 = side * (width / 2 - rng.uniform(0, 4))
        wing = (x0 + side * 12, rng.uniform(8, height), -dist + rng.uniform(10, 25))
        _building(sc, (x0, 0, -dist), wing, st)
    stone = _mat("noise", _hsv(rng, st["building"]) * 1.1, None, 0.3)
    n_col, col_h = int(rng.integers(4, 9)), rng.uniform(4, 8)
    xs = np.linspace(-1, 1, n_col) * rng.uniform(4, width / 2 - 2)
    for x in xs:                                                             # portico: columns and a lintel
        sc.capsule((x, 0.0, -dist + 2.5), (x, col_h, -dist + 2.5), rng.uniform(0.25, 0.4), stone, "building")
    sc.box((xs[0] - 0.6, col_h, -dist), (xs[-1] + 0.6, col_h + 0.8, -dist + 3.1), stone, "building")
    for k in range(3):                                                       # stairs
        step = (xs[-1] + 1.0, 0.17 * (3 - k), -dist + 3.1 + 0.35 * (k + 1))
        sc.box((xs[0] - 1.0, 0, -dist + 3.1), step, stone, "building")
    spot, fg = _spot(sc, (2.5, 5.0), 0.45, 0.8), _pick(rng, st["fg"])
    if spot is not None:
        _foreground(sc, fg, *spot)
    near = _twice_as_far(sc)
    court = (-width / 2, width / 2, -dist + 4, 5)
    _people(sc, int(rng.integers(*st["people"], endpoint=True)),
            (min(max(3.0, near), dist - 0.5) if fg == "person" else 3, dist), court)


def _build_scene(domain: str, rng: np.random.Generator) -> _Scene:
    st = _STYLES[domain]
    sc = _Scene(rng, st)
    kind = st["kind"]
    if kind == "diode":
        kind = "room" if rng.random() < 0.5 else "plaza"
    {"room": _room, "street": _street, "plaza": _plaza, "facade": _facade}[kind](sc, st)
    return sc


# --- packing and ray casting -----------------------------------------------------------------------------
def _pack(sc: _Scene) -> dict:
    """Primitives as flat arrays (one row per primitive): kind, a, b, r, bounding spheres, attributes."""
    prims = sorted(sc.prims, key=lambda p: p["kind"])
    attrs = ("kind", "r", "sem", "fg", "solid", "opacity", "person")
    pk = {k: np.array([p[k] for p in prims]) for k in attrs}
    pk["a"] = np.stack([p["a"] for p in prims])                          # [M, 3]
    pk["b"] = np.stack([p["b"] for p in prims])                          # [M, 3]
    pk["tex"] = np.array([p["mat"][0] for p in prims])
    pk["c1"] = np.stack([p["mat"][1] for p in prims])                    # [M, 3]
    pk["c2"] = np.stack([p["mat"][2] for p in prims])                    # [M, 3]
    pk["scale"] = np.array([p["mat"][3] for p in prims])
    kind, a, b, r = pk["kind"], pk["a"], pk["b"], pk["r"]
    centre = np.where((kind == _KIND["sphere"])[:, None], a, (a + b) / 2)
    half = np.linalg.norm(b - a, axis=1) / 2
    pk["bc"] = centre                                                      # [M, 3] bounding sphere centre
    pk["br"] = np.select([kind == _KIND["sphere"], kind == _KIND["box"]], [r, half], half + r)
    return pk


def _dot(x, y):
    return (x * y).sum(-1)


def _hit_planes(o, u, point, normal):  # u [P, 3]; point, normal [K, 3] -> t [K, P]
    denom = normal @ u.T                                                   # [K, P]
    num = _dot(point - o, normal)[:, None]                                 # [K, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / denom
    return np.where(np.isfinite(t) & (t > EPS), t, np.inf)


def _hit_sphere(o, u, c, r):  # u, c [Q, 3]; r [Q] -> t [Q]
    oc = o - c
    b = _dot(u, oc)
    h = b * b - (_dot(oc, oc) - r * r)
    t = -b - np.sqrt(np.maximum(h, 0))
    return np.where((h >= 0) & (t > EPS), t, np.inf)


def _hit_box(o, u, lo, hi):  # u, lo, hi [Q, 3] -> t [Q]   (slab method, ray starts outside)
    u = np.where(np.abs(u) < 1e-12, 1e-12, u)
    t1, t2 = (lo - o) / u, (hi - o) / u                                    # [Q, 3]
    tnear, tfar = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    return np.where((tfar >= tnear) & (tnear > EPS), tnear, np.inf)


def _hit_capsule(o, u, a, b, r):  # u, a, b [Q, 3]; r [Q] -> t [Q]   (after I. Quilez, capIntersect)
    ba, oa = b - a, o - a
    baba, bard, baoa, rdoa, oaoa = _dot(ba, ba), _dot(ba, u), _dot(ba, oa), _dot(u, oa), _dot(oa, oa)
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    ok = qa > 1e-12
    t_body = np.where(ok, (-qb - np.sqrt(np.maximum(h, 0))) / np.where(ok, qa, 1), np.inf)
    y = baoa + t_body * bard
    body = ok & (h >= 0) & (y > 0) & (y < baba)
    near_a = np.where(ok, y <= 0, bard > 0)                                # which cap the ray meets first
    oc = np.where(near_a[:, None], oa, o - b)
    bb = _dot(u, oc)
    hh = bb * bb - (_dot(oc, oc) - r * r)
    t_cap = np.where(hh >= 0, -bb - np.sqrt(np.maximum(hh, 0)), np.inf)
    t = np.where(body, t_body, np.where(h >= 0, t_cap, np.inf))
    return np.where(t > EPS, t, np.inf)


def _ray_segment(o, u, a, b):  # -> (distance [Q], ray parameter s [Q]) of the closest approach
    v, w0 = b - a, o - a
    bq, cq, dq, eq = _dot(u, v), _dot(v, v), _dot(u, w0), _dot(v, w0)
    cq = np.maximum(cq, 1e-12)
    den = cq - bq * bq
    t = np.clip(np.where(den > 1e-9 * cq, (eq - bq * dq) / np.maximum(den, 1e-30), 0.5), 0, 1)
    s = np.maximum(t * bq - dq, 0)
    t = np.clip((eq + s * bq) / cq, 0, 1)
    s = np.maximum(t * bq - dq, 0)
    return np.linalg.norm(w0 + s[:, None] * u - t[:, None] * v, axis=-1), s


def _screen_pairs(centre, radius, o, R, f, size):
    """(k, p) pairs: the pixels whose centre ray passes within ``radius`` of ``centre`` [K, 3], found
    through each bounding sphere's screen rectangle, so the cost grows with the pixels covered, not K x P."""
    c = (centre - o) @ R                                                   # [K, 3] camera frame
    z, cx = -c[:, 2], (size - 1) / 2
    zs = np.stack([np.maximum(z - radius, 1e-3), np.maximum(z + radius, 1e-3)], 1)[:, None, :]  # [K, 1, 2]
    rx = np.stack([c[:, 0] - radius, c[:, 0] + radius], 1)[:, :, None] / zs                       # [K, 2, 2]
    ry = np.stack([c[:, 1] - radius, c[:, 1] + radius], 1)[:, :, None] / zs
    full = z - radius < 1e-3                                               # reaches the camera plane
    c0 = np.where(full, 0, np.ceil(cx + f * rx.min((1, 2))))
    c1 = np.where(full, size - 1, np.floor(cx + f * rx.max((1, 2))))
    r0 = np.where(full, 0, np.ceil(cx - f * ry.max((1, 2))))
    r1 = np.where(full, size - 1, np.floor(cx - f * ry.min((1, 2))))
    c0, r0 = np.clip(c0, 0, size).astype(np.int64), np.clip(r0, 0, size).astype(np.int64)
    c1, r1 = np.clip(c1, -1, size - 1).astype(np.int64), np.clip(r1, -1, size - 1).astype(np.int64)
    w = np.maximum(c1 - c0 + 1, 0) * (z + radius > 1e-3)
    h = np.maximum(r1 - r0 + 1, 0)
    n = w * h
    k = np.repeat(np.arange(len(centre)), n)
    local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    wk = np.maximum(w[k], 1)
    return k, (r0[k] + local // wk) * size + c0[k] + local % wk


def _candidates(centre, radius, o, u, R, f, size):
    """Screen rectangles, then the exact ray-to-centre distance test per (k, p) pair."""
    k, p = _screen_pairs(centre, radius, o, R, f, size)
    oc = centre[k] - o                                                     # [Q, 3]
    proj = _dot(oc, u[p])
    keep = (_dot(oc, oc) - proj * proj < radius[k] ** 2) & (proj > -radius[k])
    return k[keep], p[keep]


def _trace(pk: dict, o, u, R, f, size) -> dict:
    """Ray lengths along unit rays u [P, 3]: dense for planes [Kp, P], as hit pairs (k, p, t) otherwise."""
    planes = np.nonzero(pk["kind"] == _KIND["plane"])[0]
    rest = np.nonzero(pk["kind"] != _KIND["plane"])[0]
    k, p = _candidates(pk["bc"][rest], pk["br"][rest], o, u, R, f, size)
    k = rest[k]
    t = np.full(len(k), np.inf)
    kind = pk["kind"][k]
    for name, fn in (("sphere", _hit_sphere), ("box", _hit_box), ("capsule", _hit_capsule)):
        sel = np.nonzero(kind == _KIND[name])[0]
        kk, uu = k[sel], u[p[sel]]
        if name == "sphere":
            t[sel] = fn(o, uu, pk["a"][kk], pk["r"][kk])
        elif name == "box":
            t[sel] = fn(o, uu, pk["a"][kk], pk["b"][kk])
        else:
            t[sel] = fn(o, uu, pk["a"][kk], pk["b"][kk], pk["r"][kk])
    hit = np.isfinite(t)
    return dict(planes=planes, t_planes=_hit_planes(o, u, pk["a"][planes], pk["b"][planes]),
                k=k[hit], p=p[hit], t=t[hit], P=len(u))


def _nearest(tr: dict, rows) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the nearest hit among the primitives flagged in ``rows``: (t [P], primitive [P])."""
    P = tr["P"]
    t_best, g = np.full(P, np.inf), np.zeros(P, np.int64)
    sel = rows[tr["planes"]]
    if sel.any():
        tp = tr["t_planes"][sel]                                           # [Kp', P]
        j = tp.argmin(0)
        t_best, g = tp[j, np.arange(P)], tr["planes"][sel][j]
    m = rows[tr["k"]]
    k, p, t = tr["k"][m], tr["p"][m], tr["t"][m]
    order = np.lexsort((t, p))                                             # by pixel, then by distance
    k, p, t = k[order], p[order], t[order]
    first = np.r_[True, p[1:] != p[:-1]] if len(p) else np.zeros(0, bool)
    k, p, t = k[first], p[first], t[first]
    closer = t < t_best[p]
    t_best[p[closer]], g[p[closer]] = t[closer], k[closer]
    return t_best, g


def _normals(pk, g, p, u) -> np.ndarray:
    """World normals [P, 3] of primitive g [P] at points p [P, 3], turned to face the ray u."""
    kind, a, b, r = pk["kind"][g], pk["a"][g], pk["b"][g], np.maximum(pk["r"][g], 1e-9)[:, None]
    faces = np.concatenate([np.abs(p - a), np.abs(p - b)], -1).argmin(-1)  # box: nearest face of 6
    n_box = np.eye(3)[faces % 3] * np.where(faces < 3, -1.0, 1.0)[:, None]
    ba, pa = b - a, p - a
    h = np.clip(_dot(pa, ba) / np.maximum(_dot(ba, ba), 1e-12), 0, 1)[:, None]
    conds = [kind == _KIND["plane"], kind == _KIND["sphere"], kind == _KIND["box"]]
    n = np.select([c[:, None] for c in conds], [b, (p - a) / r, n_box], (pa - h * ba) / r)
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return np.where((_dot(n, u) > 0)[:, None], -n, n)


# --- foreground coverage (alpha) -------------------------------------------------------------------------
def _subpixel_rays(pix, size, f, R, n=SUPERSAMPLE):  # -> unit world dirs [Q, n*n, 3], 1/|d_cam| [Q, n*n]
    i, j = np.divmod(pix, size)
    off = (np.arange(n) + 0.5) / n - 0.5
    oi, oj = np.meshgrid(off, off, indexing="ij")
    c = (size - 1) / 2
    x = (j[:, None] + oj.ravel() - c) / f
    y = -(i[:, None] + oi.ravel() - c) / f
    d = np.stack([x, y, -np.ones_like(x)], -1)                              # [Q, n*n, 3] camera
    length = np.linalg.norm(d, axis=-1)
    return (d / length[..., None]) @ R.T, 1 / length


def _coverage(pk, o, u, inv_len, f, z_bg, size, R) -> tuple[np.ndarray, np.ndarray]:
    """alpha [P] = max over foreground primitives of opacity x pixel coverage, and the argmax primitive."""
    P = len(u)
    fg = np.nonzero(pk["fg"] & (pk["kind"] != _KIND["plane"]))[0]
    cov = np.zeros((len(fg), P))
    if len(fg) == 0:
        return np.zeros(P), np.full(P, -1)
    margin = 2.0 * np.linalg.norm(pk["bc"][fg] - o, axis=1) / f + 1e-3     # two pixels at the object
    k, p = _candidates(pk["bc"][fg], pk["br"][fg] + margin, o, u, R, f, size)
    g = fg[k]
    # 1. spheres and capsules: analytic, from the ray's closest approach to the centre / axis
    sel = pk["kind"][g] != _KIND["box"]
    kk, pp, gg = k[sel], p[sel], g[sel]
    b = np.where((pk["kind"][gg] == _KIND["sphere"])[:, None], pk["a"][gg], pk["b"][gg])
    dist, s = _ray_segment(o, u[pp], pk["a"][gg], b)
    z = np.maximum(s * inv_len[pp], EPS)                                    # planar depth, closest point
    d_px, r_px = dist * f / z, pk["r"][gg] * f / z
    c = np.clip(np.minimum(d_px + r_px, 0.5) - np.maximum(d_px - r_px, -0.5), 0, 1)
    cov[kk, pp] = np.where((s > EPS) & (z - pk["r"][gg] < z_bg[pp]), c, 0)
    # 2. boxes: SUPERSAMPLE^2 sub-rays per pixel
    sel = pk["kind"][g] == _KIND["box"]
    kk, pp, gg = k[sel], p[sel], g[sel]
    if len(pp):
        us, inv = _subpixel_rays(pp, size, f, R)                            # [Q, S, 3], [Q, S]
        S = us.shape[1]
        t = _hit_box(o, us.reshape(-1, 3), np.repeat(pk["a"][gg], S, 0), np.repeat(pk["b"][gg], S, 0))
        zs = t.reshape(-1, S) * inv                                          # [Q, S]
        cov[kk, pp] = (zs < z_bg[pp][:, None] + 0.02).mean(1)
    cov *= pk["opacity"][fg][:, None]
    best = cov.argmax(0)
    return cov[best, np.arange(P)], fg[best]


# --- textures and shading --------------------------------------------------------------------------------
def _value_noise(table, x, y):  # smooth noise in [0, 1] on a periodic lattice; x, y [P]
    n = table.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = x0.astype(np.int64) % n, y0.astype(np.int64) % n
    i1, j1 = (i + 1) % n, (j + 1) % n
    v00, v10, v01, v11 = table[i, j], table[i1, j], table[i, j1], table[i1, j1]
    return v00 + (v10 - v00) * fx + (v01 - v00) * fy + (v00 - v10 - v01 + v11) * fx * fy


def _albedo(sc, pk, g, p, n) -> np.ndarray:
    """Procedural albedo [P, 3] of primitive g at world points p with world normals n."""
    tex, c1, c2, scale = pk["tex"][g], pk["c1"][g], pk["c2"][g], pk["scale"][g]
    ax = np.abs(n).argmax(-1)                                              # texture plane: drop normal axis
    tu = np.where(ax == 0, p[:, 2], p[:, 0])
    tv = np.where(ax == 1, p[:, 2], p[:, 1])
    su, sv = tu / scale, tv / scale
    table = sc.noise_table
    grain = _value_noise(table, tu * 9 + 31 * ax, tv * 9)                 # fine grain on every surface
    w = np.select(
        [tex == _TEX["checker"], tex == _TEX["stripes"], tex == _TEX["noise"]],
        [(np.floor(su) + np.floor(sv)) % 2, np.floor(su) % 2,
         _value_noise(table, su + 13 * ax, sv) * 0.6 + 0.4 * grain], 0.0)
    col = c1 * (1 - w[:, None]) + c2 * w[:, None]
    # road: asphalt, dashed centre line, solid edge lines at |x| = scale
    line = (np.abs(tu) < 0.08) & (np.floor(tv / 3) % 2 == 0) | (np.abs(np.abs(tu) - scale) < 0.08)
    road = np.where(line[:, None], 0.9, c1 * (0.8 + 0.4 * grain[:, None]))
    # facades: a grid of windows (not on roofs), one shade per window
    gu, gv = tu / (2.6 * scale), tv / (3.2 * scale)                        # window grid: 2.6 m x 3.2 m
    wu, wv = gu % 1, gv % 1
    win = (wu > 0.25) & (wu < 0.75) & (wv > 0.3) & (wv < 0.78) & (ax != 1)
    cell = table[np.floor(gu).astype(np.int64) % 64, np.floor(gv).astype(np.int64) % 64]
    windows = np.where(win[:, None], c2 * (0.6 + 0.8 * cell[:, None]), c1 * (0.9 + 0.2 * grain[:, None]))
    # bricks: running bond, mortar in c2, one shade per brick
    row = np.floor(sv / 0.075)
    bu = su / 0.22 + 0.5 * (row % 2)
    mortar = ((bu % 1) < 0.08) | (((sv / 0.075) % 1) < 0.15)
    brick = table[np.floor(bu).astype(np.int64) % 64, row.astype(np.int64) % 64]
    bricks = np.where(mortar[:, None], c2, c1 * (0.75 + 0.5 * brick[:, None]))
    special = [(tex == _TEX[k])[:, None] for k in ("road", "windows", "bricks")]
    col = np.select(special, [road, windows, bricks], col)
    return col * (0.92 + 0.16 * grain[:, None])


def _shade(sc, pk, g, t, o, u) -> np.ndarray:
    """Lambertian colour [P, 3] of primitive g hit at ray length t (finite) along u."""
    p = o + t[:, None] * u
    n = _normals(pk, g, p, u)
    lam = np.maximum(n @ sc.light_dir, 0)
    hemi = 0.75 + 0.25 * n[:, 1]                                           # sky ambient: up faces brighter
    light = (sc.ambient * hemi + sc.strength * lam)[:, None] * sc.light_col
    return _albedo(sc, pk, g, p, n) * light


def _sky_colour(sc, u) -> np.ndarray:  # [P, 3]
    if sc.sky is None:
        return np.zeros((len(u), 3))
    horizon, zenith = sc.sky
    up = np.clip(u[:, 1], 0, 1)[:, None] ** 0.6
    glow = np.maximum(u @ sc.light_dir, 0)[:, None] ** 64
    return horizon * (1 - up) + zenith * up + glow * 0.6


def _fog(sc, col, dist, sky):
    k = (1 - np.exp(-dist / sc.fog))[:, None]
    return col * (1 - k) + sky * k


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


def render(domain: str, index: int, size: int = DEFAULT_SIZE) -> dict:
    """Render scene ``index`` of ``domain`` at ``size`` x ``size``; conventions in the module docstring.

    Returns rgb [3, H, W], depth [H, W] (m, 0 = invalid), valid [H, W] bool, normal [3, H, W], mask and
    alpha [H, W], semantic and instance [H, W] int64, keypoints and joints3d [N, 17, 3], boxes [N, 4],
    areas [N], intrinsics [3, 3] (float32 unless noted), domain and index.
    """
    _check_args(domain, index, size)
    index, size = int(index), int(size)
    base = _REALLIKE[domain]["base"] if domain in _REALLIKE else domain
    sc = _build_scene(base, _rng(base, index))                            # the scene ignores size
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


# --- batches and sampling --------------------------------------------------------------------------------
_LIST_KEYS = ("keypoints", "joints3d", "boxes", "areas", "domain")


def render_batch(domain: str, indices, size: int = DEFAULT_SIZE) -> dict:
    """Render several scenes of one domain; arrays are stacked on a leading batch axis, the per-person
    labels (keypoints, joints3d, boxes, areas) stay lists because N varies."""
    samples = [render(domain, i, size) for i in indices]
    if not samples:
        raise ValueError("indices must not be empty")
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        out[key] = vals if key in _LIST_KEYS else np.stack([np.asarray(v) for v in vals])
    out["domain"] = domain
    return out


def sample_training_indices(n: int, seed: int = 0, mix: dict | None = None) -> list[tuple[str, int]]:
    """``n`` (domain, index) pairs drawn with the paper's training mix (90 % Hypersim-like, 10 % VKITTI-like
    by default); indices are distinct per domain, drawn from [0, 2**31)."""
    mix = TRAIN_MIX if mix is None else mix
    for name in mix:
        _check_args(name, 0, MIN_SIZE)
    rng = _rng("train-mix", seed)
    names = list(mix)
    p = np.array([mix[k] for k in names], float)
    doms = rng.choice(len(names), size=n, p=p / p.sum())
    idx = rng.choice(2**31, size=n, replace=False)
    return [(names[d], int(i)) for d, i in zip(doms, idx)]


# --- figure ----------------------------------------------------------------------------------------------
def write_sample_grid(path, size: int = DEFAULT_SIZE, index: int = 0) -> Path:
    """A PNG grid, one row per domain: rgb | depth | normal | mask | alpha | semantic | keypoints."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from ..results import atomic_path

    path = Path(path)
    if path.is_dir():  # else savefig's IsADirectoryError, after the whole grid was rendered
        raise ValueError(f"{path} is a folder: expected the path of the PNG file to write, "
                         f"e.g. {path / 'toyworld.png'}")
    cols = ["rgb", "depth", "normal", "mask", "alpha", "semantic", "keypoints"]
    fig = Figure(figsize=(1.5 * len(cols) + 0.6, 1.5 * len(DOMAINS) + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(DOMAINS), len(cols), squeeze=False)
    from .. import viz

    for r, dom in enumerate(DOMAINS):
        s = render(dom, index, size)
        d = s["depth"][s["valid"]]
        rgb = s["rgb"].transpose(1, 2, 0)
        depth = viz.colorize_depth(s["depth"], s["valid"], lo=d.min() if d.size else 0, hi=d.max() if d.size else 1)
        imgs = [rgb, depth, viz.normals_to_rgb(s["normal"], s["valid"]), s["mask"], s["alpha"],
                SEMANTIC_COLORS[s["semantic"]], rgb]
        for c, ax in enumerate(axes[r]):
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        for kp in s["keypoints"]:
            for a, b in SKELETON:
                if kp[a, 2] > 0 and kp[b, 2] > 0:
                    axes[r, -1].plot(kp[[a, b], 0], kp[[a, b], 1], "-", color="lime", lw=0.8)
            on = kp[:, 2] > 0
            colours = np.where(kp[on, 2] == 2, "red", "yellow")
            axes[r, -1].scatter(kp[on, 0], kp[on, 1], s=5, c=colours, zorder=3)
        axes[r, -1].set_xlim(-0.5, size - 0.5)
        axes[r, -1].set_ylim(size - 0.5, -0.5)
        rng_m = DOMAIN_INFO[dom]["depth_range"]
        axes[r, 0].set_ylabel(f"{dom}\n({rng_m[0]:g}-{rng_m[1]:g} m)", fontsize=6.5)
    handles = [Patch(color=SEMANTIC_COLORS[i], label=name) for i, name in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=6.5, frameon=False)
    fig.suptitle(f"Toy world, scene index {index}, {size}x{size}: depth near=red far=blue (invalid black), "
                 "normal (n+1)/2, keypoints red=visible yellow=occluded", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    with atomic_path(path) as tmp:  # a temporary file renamed over ``path``, with the user's usual mode
        fig.savefig(tmp, format="png")
    return path
