"""Readers of the real datasets, on tiny fixtures written in the formats the datasets ship in."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from genpercept_lib.data import readers
from genpercept_lib.data.readers import DATASETS, DECODERS, SPECS, DatasetError, open_dataset

try:  # tests/data as a package
    from . import reader_fixtures as fx
except ImportError:  # tests/data as a plain folder (pytest's default import mode puts it on sys.path)
    sys.path.insert(0, str(Path(__file__).parent))
    import reader_fixtures as fx

RGB = np.array(fx.COLOR, np.float32) / 255


def check_rgb(item, shape):
    rgb = item["rgb"]
    assert rgb.dtype == np.float32 and rgb.shape == (3, *shape)
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    np.testing.assert_allclose(rgb.mean(axis=(1, 2)), RGB, atol=0.03)  # jpg is lossy


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- the table -----------------------------------------------------------------------------------
def test_table_lists_every_dataset_of_the_paper():
    assert set(DATASETS) == {"hypersim", "hypersim_marigold", "vkitti", "nyu", "kitti", "scannet", "diode",
                             "eth3d", "taskonomy", "cityscapes", "dis5k", "p3m10k", "coco", "dsine_nyuv2",
                             "dsine_scannet", "dsine_ibims", "dsine_sintel", "dsine_vkitti", "dsine_oasis"}
    for spec in SPECS.values():
        assert spec.default_split in spec.splits
        assert all(label.fmt in DECODERS for label in spec.labels)
        assert spec.task == "pose" or spec.labels


# --- the real-label training set of Fig. 3 (Taskonomy + Cityscapes) --------------------------------
def test_taskonomy_512ths_of_a_metre_and_missing_depth(tmp_path):
    meta = fx.make_taskonomy(tmp_path)
    ds = open_dataset("taskonomy", root=tmp_path)
    item = ds[0]
    assert len(ds) == 1 and item["name"] == "allensville/rgb/point_0_view_1_domain_rgb.png"
    check_rgb(item, meta["shape"])
    assert item["depth"][1, 1] == pytest.approx(2.5) and item["depth"][0, 0] == 0 and not item["valid"][0, 0]
    assert item["valid"].sum() == item["valid"].size - 1


def test_cityscapes_disparity_to_depth_with_the_frame_camera(tmp_path):
    meta = fx.make_cityscapes(tmp_path)
    fx.make_cityscapes(tmp_path, split="train_extra")
    assert len(open_dataset("cityscapes", root=tmp_path)) == 2  # train_all = train + train_extra
    item = open_dataset("cityscapes", root=tmp_path, split="train")[0]
    check_rgb(item, meta["shape"])
    assert item["depth"][2, 2] == pytest.approx(10.0, rel=1e-6)  # 0.2 m * 2000 px / 40 px
    assert not item["valid"][0, 0] and not item["valid"][0, 1]  # p = 0 (none) and p = 1 (zero disparity)
    assert item["depth"][0, 0] == 0 and item["depth"][0, 1] == 0 and item["valid"].sum() == item["valid"].size - 2
    meta["camera"].unlink()
    with pytest.raises(DatasetError) as err:
        open_dataset("cityscapes", root=tmp_path, split="train")[0]
    assert "aachen_000000_000019_camera.json" in one_line_error(err) and "cannot read depth" in str(err.value)


# --- Hypersim ------------------------------------------------------------------------------------
def test_hypersim_focal_is_886_81_at_1024_px():
    assert readers.hypersim_focal(1024) == pytest.approx(886.81, abs=0.01)


def test_distance_to_planar_at_full_resolution():
    distance = np.full((768, 1024), 5.0, np.float32)
    planar = readers.hypersim_distance_to_planar(distance)
    f, cx, cy = 886.81, 512.0, 384.0
    for v, u in [(0, 0), (383, 511), (767, 1023), (100, 900)]:
        expected = 5.0 / math.sqrt(1 + ((u + 0.5 - cx) / f) ** 2 + ((v + 0.5 - cy) / f) ** 2)
        assert planar[v, u] == pytest.approx(expected, rel=1e-5)


def test_hypersim_fronto_parallel_plane_has_constant_planar_depth(tmp_path):
    truth = fx.make_hypersim(tmp_path)
    ds = open_dataset("hypersim", tmp_path)  # default split: train (csv), one frame present
    assert len(ds) == 1
    item = ds[0]
    check_rgb(item, truth["shape"])
    assert item["depth"].dtype == np.float32 and item["depth"].shape == truth["shape"]
    np.testing.assert_allclose(item["depth"], 2.0, atol=1e-5)  # distance varied; planar does not
    assert item["valid"].dtype == bool and item["valid"].all()
    assert item["name"] == "ai_001_001/images/scene_cam_00_final_preview/frame.0000.tonemap.jpg"
    assert item["path"].endswith(item["name"])


def test_hypersim_normals_unit_facing_camera(tmp_path):
    fx.make_hypersim(tmp_path)
    normal = open_dataset("hypersim", tmp_path)[0]["normal"]
    assert normal.shape == (3, 6, 8) and normal.dtype == np.float32
    np.testing.assert_allclose(normal[:, 0, :], np.array([[0], [0], [1.0]]) * np.ones((1, 8)))  # flipped
    assert (normal[:, 1, 0] == 0).all()  # unknown stays (0, 0, 0)
    np.testing.assert_allclose(normal[2, 2:], 1.0)


def test_hypersim_semantic_labels_are_nyu40_indices(tmp_path):
    fx.make_hypersim(tmp_path)
    semantic = open_dataset("hypersim", tmp_path)[0]["semantic"]
    assert semantic.shape == (6, 8) and semantic.dtype == np.int64
    assert semantic[1, 1] == 0 and semantic[-1, 3] == 1  # wall (id 1) -> 0, floor (id 2) -> 1
    assert semantic[0, 0] == 255  # unlabelled -> ignore


def test_hypersim_float16_nan_is_invalid_and_normals_optional(tmp_path):
    fx.make_hypersim(tmp_path)
    item = open_dataset("hypersim", tmp_path, split="val")[0]
    assert "normal" not in item
    assert item["depth"][0, 0] == 0 and not item["valid"][0, 0]
    np.testing.assert_allclose(item["depth"][1:], 3.0, atol=3e-3)  # float16 storage
    assert item["valid"].sum() == item["valid"].size - 1


def test_hypersim_all_frames_by_glob(tmp_path):
    fx.make_hypersim(tmp_path)
    (tmp_path / "metadata_images_split_scene_v1.csv").unlink()
    ds = open_dataset("hypersim", tmp_path, split="all")
    assert [s[0][-22:] for s in ds.samples] == ["frame.0000.tonemap.jpg", "frame.0001.tonemap.jpg"]
    with pytest.raises(DatasetError, match="metadata_images_split_scene_v1.csv"):
        open_dataset("hypersim", tmp_path, split="train")


def test_hypersim_marigold_layout(tmp_path):
    scene = tmp_path / "train" / "ai_001_001"
    fx.write_rgb(scene / "rgb_cam_00_fr0000.png", 4, 4)
    fx.write_png16(scene / "depth_plane_cam_00_fr0000.png", np.full((4, 4), 2500))
    item = open_dataset("hypersim_marigold", tmp_path)[0]
    np.testing.assert_allclose(item["depth"], 2.5)


# --- driving -------------------------------------------------------------------------------------
def test_vkitti_centimetres_and_sky(tmp_path):
    truth = fx.make_vkitti(tmp_path)
    item = open_dataset("vkitti", tmp_path, crops=False)[0]
    check_rgb(item, truth["shape"])
    depth, valid = item["depth"], item["valid"]
    assert depth[0, 0] == 0 and not valid[0, 0]                      # 65535 = sky
    assert depth[0, 1] == pytest.approx(90.0) and not valid[0, 1]    # beyond 80 m
    np.testing.assert_allclose(depth[1:], 12.34, rtol=1e-6)
    assert valid[1:].all()


def test_vkitti_benchmark_crop_needs_full_size(tmp_path):
    fx.make_vkitti(tmp_path)
    with pytest.raises(DatasetError, match="crops=False") as excinfo:
        open_dataset("vkitti", tmp_path)[0]
    one_line_error(excinfo)


def test_kitti_eigen_list_benchmark_crop_and_eigen_box(tmp_path):
    fx.make_kitti(tmp_path)
    ds = open_dataset("kitti", tmp_path)
    assert len(ds) == 1  # the 'None' row is skipped, as Marigold does
    item = ds[0]
    assert item["rgb"].shape == (3, 352, 1216)
    depth, valid = item["depth"], item["valid"]
    assert depth.shape == valid.shape == (352, 1216)
    # bottom rows, centred columns: original rows 23..374, cols 13..1228
    top, left = 375 - 352, (1242 - 1216) // 2
    raw = np.zeros((375, 1242))
    raw[375 // 2:] = 10.0
    raw[-1, -1] = 100.0
    expected_depth = raw[top:, left:left + 1216]
    np.testing.assert_allclose(depth, expected_depth)
    box = np.zeros((352, 1216), bool)
    box[int(0.3324324 * 352):int(0.91351351 * 352), int(0.0359477 * 1216):int(0.96405229 * 1216)] = True
    np.testing.assert_array_equal(valid, (expected_depth > 0) & (expected_depth < 80) & box)


def test_kitti_uncropped_depth_is_value_over_256(tmp_path):
    truth = fx.make_kitti(tmp_path)
    item = open_dataset("kitti", tmp_path, crops=False)[0]
    assert item["depth"].shape == truth["shape"]
    assert item["depth"][-1, -1] == pytest.approx(100.0) and not item["valid"][-1, -1]
    assert item["depth"][0, 0] == 0 and not item["valid"][0, 0]
    assert item["valid"].sum() == (375 - 375 // 2) * 1242 - 1


# --- indoor and mixed evaluation sets ------------------------------------------------------------
@pytest.mark.parametrize("name,make", [("nyu", fx.make_nyu), ("scannet", fx.make_scannet)])
def test_millimetre_depth(tmp_path, name, make):
    truth = make(tmp_path)
    item = open_dataset(name, tmp_path, crops=False)[0]
    check_rgb(item, truth["shape"])
    depth, valid = item["depth"], item["valid"]
    np.testing.assert_allclose(depth, truth["mm"] / 1000.0, rtol=1e-6)
    assert depth[10, 10] == 0 and not valid[10, 10]
    assert depth[20, 20] == pytest.approx(12.0) and not valid[20, 20]  # beyond 10 m
    assert valid.sum() == valid.size - 2


def test_nyu_eigen_box(tmp_path):
    fx.make_nyu(tmp_path)
    valid = open_dataset("nyu", tmp_path)[0]["valid"]
    box = readers.box_mask(SPECS["nyu"].valid_crop, (480, 640))
    assert box.sum() == (471 - 45) * (601 - 41)  # the reference box at the reference size
    assert not valid[0, 0] and not valid[47, 63] and valid[24, 32]


def test_split_file_marigold_list(tmp_path):
    fx.make_nyu(tmp_path)
    line = "test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png test/kitchen_0004/filled_0001.png"
    (tmp_path / "list.txt").write_text(line + "\n")
    ds = open_dataset("nyu", tmp_path, split_file="list.txt", crops=False)
    assert len(ds) == 1 and ds[0]["depth"][0, 0] == pytest.approx(1.5)


def test_diode_npy_depth_and_shipped_mask(tmp_path):
    truth = fx.make_diode(tmp_path)
    ds = open_dataset("diode", tmp_path)
    item = ds[0]
    assert item["name"] == truth["name"]
    check_rgb(item, truth["shape"])
    assert item["depth"].shape == truth["shape"] and item["depth"].dtype == np.float32
    assert item["depth"][0, 0] == 0
    np.testing.assert_allclose(item["depth"][1:], 4.25)
    np.testing.assert_array_equal(item["valid"], truth["mask"] & (item["depth"] > 0))
    assert len(open_dataset("diode", tmp_path, split="val_indoors")) == 1
    with pytest.raises(DatasetError, match="no samples for split 'val_outdoor'"):
        open_dataset("diode", tmp_path, split="val_outdoor")


def test_eth3d_raw_float32_inf_invalid(tmp_path):
    truth = fx.make_eth3d(tmp_path)
    item = open_dataset("eth3d", tmp_path)[0]
    check_rgb(item, truth["shape"])
    assert item["depth"][1, 2] == 0 and not item["valid"][1, 2]
    assert item["valid"].sum() == item["valid"].size - 1
    np.testing.assert_allclose(item["depth"][0], 7.5)


def test_eth3d_truncated_raw_file(tmp_path):
    truth = fx.make_eth3d(tmp_path, truncate=True)
    with pytest.raises(DatasetError) as excinfo:
        open_dataset("eth3d", tmp_path)[0]
    message = one_line_error(excinfo)
    assert str(truth["raw"]) in message and "48 bytes, expected 96" in message and "6048 x 4032" in message


# --- DIS, matting, pose --------------------------------------------------------------------------
def test_dis5k_masks(tmp_path):
    truth = fx.make_dis5k(tmp_path)
    for split in ("DIS-VD", "DIS-TE1"):
        ds = open_dataset("dis5k", tmp_path, split=split)
        item = ds[0]
        check_rgb(item, truth["shape"])
        assert item["mask"].dtype == np.float32
        np.testing.assert_allclose(item["mask"], truth["mask"] / 255.0, atol=1e-6)
        assert "depth" not in item and "valid" not in item
    assert open_dataset("dis5k", tmp_path).split == "DIS-VD"


def test_p3m_alpha_and_optional_trimap(tmp_path):
    truth = fx.make_p3m(tmp_path)
    item = open_dataset("p3m10k", tmp_path)[0]  # default: P3M-500-NP, as the paper evaluates
    check_rgb(item, truth["shape"])
    np.testing.assert_allclose(item["alpha"], truth["alpha"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(item["trimap"], 128 / 255, atol=1e-6)
    item = open_dataset("p3m10k", tmp_path, split="P3M-500-P")[0]
    assert "trimap" not in item and item["alpha"].shape == truth["shape"]


def test_coco_keypoints(tmp_path):
    truth = fx.make_coco(tmp_path)
    ds = open_dataset("coco", tmp_path)
    assert len(ds) == 1  # the crowd-only and the empty image are left out
    item = ds[0]
    assert item["image_id"] == 1 and item["rgb"].shape == (3, 10, 12)
    assert item["keypoints"].shape == (2, 17, 3) and item["keypoints"].dtype == np.float32
    np.testing.assert_array_equal(item["keypoints"][0], truth["keypoints"])
    np.testing.assert_array_equal(item["boxes"], [[1, 2, 3, 4], [5, 5, 2, 2]])
    assert len(ds.keypoint_names) == 17 and ds.keypoint_names[0] == "nose"
    assert item["name"] == "val2017/000000000001.jpg"


def test_coco_malformed_json(tmp_path):
    truth = fx.make_coco(tmp_path)
    truth["annotation_file"].write_text('{"images": [')
    with pytest.raises(DatasetError, match="cannot read COCO annotations") as excinfo:
        open_dataset("coco", tmp_path)
    assert str(truth["annotation_file"]) in one_line_error(excinfo)


# --- sequence behaviour and errors ---------------------------------------------------------------
def test_sequence_protocol(tmp_path):
    fx.make_hypersim(tmp_path)
    ds = open_dataset("hypersim", tmp_path, split="all")
    assert len(list(ds)) == 2 and ds[-1]["name"] == ds[1]["name"]
    with pytest.raises(IndexError):
        ds[2]
    assert "hypersim" in repr(ds) and "n=2" in repr(ds)


def test_missing_root_names_path_and_layout(tmp_path):
    missing = tmp_path / "nyu"
    with pytest.raises(DatasetError) as excinfo:
        open_dataset("nyu", missing)
    message = one_line_error(excinfo)
    assert message.startswith(f"{missing}: no such folder; expected NYUv2 in the Marigold layout: ")
    assert "nyu_labeled_extracted/test/<scene>/rgb_NNNN.png" in message and "data/README.md" in message


def test_empty_root_has_no_samples(tmp_path):
    with pytest.raises(DatasetError, match="no samples for split 'DIS-VD'"):
        open_dataset("dis5k", tmp_path)


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GENPERCEPT_DATA", raising=False)
    with pytest.raises(DatasetError, match="GENPERCEPT_DATA is not set"):
        open_dataset("dis5k")
    fx.make_dis5k(tmp_path / "DIS5K")
    monkeypatch.setenv("GENPERCEPT_DATA", str(tmp_path))
    assert readers.data_root("dis5k") == tmp_path / "DIS5K"
    assert len(open_dataset("dis5k")) == 1


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nyuv3'.*hypersim"):
        open_dataset("nyuv3", tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'DIS-XX'.*DIS-TE4"):
        open_dataset("dis5k", tmp_path, split="DIS-XX")


def test_missing_label_file(tmp_path):
    fx.make_scannet(tmp_path)
    depth = tmp_path / "scene0406_02" / "depth" / "000300.png"
    depth.unlink()
    with pytest.raises(DatasetError) as excinfo:
        open_dataset("scannet", tmp_path)[0]
    assert one_line_error(excinfo).startswith(f"{depth}: no such file; expected ScanNet")


def test_eight_bit_depth_png_is_rejected(tmp_path):
    fx.make_nyu(tmp_path)
    depth = tmp_path / "nyu_labeled_extracted" / "test" / "kitchen_0004" / "depth_0001.png"
    fx.write_png8(depth, np.full((48, 64), 7))
    with pytest.raises(DatasetError, match="expected a 16-bit single-channel PNG") as excinfo:
        open_dataset("nyu", tmp_path)[0]
    assert str(depth) in one_line_error(excinfo)


def test_corrupt_hdf5_and_wrong_size_label(tmp_path):
    fx.make_hypersim(tmp_path)
    geometry = tmp_path / "ai_001_001" / "images" / "scene_cam_00_geometry_hdf5"
    (geometry / "frame.0000.depth_meters.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match="cannot read depth") as excinfo:
        open_dataset("hypersim", tmp_path)[0]
    one_line_error(excinfo)
    fx.write_hdf5(geometry / "frame.0001.depth_meters.hdf5", np.ones((3, 3), np.float16))
    with pytest.raises(DatasetError, match="depth is 3 x 3 but the image is 8 x 6"):
        open_dataset("hypersim", tmp_path, split="val")[0]


def test_corrupt_image(tmp_path):
    fx.make_dis5k(tmp_path)
    image = tmp_path / "DIS-VD" / "im" / "1#Accessories#1#Bag#1.jpg"
    image.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match="cannot read the image") as excinfo:
        open_dataset("dis5k", tmp_path)[0]
    assert str(image) in one_line_error(excinfo)
