"""Geometry: the scene packed into arrays, analytic ray-primitive intersections, foreground coverage (alpha)."""

from __future__ import annotations

import numpy as np

from ...domains import _KIND, EPS, SUPERSAMPLE
from .scene import _Scene


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


