"""DIS5K metrics: agreement with pysodmetrics, HCE against a transcription of the DIS script, known cases."""

import warnings

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.measure import label
from skimage.morphology import disk, skeletonize

from genpercept_lib.metrics import dis as D

# ---------------------------------------------------------------- helpers


def _blobs(rng, shape, sigma=3.0):
    """Smooth random field in [0, 1]: blob-like masks after a threshold."""
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.min()) / (f.max() - f.min())


def _random_pair(rng, shape):
    """uint8 gt (mostly 0/255, a few soft edge values) and a soft uint8 prediction not spanning [0, 255]."""
    field = _blobs(rng, shape)
    gt = np.where(field > 0.55, 255, 0).astype(np.uint8)
    edge = np.abs(field - 0.55) < 0.01
    gt[edge] = rng.integers(100, 160, edge.sum())  # soft values on both sides of 128
    noise = _blobs(rng, shape, sigma=1.5)
    pred = np.clip(0.7 * (gt / 255.0) + 0.3 * noise, 0, 1) * 230 + 10
    return np.rint(pred).astype(np.uint8), gt


def _pysod_direct(preds, gts):
    """pysodmetrics used as its README shows, on uint8 maps (legacy Fmeasure: its "curve")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation notice
        fm = sod.Fmeasure()
    wfm, sm, em, mae = sod.WeightedFmeasure(), sod.Smeasure(), sod.Emeasure(), sod.MAE()
    for p, g in zip(preds, gts):
        for m in (fm, wfm, sm, em, mae):
            m.step(p, g)
    return {
        "max_F_beta": fm.get_results()["fm"]["curve"].max(),
        "weighted_F_beta": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "S_alpha": sm.get_results()["sm"],
        "mean_E_phi": em.get_results()["em"]["curve"].mean(),
    }


def _pysod_hce(pred, gt):
    m = sod.HumanCorrectionEffortMeasure()
    m.step(pred, gt)
    return float(m.get_results()["hce"])


def _dis_hce(pred, gt, relax=5, epsilon=2.0):
    """HCE as the DIS benchmark defines it (xuebinqin/DIS, IS-Net/hce_metric_main.py), transcribed anew.

    Binarise both uint8 maps at > 128; relax FP / FN by eroding their union `relax` times and growing the
    kept parts back inside the error; keep FN on the gt skeleton; walk each error region's contour, keep
    the runs of points touching the (dilated) correct side, join the first and last runs when they are
    8-neighbours, count RDP polygon vertices of the runs plus the regions with no kept point (counted over
    np.unique of the labels, as the script does).
    """
    k = disk(1).astype(np.uint8)
    g, r = gt > 128, pred > 128
    ske = skeletonize(g)
    tp, fp, fn = g & r, r & ~g, g & ~r
    core = cv2.erode((g | r).astype(np.uint8), k, iterations=relax).astype(bool)
    fp_r, fn_r = fp & core, fn & core
    for _ in range(relax):
        fp_r = cv2.dilate(fp_r.astype(np.uint8), k).astype(bool) & ~g
        fn_r = cv2.dilate(fn_r.astype(np.uint8), k).astype(bool) & ~r
    fp_r, fn_r = fp & fp_r, (fn & fn_r) | (ske & ~tp)

    def effort(mask, cond):
        cond = cv2.dilate(cond.astype(np.uint8), k) > 0
        labels = label(mask)
        untouched = np.ones(len(np.unique(labels)))
        untouched[0] = 0
        seen = np.zeros(mask.shape, bool)
        runs = []
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            cur, pieces = [], []
            for x, y in c[:, 0, :]:
                if not cond[y, x] or seen[y, x]:
                    if cur:
                        pieces.append(cur)
                    cur = []
                    continue
                cur.append((x, y))
                seen[y, x] = True
                untouched[labels[y, x]] = 0
            if cur:
                pieces.append(cur)
            if len(pieces) > 1:
                (x0, y0), (x1, y1) = pieces[0][0], pieces[-1][-1]
                if max(abs(x0 - x1), abs(y0 - y1)) == 1:
                    pieces[-1] = pieces[-1] + pieces[0][::-1]
                    pieces = pieces[1:]
            runs += pieces
        pts = sum(len(cv2.approxPolyDP(np.array(p, np.int32)[:, None, :], epsilon, False)) for p in runs)
        return pts + untouched.sum()

    return float(effort(fp_r, tp | fn_r) + effort(fn_r, ~(tp | fp_r | fn_r)))


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    return [_random_pair(rng, s) for s in [(48, 64), (64, 48), (56, 56), (40, 72)]]


# ---------------------------------------------------------------- agreement


def test_matches_pysodmetrics_and_input_forms_agree(pairs):
    preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
    ours = D.evaluate(preds, gts)
    assert list(ours) == list(D.DIS_METRICS) and all(type(v) is float for v in ours.values())
    for key, ref in _pysod_direct(preds, gts).items():
        assert ours[key] == pytest.approx(float(ref), abs=1e-6), key
    assert 0.3 < ours["max_F_beta"] < 1 and ours["HCE_gamma"] > 0  # a non-trivial case
    as_float = D.evaluate([p / 255.0 for p in preds], tuple(g.astype(np.float32) / 255 for g in gts))
    as_torch = D.evaluate([torch.tensor(p / 255.0) for p in preds], [torch.from_numpy(g) for g in gts])
    assert as_float == ours and as_torch == ours


def test_every_uint8_level_survives_the_float_round_trip():
    u = np.arange(256, dtype=np.uint8).reshape(16, 16)
    gt = np.zeros((16, 16), np.uint8)
    gt[4:12, 3:9] = 255
    ref = D.evaluate([u], [gt])
    assert D.evaluate([u / 255.0], [gt]) == ref
    assert D.evaluate([(u / 255.0).astype(np.float32)], [gt]) == ref
    assert D.evaluate([torch.tensor(u / 255.0, dtype=torch.float32)], [torch.tensor(gt)]) == ref


def test_hce_matches_dis_transcription_on_soft_predictions(pairs):
    rng = np.random.default_rng(1)
    cases = list(pairs)
    _, gt = cases[0]
    cases.append(((gt > 128) * np.uint8(120), gt))  # right shape, but every value <= 128: DIS sees nothing
    cases.append((np.rint(_blobs(rng, gt.shape) * 255).astype(np.uint8), gt))  # unrelated blobs
    thin = np.zeros((64, 64), np.uint8)  # DIS-like thin structures: a blurred prediction breaks them
    thin[8:56:8, 4:60], thin[4:60, 10:60:12], thin[20:40, 20:44] = 255, 255, 255
    for sigma in (1.0, 1.3):
        cases.append((np.rint(np.clip(gaussian_filter(thin / 255.0, sigma) * 1.1, 0, 1) * 255).astype(np.uint8), thin))
    hces = [D.human_correction_effort(p, g) for p, g in cases]
    assert hces == [_dis_hce(p, g) for p, g in cases]
    assert min(hces) > 0 and max(hces) > 50
    assert D.evaluate([p for p, _ in cases], [g for _, g in cases])["HCE_gamma"] == pytest.approx(np.mean(hces))
    # pysodmetrics min-max stretches first: it calls the dim prediction perfect, DIS calls it empty
    dim, gt = cases[len(pairs)]
    assert _pysod_hce(dim, gt) == 0.0 and hces[len(pairs)] == _dis_hce(np.zeros_like(gt), gt) > 0


def test_hce_equals_pysodmetrics_for_binary_predictions(pairs):
    for p, g in pairs:
        binary = np.where(p > 128, 255, 0).astype(np.uint8)
        assert D.human_correction_effort(binary, g) == _pysod_hce(binary, g) == D.human_correction_effort(p, g)


def test_hce_whole_image_error_follows_dis_script():
    zeros, ones = np.zeros((24, 24), np.uint8), np.full((24, 24), 255, np.uint8)
    for pred, gt in [(ones, zeros), (zeros, ones)]:
        assert D.human_correction_effort(pred, gt) == _dis_hce(pred, gt) == 0.0
        assert _pysod_hce(pred, gt) == 1.0  # pysodmetrics counts the one region


# ---------------------------------------------------------------- known answers


def test_perfect_prediction():
    gt = np.zeros((32, 40), np.uint8)
    gt[8:20, 10:30] = 255
    gt[24:28, 2:6] = 255
    m = D.evaluate([gt, gt > 128], [gt, gt / 255.0])
    assert m["MAE"] == 0.0 and m["max_F_beta"] == pytest.approx(1.0) and m["weighted_F_beta"] == pytest.approx(1.0)
    assert m["S_alpha"] == pytest.approx(1.0, abs=1e-9) and m["HCE_gamma"] == 0.0
    assert 0.99 < m["mean_E_phi"] <= 1.0  # the threshold 0 (all foreground) pulls the mean below 1


def test_all_zero_prediction_on_a_square():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 255  # foreground fraction p = 0.25
    p, n = 0.25, 400
    m = D.evaluate([np.zeros_like(gt)], [gt])
    assert m["MAE"] == pytest.approx(p)
    assert m["max_F_beta"] == pytest.approx(1.3 * p / (0.3 * p + 1))  # threshold 0: P = p, R = 1
    assert m["weighted_F_beta"] == pytest.approx(0.0, abs=1e-6)
    assert m["S_alpha"] == pytest.approx(0.5 * (1 - p))  # object: background term only; region: 0
    assert m["mean_E_phi"] == pytest.approx(n / (4 * (n - 1)))  # every threshold: alignment 0 -> 1/4
    assert m["HCE_gamma"] == _dis_hce(np.zeros_like(gt), gt) > 0


def test_degenerate_ground_truths_are_quiet_and_defined():
    rng = np.random.default_rng(2)
    zeros, ones = np.zeros((16, 16), np.uint8), np.full((16, 16), 255, np.uint8)
    grey = np.full((16, 16), 0.25)
    noisy = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg = [D.evaluate([p], [zeros]) for p in (zeros, ones, grey, noisy)]
        fg = [D.evaluate([p], [ones]) for p in (zeros, ones, grey, noisy)]
    assert all(np.isfinite(list(m.values())).all() for m in bg + fg)
    assert all(m["max_F_beta"] == 0 and m["weighted_F_beta"] == 0 for m in bg)
    assert [m["S_alpha"] for m in bg[:3]] == pytest.approx([1.0, 0.0, 0.75], abs=1e-3)  # 1 - mean(pred)
    assert [m["S_alpha"] for m in fg[:3]] == pytest.approx([0.0, 1.0, 0.25], abs=1e-3)  # mean(pred)
    assert bg[0]["HCE_gamma"] == fg[1]["HCE_gamma"] == 0.0
    assert fg[1]["max_F_beta"] == 1.0 and fg[1]["MAE"] == 0.0


def test_s_measure_with_centroid_on_last_row_is_finite():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 256, (10, 12)).astype(np.uint8)
    gt = np.zeros((10, 12), np.uint8)
    gt[9, 2:7] = 255  # foreground only on the last row: the two bottom quadrants are empty
    ref = sod.Smeasure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.step(pred, gt)
    assert np.isnan(ref.get_results()["sm"])  # pysodmetrics' NaN that we avoid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = D.evaluate([pred], [gt])["S_alpha"]
    p, g = pred / 255.0, gt > 128
    p = (p - p.min()) / (p.max() - p.min())
    cy, cx = (np.argwhere(g).mean(axis=0).round() + 1).astype(int)
    quads = [(slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, 12)), (slice(cy, 10), slice(0, cx))]
    quads.append((slice(cy, 10), slice(cx, 12)))
    region = sum(ref.ssim(p[q], g[q]) * p[q].size / p.size for q in quads if p[q].size)
    assert s == pytest.approx(max(0.0, 0.5 * ref.object(p, g) + 0.5 * region), abs=1e-9)


# ---------------------------------------------------------------- bad input

_OK = np.zeros((4, 4), np.uint8)


@pytest.mark.parametrize(
    ("preds", "gts", "match"),
    [
        ([_OK, np.zeros((4, 5), np.uint8)], [_OK, _OK], r"preds\[1\] has shape \(4, 5\) but gts\[1\] has \(4, 4\)"),
        ([], [], r"non-empty lists of equal length, got 0 and 0"),
        ([_OK, _OK], [_OK], r"equal length, got 2 and 1"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), r"must be lists of 2-D maps, got ndarray"),
        ([np.zeros((4, 4, 3))], [_OK], r"preds\[0\]: expected a 2-D \[H, W\] map, got shape \(4, 4, 3\)"),
        ([_OK], [np.zeros((0, 4), np.uint8)], r"gts\[0\]: empty map"),
        ([_OK, np.full((4, 4), np.nan)], [_OK, _OK], r"preds\[1\]: contains NaN or inf"),
        ([np.full((4, 4), np.inf)], [_OK], r"preds\[0\]: contains NaN or inf"),
        ([np.full((4, 4), 1.5)], [_OK], r"preds\[0\]: float maps must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
        ([np.full((4, 4), 255.0)], [_OK], r"preds\[0\]: float maps must lie in \[0, 1\]"),
        ([_OK.astype(np.int64)], [_OK], r"preds\[0\]: expected uint8 .* got dtype int64"),
        ([_OK], [_OK - 1.0], r"gts\[0\]: float maps must lie in \[0, 1\]"),
    ],
)
def test_bad_input_gives_one_line_error(preds, gts, match):
    with pytest.raises(ValueError, match=match) as err:
        D.evaluate(preds, gts)
    assert "\n" not in str(err.value)


def test_hce_single_pair_shape_mismatch():
    with pytest.raises(ValueError, match=r"pred has shape \(4, 4\) but gt has \(5, 4\)"):
        D.human_correction_effort(_OK, np.zeros((5, 4), np.uint8))


# ---------------------------------------------------------------- read_mask


def test_read_mask_formats(tmp_path):
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    Image.fromarray(grey).save(tmp_path / "l.png")
    rgb = np.stack([grey, 255 - grey, np.full_like(grey, 7)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full_like(grey, 255)])).save(tmp_path / "rgba.png")
    Image.fromarray(grey > 100).save(tmp_path / "bits.png")
    deep = np.array([[0, 128, 129, 385], [386, 32767, 65534, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"

    for name in ("l", "rgb", "rgba"):
        out = D.read_mask(tmp_path / f"{name}.png")
        assert out.dtype == np.uint8 and out.shape == (6, 10)
        np.testing.assert_array_equal(out, grey)  # first channel
    np.testing.assert_array_equal(D.read_mask(str(tmp_path / "bits.png")), np.where(grey > 100, 255, 0))
    np.testing.assert_array_equal(D.read_mask(tmp_path / "deep.png"), [[0, 0, 1, 1], [2, 127, 255, 255]])


def test_read_mask_unreadable(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read mask .*broken\.png"):
        D.read_mask(bad)
    with pytest.raises(ValueError, match=r"cannot read mask .*missing\.png"):
        D.read_mask(tmp_path / "missing.png")
