"""P3M-500 matting errors: an independent transcription of P3M's definitions, hand cases, bad input."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from genpercept_lib.metrics import matting as M

SIGMA, RADIUS = 1.4, 6  # P3M: scipy gaussian_filter(sigma=1.4), truncate 4 -> radius int(4 * 1.4 + 0.5)


# --------------------------------------------------------------------------- the reference, written out plainly
def _kernels():
    """1-D Gaussian (sum 1) and its derivative (-x / sigma^2 times it), taps x = -6..6."""
    x = np.arange(-RADIUS, RADIUS + 1)
    g = np.exp(-(x**2) / (2 * SIGMA**2))
    g = g / g.sum()
    return x, g, -x / SIGMA**2 * g


def _ref_grad_mag(a):
    """|grad| by explicit 2-D convolution over a half-sample symmetric ('reflect') padded image."""
    x, g, d = _kernels()
    h, w = a.shape
    pad = np.pad(a, RADIUS, mode="symmetric")

    def conv(k0, k1):  # out(y, x) = sum_uv k0(u) k1(v) a(y - u, x - v)
        out = np.zeros_like(a)
        for i, u in enumerate(x):
            for j, v in enumerate(x):
                out += k0[i] * k1[j] * pad[RADIUS - u : RADIUS - u + h, RADIUS - v : RADIUS - v + w]
        return out

    return np.sqrt(conv(d, g) ** 2 + conv(g, d) ** 2)


def _largest_component(mask):
    """Pixels of the largest 4-connected component; the first found in raster order wins a tie."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            comp, stack = [], [(y0, x0)]
            seen[y0, x0] = True
            while stack:
                y, x = stack.pop()
                comp.append((y, x))
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            if len(comp) > len(best):
                best = comp
    return best


def _ref_conn_map(p, g):
    h, w = p.shape
    level = np.full((h, w), -1.0, dtype=np.float32)
    for i in range(1, 11):
        t, t_prev = i * 0.1, (i - 1) * 0.1
        comp = _largest_component((p >= t) & (g >= t))
        if not comp:
            continue
        omega = np.zeros((h, w), dtype=bool)
        for y, x in comp:
            omega[y, x] = True
        for y in range(h):
            for x in range(w):
                if level[y, x] == -1 and not omega[y, x]:
                    level[y, x] = t_prev
    level[level == -1] = 1.0
    phi = lambda a: np.where(a - level >= 0.15, 1.0 - (a - level), 1.0)
    return np.abs(phi(p) - phi(g))


def _ref_image(p, g, trimap=None):
    if trimap is None:
        n, region = p.size, np.ones(p.shape, dtype=bool)
    else:
        p = p.copy()
        p[trimap == 255] = 1.0
        p[trimap == 0] = 0.0
        n, region = (trimap == 128).sum(), trimap == 128
    diff = p - g
    grad_err = (_ref_grad_mag(p) - _ref_grad_mag(g)) ** 2
    return {
        "SAD": np.abs(diff).sum() / 1000,
        "MSE": (diff**2).sum() / n,
        "MAD": np.abs(diff).sum() / n,
        "Grad": grad_err[region].sum() / 10,
        "Conn": _ref_conn_map(p, g)[region].sum() / 1000,
    }


def _random_set(seed, n=3, h=24, w=32):
    """Smooth 8-bit-valued mattes with solid 0 / 1 regions, noisy predictions, trimaps from the gt."""
    rng = np.random.default_rng(seed)
    preds, gts, trimaps = [], [], []
    for _ in range(n):
        field = ndimage.uniform_filter(rng.normal(size=(h, w)), 7)
        gt = np.round(np.clip(0.5 + 1.5 * field / field.std(), 0, 1) * 255) / 255
        noise = ndimage.uniform_filter(rng.normal(size=(h, w)), 3)
        pred = np.round(np.clip(gt + 0.6 * noise / noise.std() * rng.uniform(0.1, 0.5), 0, 1) * 255) / 255
        unknown = ndimage.binary_dilation((gt > 0) & (gt < 1))
        trimaps.append(np.where(unknown, 128, np.where(gt >= 0.5, 255, 0)).astype(np.uint8))
        preds.append(pred)
        gts.append(gt)
    return preds, gts, trimaps


# ------------------------------------------------------------------------------------------ against the reference
@pytest.mark.parametrize("use_trimap", [False, True])
def test_evaluate_matches_the_transcribed_p3m_definitions(use_trimap):
    preds, gts, trimaps = _random_set(seed=3)
    tri = trimaps if use_trimap else None
    got = M.evaluate(preds, gts, tri)
    refs = [_ref_image(p, g, None if tri is None else t) for p, g, t in zip(preds, gts, trimaps)]
    want = {k: float(np.mean([r[k] for r in refs])) for k in M.METRICS}
    assert set(got) == set(M.METRICS) and all(isinstance(v, float) for v in got.values())
    for k in ("SAD", "MSE", "MAD"):
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k
    for k in ("Grad", "Conn"):
        assert want[k] > 0 and got[k] == pytest.approx(want[k], rel=1e-3), k
    if use_trimap:  # the trimap variants really differ from the whole-image numbers
        assert got["MSE"] != pytest.approx(M.evaluate(preds, gts)["MSE"], rel=1e-3)


