"""DSINE's six normal benchmarks, read from tiny files in the formats of DSINE's evaluation archive."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from genpercept_lib.data.readers import DSINE_SETS, SPECS, DatasetError, open_dataset
from genpercept_lib.metrics import normals as normal_metrics

try:  # tests/data as a package
    from . import reader_fixtures as fx
except ImportError:  # tests/data as a plain folder
    sys.path.insert(0, str(Path(__file__).parent))
    import reader_fixtures as fx

KEYS = tuple(fx.DSINE_FILES)
ATOL = {"png8": 0.01, "png16": 1e-4, "exr": 1e-6, "pkl": 1e-6}  # 8-bit quantisation; 16-bit; floats


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_the_six_benchmarks_are_readers_of_the_normal_task():
    assert DSINE_SETS == tuple(f"dsine_{k}" for k in KEYS)
    for name in DSINE_SETS:
        spec = SPECS[name]
        assert spec.task == "normal" and spec.folder == f"dsine_eval/{name[6:]}"
        assert [label.key for label in spec.labels] == ["normal", "intrins"]
    # DSINE's split names (projects/dsine/test.py: nyuv2 test, scannet test, ibims, sintel, vkitti, oasis val)
    assert [SPECS[n].default_split for n in DSINE_SETS] == ["test", "test", "ibims", "sintel", "vkitti", "val"]


@pytest.mark.parametrize("key", KEYS)
def test_reads_normals_in_our_axes_with_dsine_s_mask(tmp_path, key):
    truth = fx.make_dsine(tmp_path, key)
    ds = open_dataset(f"dsine_{key}", root=tmp_path)
    item = ds[0]
    assert len(ds) == 1 and item["name"] == truth["name"]
    assert item["rgb"].shape == (3, *truth["shape"]) and item["normal"].shape == (3, *truth["shape"])
    assert item["normal"].dtype == np.float32 and item["valid"].dtype == bool
    np.testing.assert_array_equal(item["valid"], truth["valid"])  # DSINE's mask, format by format
    v = item["valid"]
    np.testing.assert_allclose(item["normal"][:, v], truth["normal"][:, v], atol=ATOL[fx.DSINE_FILES[key][3]])
    assert not item["normal"][:, ~v].any()  # unknown pixels are (0, 0, 0)
    np.testing.assert_allclose(np.linalg.norm(item["normal"][:, v], axis=0), 1.0, atol=1e-5)
    assert item["intrins"].shape == (3, 3) and item["intrins"][0, 0] == 500.0


@pytest.mark.parametrize("key", KEYS)
def test_the_left_wall_faces_right_and_the_floor_up(tmp_path, key):
    """The axis convention pinned on single pixels: a wall on the image's left, facing right, which DSINE stores as
    x = -1 (its x points left), is +x here; the floor is +y in both; a wall facing the camera is +z in both."""
    fx.make_dsine(tmp_path, key, height=6, width=8)
    n = open_dataset(f"dsine_{key}", root=tmp_path)[0]["normal"]  # [3, H, W]
    np.testing.assert_allclose(n[:, 2, 2], [1, 0, 0], atol=0.01)   # left half, facing right
    np.testing.assert_allclose(n[:, 2, 5], [0, 0, 1], atol=0.01)   # right half, facing the camera
    np.testing.assert_allclose(n[:, 5, 3], [0, 1, 0], atol=0.01)   # bottom row, the floor


def test_a_perfect_prediction_scores_zero_and_a_mirrored_one_does_not(tmp_path):
    """DSINE's metrics on a read benchmark: the ground truth against itself is 0 degrees; with x negated (DSINE's
    axes taken for ours) the left wall is 180 degrees off."""
    fx.make_dsine(tmp_path, "sintel")
    item = open_dataset("dsine_sintel", root=tmp_path)[0]
    same = normal_metrics.pool_normal_metrics([normal_metrics.angular_error(item["normal"], item["normal"],
                                                                            item["valid"])])
    assert same["mean"] == pytest.approx(0.0, abs=1e-4) and same["a5"] == 100.0
    mirrored = item["normal"] * np.array([-1.0, 1.0, 1.0], np.float32)[:, None, None]
    off = normal_metrics.angular_error(mirrored, item["normal"], item["valid"])
    assert off.max() == pytest.approx(180.0) and 0 < (off > 90).mean() < 1


def test_the_glob_finds_every_scene_folder(tmp_path):
    fx.make_dsine(tmp_path, "sintel")
    (tmp_path / "alley_1").rename(tmp_path / "ambush_2")
    fx.make_dsine(tmp_path, "sintel")
    assert [i for i in open_dataset("dsine_sintel", root=tmp_path).samples] == [
        ("alley_1/frame_0001_img.png", None), ("ambush_2/frame_0001_img.png", None)]


def test_dsine_s_split_file_selects_images(tmp_path):
    """DSINE's split/<split>.txt (one 'scene/NAME_img.EXT' a line, relative to the set's folder) may replace the
    glob."""
    fx.make_dsine(tmp_path, "nyuv2")
    for f in sorted((tmp_path / "test").glob("000001_*")):  # a second image the list leaves out
        (tmp_path / "test" / f.name.replace("000001", "000002")).write_bytes(f.read_bytes())
    (tmp_path / "test.txt").write_text("test/000002_img.png\n")
    assert len(open_dataset("dsine_nyuv2", root=tmp_path)) == 2
    listed = open_dataset("dsine_nyuv2", root=tmp_path, split_file="test.txt")
    assert len(listed) == 1 and listed[0]["name"] == "test/000002_img.png"


# --- bad input: one line naming the file and what was expected ------------------------------------
def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        open_dataset("dsine_oasis", root=tmp_path / "nowhere")
    message = one_line(excinfo)
    assert message.startswith(f"{tmp_path / 'nowhere'}: no such folder; expected OASIS validation in DSINE's")
    assert "NAME_normal.pkl" in message


def test_an_empty_folder_has_no_samples(tmp_path):
    with pytest.raises(DatasetError, match=r"no samples for split 'test' \(glob:\*/\*_img.png\)") as excinfo:
        open_dataset("dsine_nyuv2", root=tmp_path)
    one_line(excinfo)


@pytest.mark.parametrize("suffix", ["_normal.png", "_intrins.npy"])
def test_missing_label_file(tmp_path, suffix):
    fx.make_dsine(tmp_path, "scannet")
    missing = tmp_path / "scene0532_00" / f"000000{suffix}"
    missing.unlink()
    with pytest.raises(DatasetError) as excinfo:
        open_dataset("dsine_scannet", root=tmp_path)[0]
    assert one_line(excinfo).startswith(f"{missing}: no such file; expected ScanNet test")


def _normal_path(root: Path, key: str) -> Path:
    scene, name, _, fmt = fx.DSINE_FILES[key]
    return root / scene / f"{name}_normal.{ {'png8': 'png', 'png16': 'png'}.get(fmt, fmt) }"


@pytest.mark.parametrize("key, write, expected", [
    ("nyuv2", lambda p: fx.write_png8(p, np.zeros((6, 8), np.uint8)), "expected a 3-channel uint8 image"),
    ("vkitti", lambda p: fx.write_png8(p, np.zeros((6, 8, 3), np.uint8)), "expected a 3-channel uint16 image"),
    ("sintel", lambda p: fx.write_exr(p, np.zeros((6, 8, 1))),
     r"expected a 3-channel float32 image, got float32 \[6, 8\]"),
    ("ibims", lambda p: p.write_bytes(b"not an exr"), "not an image file cv2 can read"),
    ("nyuv2", lambda p: fx.write_png8(p, np.zeros((3, 3, 3), np.uint8)), "normal is 3 x 3 but the image is 8 x 6"),
])
def test_a_malformed_normal_map_names_the_file(tmp_path, key, write, expected):
    fx.make_dsine(tmp_path, key)
    path = _normal_path(tmp_path, key)
    write(path)
    with pytest.raises(DatasetError, match=expected) as excinfo:
        open_dataset(f"dsine_{key}", root=tmp_path)[0]
    assert one_line(excinfo).startswith(f"{path}: ")


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


class Exploit:
    """A pickle that would run a command when loaded."""

    def __reduce__(self):
        import os

        return os.system, ("echo owned",)


@pytest.mark.parametrize("content, expected", [
    ({"min_x": 0, "max_x": 7, "min_y": 0, "max_y": 5}, "expected a dict with min_x, max_x, min_y, max_y, normal"),
    ({"min_x": 0, "max_x": 8, "min_y": 0, "max_y": 5, "normal": np.zeros((6, 9, 3))},
     "box x 0..8, y 0..5 is not inside the 8 x 6 image"),
    ({"min_x": 0, "max_x": 3, "min_y": 0, "max_y": 1, "normal": np.zeros((2, 3, 3))},
     r"normal is \[2, 3, 3\], expected \[2, 4, 3\] for the box"),
    (Exploit(), "refused to unpickle (posix|nt).system"),
    (b"\x80\x04garbage", "cannot read normal"),
])
def test_a_malformed_oasis_pickle_names_the_file(tmp_path, content, expected):
    fx.make_dsine(tmp_path, "oasis")
    path = _normal_path(tmp_path, "oasis")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _pickle(path, content)
    with pytest.raises(DatasetError, match=expected) as excinfo:
        open_dataset("dsine_oasis", root=tmp_path)[0]
    assert one_line(excinfo).startswith(f"{path}: ")


def test_a_camera_matrix_of_the_wrong_shape(tmp_path):
    fx.make_dsine(tmp_path, "ibims")
    path = tmp_path / "ibims" / "corridor_01_intrins.npy"
    np.save(path, np.eye(4))
    with pytest.raises(DatasetError, match=r"expected a 3 x 3 camera matrix, got \[4, 4\]") as excinfo:
        open_dataset("dsine_ibims", root=tmp_path)[0]
    assert one_line(excinfo).startswith(f"{path}: ")
