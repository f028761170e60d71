"""Scene description: placement, objects, people and the layouts of rooms, streets, plazas and facades."""

from __future__ import annotations

import colorsys

import numpy as np

from ...domains import _CLS, _KIND, _OUTDOOR_FG, _STYLES, _TEX, KEYPOINT_NAMES


# --- scene description -----------------------------------------------------------------------------------
class _Scene:
    """Primitives, camera, light and people of one scene (world frame)."""

    def __init__(self, rng: np.random.Generator, style: dict):
        self.rng, self.style = rng, style
        self.prims: list[dict] = []
        self.people: list[np.ndarray] = []      # [17, 3] world joints per person
        self.occupied: list[tuple] = []          # (x, z, radius) ground discs already used
        self.fg_disc = None                      # (x, z, radius) of the foreground object: keep it in sight
        self.subject = False                     # frame the foreground object as the subject (``_subject``)
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
    if dist[0] > dist[1]:                                                  # (subject framing: nothing fits)
        return None
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


# --- subject framing (DIS and matting only) ----------------------------------------------------------------
# Nominal (height of the middle, largest extent) of each foreground kind, in metres: how far away it must stand to
# fill a given share of the view, and where the camera aims.
_SUBJECT_SIZE = dict(person=(0.9, 1.8), chair=(0.47, 0.95), table=(0.38, 1.3), lamp=(0.8, 1.8), plant=(0.5, 1.1),
                     stool=(0.33, 0.7), tree=(2.4, 4.5), streetlamp=(3.3, 6.5), fence=(0.6, 3.0))


def _subject(sc, choice: str, bounds=None, *, thick=1.0) -> bool:
    """Place the foreground object ``choice`` as the scene's subject, as a DIS5K or P3M photo frames it: near the
    camera, at a distance where its nominal extent (``_SUBJECT_SIZE``) spans 65-90% of the field of view (a fence
    faces the camera, 2-4 m long), then the camera turns to it, aiming at its middle to within 8% of the half field
    of view. False where no free spot was found (no foreground). Only scenes built with ``subject=True`` call it:
    it draws from the scene's generator, so a plain scene never reaches it and stays as it was."""
    rng = sc.rng
    mid, extent = _SUBJECT_SIZE[choice]
    d = max(1.0, extent / (2 * np.tan(rng.uniform(0.65, 0.9) * sc.hfov / 2)))
    spot = None
    tries = (((d, 1.15 * d), 0.15), ((0.8 * d, 1.3 * d), 0.4), ((0.5 * d, d), 0.6), ((1.2, 2 * d), 0.8))
    for dist, spread in tries:                                            # wider, nearer, then anywhere near
        spot = _spot(sc, dist, spread, 0.6, bounds)
        if spot is not None:
            break
    if spot is None:
        return False
    x, z = spot
    dx, dz = x - sc.cam_pos[0], z - sc.cam_pos[2]
    yaw = float(np.arctan2(-dx, -dz))                                     # forward = (-sin yaw, -cos yaw)
    if choice == "fence":
        turn = yaw + rng.uniform(-0.5, 0.5)                               # roughly facing the camera
        _foreground(sc, choice, x, z, along=np.array([np.cos(turn), 0, -np.sin(turn)]), thick=thick)
    else:
        _foreground(sc, choice, x, z)
    sc.fg_disc = (x, z, max(0.7, extent / 2))                             # nothing placed later stands in front
    jitter = 0.08 * sc.hfov / 2
    yaw += rng.uniform(-jitter, jitter)
    pitch = float(np.arctan2(mid - sc.cam_pos[1], np.hypot(dx, dz))) + rng.uniform(-jitter, jitter)
    sc.cam_R, sc.yaw = _rotation(yaw, pitch), yaw
    return True


def _beyond_subject(sc, lo: float) -> float:
    """The nearest distance for free-standing objects and people: ``lo``, or with subject framing at least twice the
    subject's distance (``_twice_as_far``), so no other object competes with it for the view."""
    return max(lo, _twice_as_far(sc)) if sc.subject else lo


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
    if sc.subject:
        _subject(sc, _pick(rng, st["fg"]), bounds)
    else:
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
        cx, cz = (lo[0] + hi[0]) / 2, (lo[2] + hi[2]) / 2
        if sc.subject and np.hypot(cx - sc.cam_pos[0], cz - sc.cam_pos[2]) < _beyond_subject(sc, 0.0) + w / 2:
            continue                                                        # (subject framing: no cabinet near it)
        if _claim(sc, cx, cz, w / 2):
            sc.box(lo, hi, mat, "furniture")
    # 4. free-standing clutter: tables with things on them, balls, bins, boxes
    for _ in range(rng.integers(*st["clutter"], endpoint=True)):
        spot = _spot(sc, (_beyond_subject(sc, 1.2), D), 0.95, 0.5, bounds)
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
    _people(sc, int(rng.integers(*st["people"], endpoint=True)), (_beyond_subject(sc, 1.8), D), bounds)


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
    if sc.subject:
        _subject(sc, fg, bounds[:3] + (-0.5,), thick=2.0)                # may stand nearer than 3 m
    elif fg == "fence":
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
    _people(sc, int(rng.integers(*st["people"], endpoint=True)),
            (max(4.0, near) if fg == "person" else _beyond_subject(sc, 4), 30), bounds)


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
    if sc.subject:
        fg = _pick(rng, _OUTDOOR_FG)
        _subject(sc, fg)
    else:
        spot, fg = _spot(sc, (2.5, 5.5), 0.45, 0.8), _pick(rng, _OUTDOOR_FG)
        if spot is not None:
            _foreground(sc, fg, *spot)                                     # outdoor objects, also for DIODE
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
    _people(sc, int(rng.integers(*st["people"], endpoint=True)),
            (max(3.0, near) if fg == "person" else _beyond_subject(sc, 3), 25))


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
    court = (-width / 2, width / 2, -dist + 4, 5)
    if sc.subject:
        fg = _pick(rng, st["fg"])
        _subject(sc, fg, (-width / 2, width / 2, -dist + 4.5, 5))         # in front of the stairs
    else:
        spot, fg = _spot(sc, (2.5, 5.0), 0.45, 0.8), _pick(rng, st["fg"])
        if spot is not None:
            _foreground(sc, fg, *spot)
    near = _twice_as_far(sc)
    _people(sc, int(rng.integers(*st["people"], endpoint=True)),
            (min(max(3.0, near), dist - 0.5) if fg == "person" else min(_beyond_subject(sc, 3), dist - 0.5), dist),
            court)


def _build_scene(domain: str, rng: np.random.Generator, subject: bool = False) -> _Scene:
    """The scene of ``domain`` drawn from ``rng``; ``subject=True`` frames its foreground object as the subject
    (``_subject``, ``_beyond_subject``: DIS and matting)."""
    st = _STYLES[domain]
    sc = _Scene(rng, st)
    sc.subject = bool(subject)
    kind = st["kind"]
    if kind == "diode":
        kind = "room" if rng.random() < 0.5 else "plaza"
    {"room": _room, "street": _street, "plaza": _plaza, "facade": _facade}[kind](sc, st)
    return sc