def test_torch_inputs_give_the_numpy_numbers():
    preds, gts, trimaps = _random_set(seed=5, n=2)
    as_t = lambda xs: [torch.tensor(x) for x in xs]
    assert M.evaluate(as_t(preds), as_t(gts), as_t(trimaps)) == M.evaluate(preds, gts, trimaps)
    assert M.evaluate(np.stack(preds), np.stack(gts)) == M.evaluate(preds, gts)  # an [N, H, W] array works too


# -------------------------------------------------------------------------------------------------- hand cases
def test_perfect_prediction_scores_zero():
    _, gts, trimaps = _random_set(seed=1, n=2)
    assert M.evaluate(gts, gts) == dict.fromkeys(M.METRICS, 0.0)
    assert M.evaluate(gts, gts, trimaps) == dict.fromkeys(M.METRICS, 0.0)


def test_constant_offset():
    h, w, c = 20, 30, 0.25
    gt = 0.5 * ndimage.uniform_filter(np.random.default_rng(0).uniform(size=(h, w)), 5)  # in [0, 0.5]
    m = M.evaluate([gt + c], [gt])
    assert m["SAD"] == pytest.approx(c * h * w / 1000, rel=1e-12)
    assert m["MSE"] == pytest.approx(c**2, rel=1e-12)
    assert m["MAD"] == pytest.approx(c, rel=1e-12)
    # 'reflect' borders extend a constant as a constant, so the offset adds no gradient, borders included
    assert m["Grad"] < 1e-20


def test_grad_of_an_impulse_interior_and_in_the_corner():
    _, g, d = _kernels()
    zero = np.zeros((21, 21))
    centre = zero.copy()
    centre[10, 10] = 1.0  # radius 6 stays inside: |grad|^2 sums to 2 * sum(d^2) * sum(g^2)
    assert M.grad(centre, zero) == pytest.approx(2 * (d**2).sum() * (g**2).sum() / 10, rel=1e-9)
    corner = zero.copy()
    corner[0, 0] = 1.0  # 'reflect' mirrors it onto the 2 x 2 block (-1..0, -1..0): responses d(i) + d(i + 1)
    d_pair = d[RADIUS:] + np.append(d[RADIUS + 1 :], 0.0)  # i = 0..6; zero beyond
    g_pair = g[RADIUS:] + np.append(g[RADIUS + 1 :], 0.0)
    assert M.grad(corner, zero) == pytest.approx(2 * (d_pair**2).sum() * (g_pair**2).sum() / 10, rel=1e-9)


def _two_blobs(v):
    """gt: an 8 x 8 blob A of 1 and a 3 x 3 blob B of v; pred: A only (B missed)."""
    gt = np.zeros((20, 20))
    gt[2:10, 2:10] = 1.0
    gt[14:17, 14:17] = v
    pred = gt.copy()
    pred[14:17, 14:17] = 0.0
    return pred, gt


@pytest.mark.parametrize("v, want", [(1.0, 9 / 1000), (0.6, 9 * 0.6 / 1000), (0.15, 9 * 0.15 / 1000), (0.1, 0.0)])
def test_conn_of_one_missing_blob(v, want):
    # B leaves the common component at the first level, so l = 0 there; phi(g) = 1 - v if v >= 0.15 (inclusive)
    pred, gt = _two_blobs(v)
    assert M.conn(pred, gt) == pytest.approx(want, abs=1e-12)
    trimap = np.zeros((20, 20), dtype=np.uint8)  # the same blob scored through a trimap around B
    trimap[2:10, 2:10] = 255
    trimap[13:18, 13:18] = 128
    m = M.evaluate([pred], [gt], [trimap])
    assert m["Conn"] == pytest.approx(want, abs=1e-12)
    assert m["SAD"] == pytest.approx(9 * v / 1000) and m["MAD"] == pytest.approx(9 * v / 25)
    assert m["MSE"] == pytest.approx(9 * v**2 / 25)


def test_conn_thresholds_are_the_arange_floats():
    # 6 * 0.1 = 0.6000000000000001 > 0.6 = 153 / 255: a gt of exactly 0.6 drops out at t_6, so l = t_5 = 0.5
    pred, gt = _two_blobs(1.0)
    gt[10:12, 2:10] = 0.6  # a strip C joined to A (16 px)
    pred[10:12, 2:10] = 0.7
    level = M.connectivity_levels(pred, gt)
    assert (level[10:12, 2:10] == 0.5).all()  # a threshold of exactly 0.6 (rounded) would give 0.6
    # phi(g) = 1 (d = 0.1 < 0.15), phi(p) = 1 - 0.2; B (missed) adds 9
    assert M.conn(pred, gt) == pytest.approx((16 * 0.2 + 9) / 1000, rel=1e-9)


