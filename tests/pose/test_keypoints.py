"""Top-down heatmap pose: known answers for box -> crop, Gaussian targets, decoding, flip test, rescoring,
an encode -> decode -> image round trip, and the ViTPose keypoint head (shape, hand-counted parameters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genpercept_lib.pose import keypoints as KP
from genpercept_lib.pose.model import KeypointHead

IMAGE_SIZE = (192, 256)   # ViTPose crop (width, height)
HEATMAP_SIZE = (48, 64)   # stride 4


def _peak_maps(points, size=(12, 10), value=1.0):
    """[1, K, H, W] zeros with one pixel = value at each integer (x, y)."""
    W, H = size
    hm = np.zeros((1, len(points), H, W))
    for k, (x, y) in enumerate(points):
        hm[0, k, y, x] = value
    return hm


# --- COCO constants --------------------------------------------------------------------------------------
def test_flip_pairs_are_the_left_right_names():
    names = KP.COCO_KEYPOINT_NAMES
    pairs = {(names.index(n), names.index("right_" + n[5:])) for n in names if n.startswith("left_")}
    assert set(KP.COCO_FLIP_PAIRS) == pairs and len(pairs) == 8
    assert all(1 <= a <= 17 and 1 <= b <= 17 for a, b in KP.COCO_SKELETON) and len(KP.COCO_SKELETON) == 19


# --- box -> center/scale -> crop ---------------------------------------------------------------------------
def test_box_to_center_scale_tall_and_wide_boxes():
    # tall: w 100, h 200 -> w grown to 0.75 * 200 = 150, then x1.25
    c, s = KP.box_to_center_scale([10, 20, 110, 220], aspect_ratio=0.75)
    np.testing.assert_allclose(c, [60, 120])
    np.testing.assert_allclose(s, [187.5, 250.0])
    # wide: w 300, h 100 -> h grown to 300 / 0.75 = 400
    c, s = KP.box_to_center_scale([0, 0, 300, 100], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(c, [150, 50])
    np.testing.assert_allclose(s, [300, 400])
    with pytest.raises(ValueError, match="x1 > x0"):
        KP.box_to_center_scale([5, 0, 5, 10], 0.75)


def test_crop_transform_maps_box_to_crop_and_inverse_undoes_it():
    c, s = np.array([60.0, 120.0]), np.array([187.5, 250.0])
    m = KP.crop_transform(c, s, IMAGE_SIZE)
    # the centre goes to the crop centre, the padded box corners to the crop corners
    corners = np.array([c, c - s / 2, c + s / 2])
    np.testing.assert_allclose(KP.apply_affine(corners, m), [[96, 128], [0, 0], [192, 256]], atol=1e-9)
    m_inv = KP.crop_transform(c, s, IMAGE_SIZE, inverse=True)
    pts = np.random.default_rng(0).uniform(0, 300, size=(5, 2))
    np.testing.assert_allclose(KP.apply_affine(KP.apply_affine(pts, m), m_inv), pts, atol=1e-9)


def test_crop_transform_rotation_matches_mmpose_three_point_construction():
    # mmpose: src = center, center + R(rot)(0, -s_w/2), and that vector turned 90 degrees; dst likewise
    c, s, rot, (ow, oh) = np.array([50.0, 80.0]), np.array([120.0, 160.0]), 30.0, IMAGE_SIZE
    a = np.deg2rad(rot)
    src_dir = np.array([-0.5 * s[0] * -np.sin(a), -0.5 * s[0] * np.cos(a)])

    def third(p, q):
        d = p - q
        return q + np.array([-d[1], d[0]])

    src = np.array([c, c + src_dir, third(c, c + src_dir)])
    d0 = np.array([ow / 2, oh / 2])
    dst = np.array([d0, d0 + [0, -ow / 2], third(d0, d0 + [0, -ow / 2])])
    solved = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # [2, 3], exact for three points
    np.testing.assert_allclose(KP.crop_transform(c, s, (ow, oh), rotation_deg=rot), solved, atol=1e-9)


def test_heatmap_to_image_inverts_crop_transform_to_heatmap():
    c, s = np.array([[60.0, 120.0], [300.0, 40.0]]), np.array([[187.5, 250.0], [96.0, 128.0]])
    pts = np.random.default_rng(1).uniform(0, 40, size=(2, 17, 2))  # heatmap pixels
    img = KP.heatmap_to_image(pts, c, s, HEATMAP_SIZE)
    for n in range(2):
        back = KP.apply_affine(img[n], KP.crop_transform(c[n], s[n], HEATMAP_SIZE))
        np.testing.assert_allclose(back, pts[n], atol=1e-9)


# --- targets -----------------------------------------------------------------------------------------------
def _mmpose_style_patch(u, v, W, H, sigma=2):
    """The MSRA target by slicing a (6 sigma + 1)^2 patch, as mmpose builds it (integer 3 sigma)."""
    tmp = 3 * sigma
    mx, my = int(u + 0.5), int(v + 0.5)
    ul, br = (mx - tmp, my - tmp), (mx + tmp + 1, my + tmp + 1)
    size = 2 * tmp + 1
    g = np.exp(-((np.arange(size)[None] - tmp) ** 2 + (np.arange(size)[:, None] - tmp) ** 2) / (2 * sigma**2))
    out = np.zeros((H, W))
    gx, gy = (max(0, -ul[0]), min(br[0], W) - ul[0]), (max(0, -ul[1]), min(br[1], H) - ul[1])
    ix, iy = (max(0, ul[0]), min(br[0], W)), (max(0, ul[1]), min(br[1], H))
    out[iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return out


def test_gaussian_target_peaks_at_rounded_keypoint_with_value_one():
    W, H = HEATMAP_SIZE
    kpts = np.array([[10.3, 20.6, 2], [0.2, 63.4, 1], [47.0, 0.0, 2], [-3.0, 30.0, 2]])
    targets, weight = KP.gaussian_targets(kpts, HEATMAP_SIZE)
    assert targets.shape == (4, H, W) and targets.dtype == np.float32
    np.testing.assert_array_equal(weight, [1, 1, 1, 1])  # the last one's window still reaches x = 0..3
    assert targets[0, 21, 10] == 1.0 and targets[0].max() == 1.0
    assert np.unravel_index(targets[1].argmax(), (H, W)) == (63, 0)
    for k in range(4):
        np.testing.assert_allclose(targets[k], _mmpose_style_patch(*kpts[k, :2], W, H), atol=1e-7)
    # truncated at 3 sigma: 6 pixels away is drawn, 7 is not
    assert targets[0, 21, 16] > 0 and targets[0, 21, 17] == 0
    np.testing.assert_allclose(targets[0, 21, 12], np.exp(-4 / 8), rtol=1e-6)


def test_gaussian_target_zero_weight_when_invisible_or_out_of_range():
    kpts = np.array([[10, 10, 0], [60, 10, 2], [10, -9, 1], [54, 10, 2]])  # 54 - 6 = 48 >= W
    targets, weight = KP.gaussian_targets(kpts, HEATMAP_SIZE)
    np.testing.assert_array_equal(weight, [0, 0, 0, 0])
    assert not targets.any()
    # mmpose's edge case: v = -8 rounds to -7, its window [-13, 0) is empty yet br = 0 is not < 0: weight 1
    targets, weight = KP.gaussian_targets(np.array([[10, -8, 2]]), HEATMAP_SIZE)
    assert weight[0] == 1 and not targets.any()
    # just inside: window [47 - 6, ...) reaches the map
    _, w = KP.gaussian_targets(np.array([[53, 10, 2]]), HEATMAP_SIZE)
    assert w[0] == 1
    with pytest.raises(ValueError, match=r"\[K, 3\]"):
        KP.gaussian_targets(np.zeros((17, 2)), HEATMAP_SIZE)


# --- decoding ----------------------------------------------------------------------------------------------
def test_single_peak_decodes_to_the_peak():
    hm = _peak_maps([(5, 4), (0, 0), (11, 9)])
    coords, maxvals = KP.decode_heatmaps(torch.from_numpy(hm))  # torch accepted
    np.testing.assert_array_equal(coords[0], [[5, 4], [0, 0], [11, 9]])  # neighbours equal: no step
    np.testing.assert_array_equal(maxvals, [[1, 1, 1]])


def test_quarter_shift_moves_towards_higher_neighbour_by_exactly_a_quarter():
    hm = _peak_maps([(5, 4), (5, 4), (1, 4)], value=1.0)
    hm[0, 0, 4, 6] = 0.5   # right neighbour higher -> x + 0.25
    hm[0, 0, 3, 5] = 0.3   # upper neighbour higher -> y - 0.25
    hm[0, 1, 4, 4] = 0.2   # left higher -> x - 0.25, y unchanged
    hm[0, 2, 4, 2] = 0.5   # x = 1 is not inside 1 < x < W - 1: no step (mmpose's rule)
    coords, _ = KP.decode_heatmaps(hm)
    np.testing.assert_array_equal(coords[0], [[5.25, 3.75], [4.75, 4.0], [1.0, 4.0]])


def test_vectorised_decoding_matches_a_per_joint_loop():
    rng = np.random.default_rng(11)
    hm = rng.random((3, 17, 9, 7)) - 0.05
    hm[0, 0] = -1.0  # no positive value
    hm[1, 2, 0, 3] = 2.0  # maximum on the border row
    coords, maxvals = KP.decode_heatmaps(hm)
    N, K, H, W = hm.shape
    for n in range(N):
        for k in range(K):
            m = hm[n, k]
            y, x = divmod(int(m.argmax()), W)
            assert maxvals[n, k] == m.max()
            if m.max() <= 0:
                expected = [-1.0, -1.0]
            else:
                expected = [float(x), float(y)]
                if 1 < x < W - 1 and 1 < y < H - 1:
                    expected[0] += 0.25 * np.sign(m[y, x + 1] - m[y, x - 1])
                    expected[1] += 0.25 * np.sign(m[y + 1, x] - m[y - 1, x])
            np.testing.assert_array_equal(coords[n, k], expected)


def test_non_positive_maximum_gives_minus_one():
    hm = -np.ones((1, 2, 6, 6))
    hm[0, 1, 2, 3] = 0.0
    coords, maxvals = KP.decode_heatmaps(hm)
    np.testing.assert_array_equal(coords, -np.ones((1, 2, 2)))
    np.testing.assert_array_equal(maxvals, [[-1.0, 0.0]])


def test_encode_crop_decode_round_trip_recovers_image_keypoints():
    rng = np.random.default_rng(7)
    box = np.array([40.0, 30.0, 160.0, 330.0])
    center, scale = KP.box_to_center_scale(box, IMAGE_SIZE[0] / IMAGE_SIZE[1])
    to_crop = KP.crop_transform(center, scale, IMAGE_SIZE)
    stride = IMAGE_SIZE[0] / HEATMAP_SIZE[0]
    hm_px = scale[0] / HEATMAP_SIZE[0]  # image pixels per heatmap pixel

    # exactly on heatmap pixel centres: recovered exactly
    grid = rng.integers(8, 40, size=(17, 2)).astype(float)
    image_pts = KP.heatmap_to_image(grid, center, scale, HEATMAP_SIZE)
    crop_pts = KP.apply_affine(image_pts, to_crop)
    targets, _ = KP.gaussian_targets(np.c_[crop_pts / stride, np.full(17, 2)], HEATMAP_SIZE)
    decoded, _ = KP.keypoints_from_heatmaps(targets[None], center[None], scale[None])
    np.testing.assert_allclose(decoded[0], image_pts, atol=1e-6)

    # anywhere in the box: within half a heatmap pixel per axis (the target's rounding)
    image_pts = rng.uniform(box[:2] + 5, box[2:] - 5, size=(17, 2))
    crop_pts = KP.apply_affine(image_pts, to_crop)
    targets, weight = KP.gaussian_targets(np.c_[crop_pts / stride, np.full(17, 2)], HEATMAP_SIZE)
    assert weight.all()
    decoded, _ = KP.keypoints_from_heatmaps(targets[None], center[None], scale[None])
    assert np.abs(decoded[0] - image_pts).max() <= 0.5 * hm_px + 1e-6


# --- flip test ---------------------------------------------------------------------------------------------
def _pose_maps(points):
    kpts = np.c_[np.asarray(points, float), np.full(len(points), 2)]
    return KP.gaussian_targets(kpts, HEATMAP_SIZE)[0][None]  # [1, 17, H, W]


def test_flip_back_swaps_left_right_and_mirrors():
    W = HEATMAP_SIZE[0]
    rng = np.random.default_rng(3)
    pts = rng.integers(8, 40, size=(17, 2)).astype(float)
    original = _pose_maps(pts)
    # a perfect model on the mirrored crop puts channel k at the mirror of the original's flipped partner
    mirrored_pts = pts.copy()
    mirrored_pts[:, 0] = W - 1 - mirrored_pts[:, 0]
    for left, right in KP.COCO_FLIP_PAIRS:
        mirrored_pts[[left, right]] = mirrored_pts[[right, left]]
    on_flipped = _pose_maps(mirrored_pts)
    np.testing.assert_array_equal(KP.flip_back(on_flipped), original)
    # channel 1 (left eye) of the flipped-back maps is channel 2 of the input, mirrored
    np.testing.assert_array_equal(KP.flip_back(original)[0, 1], original[0, 2, :, ::-1])
    np.testing.assert_array_equal(KP.flip_back(KP.flip_back(original)), original)
    # torch in, torch out, same values
    out_t = KP.flip_back(torch.from_numpy(on_flipped))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), original)


def test_flip_back_of_a_symmetric_pose_is_itself():
    W = HEATMAP_SIZE[0]
    kpts = np.zeros((17, 3))
    # the nose would sit on the mirror axis x = 23.5 of an even-width map, between pixels: leave it unlabelled
    for i, (left, right) in enumerate(KP.COCO_FLIP_PAIRS):
        kpts[left] = [15 + i, 10 + 5 * i, 2]
        kpts[right] = [W - 1 - (15 + i), 10 + 5 * i, 2]
    maps = KP.gaussian_targets(kpts, HEATMAP_SIZE)[0][None]  # [1, 17, H, W]
    np.testing.assert_array_equal(KP.flip_back(maps), maps)
    # ... because channels were swapped: a single map is not mirror-symmetric by itself
    assert not np.array_equal(maps[0, 1], maps[0, 1, :, ::-1])
    np.testing.assert_array_equal(maps[0, 1], maps[0, 2, :, ::-1])


def test_merge_flip_test_average_and_shift():
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 17, 8, 6)), rng.random((2, 17, 8, 6))
    merged = KP.merge_flip_test(a, b)
    np.testing.assert_allclose(merged, 0.5 * (a + KP.flip_back(b)))
    shifted = KP.merge_flip_test(a, b, shift_heatmap=True)
    back = KP.flip_back(b)
    np.testing.assert_allclose(shifted[..., 1:], 0.5 * (a[..., 1:] + back[..., :-1]))
    np.testing.assert_allclose(shifted[..., 0], 0.5 * (a[..., 0] + back[..., 0]))
    shifted_t = KP.merge_flip_test(torch.from_numpy(a), torch.from_numpy(b), shift_heatmap=True)
    np.testing.assert_allclose(shifted_t.numpy(), shifted)


# --- rescoring ---------------------------------------------------------------------------------------------
def test_rescore_mean_of_scores_above_threshold_times_box_score():
    maxvals = np.array([0.9, 0.5, 0.2, 0.1, 0.7])  # 0.2 is not > 0.2
    assert KP.rescore(0.8, maxvals) == pytest.approx(0.8 * (0.9 + 0.5 + 0.7) / 3)
    assert KP.rescore(0.8, np.full(17, 0.1)) == 0.0
    batch = KP.rescore(np.array([1.0, 0.5]), np.stack([maxvals, np.full(5, 0.3)]))
    np.testing.assert_allclose(batch, [(0.9 + 0.5 + 0.7) / 3, 0.15])


# --- the ViTPose keypoint head -----------------------------------------------------------------------------
def test_keypoint_head_shape_and_hand_counted_parameters():
    head = KeypointHead(320)
    # deconv 320*256*4*4 + BN 2*256 + deconv 256*256*4*4 + BN 2*256 + conv 256*17 + 17
    expected = 320 * 256 * 16 + 512 + 256 * 256 * 16 + 512 + 256 * 17 + 17
    assert expected == 2_364_689
    assert sum(p.numel() for p in head.parameters()) == expected
    x = torch.randn(2, 320, 16, 12)
    assert head(x).shape == (2, 17, 64, 48)
    small = KeypointHead(8, num_joints=5, deconv_channels=(4, 6))
    assert small(torch.randn(1, 8, 3, 5)).shape == (1, 5, 12, 20)
    with pytest.raises(ValueError, match=r"expects \[B, 8, h, w\]"):
        small(torch.randn(1, 9, 3, 5))


def test_keypoint_head_layout_and_init_follow_mmpose():
    torch.manual_seed(0)
    head = KeypointHead(320)
    keys = set(head.state_dict())
    assert {"deconv_layers.0.weight", "deconv_layers.1.running_mean", "deconv_layers.3.weight",
            "deconv_layers.4.bias", "final_layer.weight", "final_layer.bias"} <= keys
    assert "deconv_layers.0.bias" not in keys  # deconvolutions have no bias
    deconv = head.deconv_layers[0]
    assert (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding) == ((4, 4), (2, 2),
                                                                                         (1, 1), (0, 0))
    for w in (head.deconv_layers[0].weight, head.deconv_layers[3].weight, head.final_layer.weight):
        assert abs(w.mean().item()) < 1e-4 and w.std().item() == pytest.approx(0.001, rel=0.05)
    assert (head.final_layer.bias == 0).all()
    assert (head.deconv_layers[1].weight == 1).all() and (head.deconv_layers[4].bias == 0).all()
