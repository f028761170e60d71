"""Textures and shading: albedo patterns, Lambertian light, sky and fog."""

from __future__ import annotations

import numpy as np

from ...domains import _TEX
from .raycast import _normals


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