def test_conn_is_zero_for_an_all_zero_prediction_under_p3m():
    # every common set is empty, P3M skips each level and all pixels end at l = 1: nothing counts
    _, gt = _two_blobs(1.0)
    assert M.conn(np.zeros_like(gt), gt) == 0.0
    assert M.sad(np.zeros_like(gt), gt) == pytest.approx(73 / 1000)


def test_connectivity_is_4_neighbour():
    a = np.zeros((6, 6))
    a[0:3, 0:3] = 1.0
    a[3:5, 3:5] = 1.0  # touches the first block only at a corner
    level = M.connectivity_levels(a, a)
    assert level.dtype == np.float32
    assert (level[0:3, 0:3] == 1.0).all() and (level[3:5, 3:5] == 0.0).all()  # two components, not one


def test_trimap_overwrites_known_pixels_and_normalises_by_unknown_count():
    gt = np.zeros((4, 5))
    gt[0] = 0.5  # row 0 unknown; rows 1-2 background, row 3 foreground
    gt[3] = 1.0
    trimap = np.array([[128] * 5, [0] * 5, [0] * 5, [255] * 5], dtype=np.uint8)
    pred = np.full((4, 5), 0.3)  # wrong on every known pixel: the trimap fixes those
    pred[0] = 0.6
    assert M.sad(pred, gt, trimap) == pytest.approx(5 * 0.1 / 1000)
    assert M.mse(pred, gt, trimap) == pytest.approx(0.01)
    assert M.mad(pred, gt, trimap) == pytest.approx(0.1)
    assert M.sad(pred, gt) == pytest.approx((5 * 0.1 + 10 * 0.3 + 5 * 0.7) / 1000)
    assert M.mad(pred, gt) == pytest.approx((5 * 0.1 + 10 * 0.3 + 5 * 0.7) / 20)


# --------------------------------------------------------------------------------------------------- bad input
P = np.full((6, 7), 0.5)
T = np.full((6, 7), 128, dtype=np.uint8)


def _with(a, idx, value):
    a = np.array(a)
    a[idx] = value
    return a


BAD_EVALUATE = [
    (([P], [np.zeros((6, 8))], None), r"^gts\[0\]: shape \(6, 8\) does not match the prediction's \(6, 7\)$"),
    (([P, P * 2.5], [P, P], None), r"^preds\[1\]: values in \[1\.25, 1\.25\]; expected alphas in \[0, 1\]"),
    (([P], [P - 0.7], None), r"^gts\[0\]: values in \[-0\.2, -0\.2\]"),
    (([P, _with(P, (0, 0), np.nan)], [P, P], None), r"^preds\[1\]: 1 values are NaN or inf"),
    (([P], [_with(P, (2, 3), np.inf)], None), r"^gts\[0\]: 1 values are NaN or inf"),
    (([P], [P], [T[:, :5]]), r"^trimaps\[0\]: shape \(6, 5\) does not match the prediction's \(6, 7\)$"),
    (([P], [P], [_with(T, (1, 1), 127)]), r"^trimaps\[0\]: has values \[127\.0\]; expected only 0, 128, 255$"),
    (([P], [P], [np.zeros_like(T)]), r"^trimaps\[0\]: no unknown \(128\) pixels"),
    (([], [], None), r"^preds: is empty"),
    (([P, P], [P], None), r"^gts: length 1 does not match preds' length 2$"),
    (([P, P], [P, P], [T]), r"^trimaps: length 1 does not match preds' length 2$"),
    (([P[None]], [P], None), r"^preds\[0\]: expected a non-empty 2-D \[H, W\] array, got shape \(1, 6, 7\)$"),
    (([np.zeros((0, 7))], [P], None), r"^preds\[0\]: expected a non-empty 2-D"),
    ((["abc"], [P], None), r"^preds\[0\]: expected a 2-D numeric array, got str$"),
    ((P, [P], None), r"^preds: expected a list of 2-D mattes"),
]


@pytest.mark.parametrize("args, match", BAD_EVALUATE)
def test_evaluate_bad_input_is_a_one_line_value_error(args, match):
    with pytest.raises(ValueError, match=match) as err:
        M.evaluate(*args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (M.sad, (P, P[:, :-1]), r"^gt: shape \(6, 6\) does not match"),
        (M.mse, (P, P, T[:-1]), r"^trimap: shape"),
        (M.grad, (P, P, _with(T, (0, 0), 1)), r"^trimap: has values \[1\.0\]"),
        (M.conn, (P * 3, P), r"^pred: values in"),
        (M.mad, (P, _with(P, (0, 0), -np.inf)), r"^gt: 1 values are NaN or inf"),
    ],
)
def test_per_image_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value)
