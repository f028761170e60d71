"""Your own data (data/folders.py, userdata.py, ``genpercept train --data`` / ``evaluate`` / ``predict --unet OUT``).

The folders here are written by this file's own code in the documented format (data/README.md), not by the
toy-world exporter: 16-bit millimetre depth PNGs, float .npy depth, 8-bit normal PNGs, masks, mattes, class-id
PNGs with a classes.csv whose ids are not 0..C-1.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genpercept_lib.apps import cli
from genpercept_lib.data import folders

SIZE = (40, 52)  # (H, W): not square, not a multiple of 8
SEG_IDS = (0, 3, 7)


def _scene(i: int, size=SIZE) -> dict:
    """A seeded picture with a plane, a disc and their exact labels: rgb uint8, depth m, normal, mask, alpha, ids."""
    h, w = size
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    depth = np.where(disc, 1.0 + rng.uniform(0, 0.5), 2.0 + 3.0 * yy)
    normal = np.where(disc[..., None], [0.0, 0.0, 1.0], [0.0, 0.6, 0.8])
    rgb = np.stack([0.2 + 0.6 * disc, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx], -1) + rng.normal(0, 0.02, (h, w, 3))
    ids = np.where(disc, SEG_IDS[1], np.where(yy > 0.5, SEG_IDS[0], SEG_IDS[2]))
    ids[0, :3] = 255
    return {"rgb": np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "depth": depth, "normal": normal,
            "mask": disc, "alpha": disc * 0.9, "ids": ids.astype(np.uint8)}


def write_folder(root, task: str, n: int = 6, size=SIZE, npy: bool = False):
    """A folder in the documented format, written with PIL and numpy only."""
    sub = {"depth": "depth", "normal": "normal", "dis": "mask", "matting": "alpha", "seg": "seg"}[task]
    (root / "rgb").mkdir(parents=True)
    (root / sub).mkdir()
    for i in range(n):
        s, name = _scene(i, size), f"img{i:02d}"
        Image.fromarray(s["rgb"]).save(root / "rgb" / f"{name}{'.jpg' if i % 2 else '.png'}")
        if task == "depth" and npy:
            np.save(root / sub / f"{name}.npy", s["depth"].astype(np.float32))
        elif task == "depth":
            mm = np.round(s["depth"] * 1000).astype(np.uint16)
            mm[:2, :2] = 0  # invalid
            Image.fromarray(mm).save(root / sub / f"{name}.png")
        elif task == "normal":
            Image.fromarray(np.round((s["normal"] + 1) / 2 * 255).astype(np.uint8)).save(root / sub / f"{name}.png")
        elif task == "dis":
            Image.fromarray((s["mask"] * 255).astype(np.uint8)).save(root / sub / f"{name}.png")
        elif task == "matting":
            Image.fromarray(np.round(s["alpha"] * 255).astype(np.uint8)).save(root / sub / f"{name}.png")
        else:
            Image.fromarray(s["ids"]).save(root / sub / f"{name}.png")
    if task == "seg":
        (root / "classes.csv").write_text("id,name,r,g,b\n0,floor,0,128,255\n3,ball,255,0,0\n7,wall,0,255,128\n")
    return root


def _error(capsys, argv) -> str:
    capsys.readouterr()  # what ran before
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------------------
# Reading and checking (no model)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,key", [("depth", "depth"), ("normal", "normal"), ("dis", "mask"),
                                      ("matting", "alpha"), ("seg", "semantic")])
def test_each_label_kind_reads_in_the_items_layout(tmp_path, task, key):
    ds = folders.FolderSet(write_folder(tmp_path / "d", task), key)
    item = ds.item("img01")
    s = _scene(1)
    assert item["rgb"].shape == (3, *SIZE) and item["valid"].shape == SIZE
    if task == "depth":
        assert not item["valid"][0, 0] and np.allclose(item["depth"][5:, 5:], s["depth"][5:, 5:], atol=6e-4)
    elif task == "normal":
        assert item["normal"].shape == (3, *SIZE) and np.allclose(item["normal"], np.moveaxis(s["normal"], -1, 0),
                                                                   atol=5e-3)
    elif task == "seg":  # ids 0, 3, 7 -> indices 0, 1, 2 (the rows of classes.csv); 255 ignored
        assert set(np.unique(item["semantic"])) == {0, 1, 2, 255} and not item["valid"][0, 0]
    else:
        assert item[key].dtype == np.float32 and 0 <= item[key].min() and item[key].max() <= 1


def test_float_npy_depth_and_the_seeded_split_is_printed(tmp_path):
    ds = folders.FolderSet(write_folder(tmp_path / "d", "depth", n=10, npy=True), "depth")
    assert ds.item("img00")["valid"].all()
    assert (len(ds.names("train")), len(ds.names("val"))) == (9, 1) and "seeded 90% / 10%" in ds.split_note
    assert folders.FolderSet(tmp_path / "d", "depth").splits == ds.splits  # the seed fixes it


def test_train_txt_and_val_txt_choose_the_split(tmp_path):
    root = write_folder(tmp_path / "d", "dis")
    (root / "val.txt").write_text("img00\nimg03.jpg\n")
    ds = folders.FolderSet(root, "mask")
    assert ds.names("val") == ["img00", "img03"] and len(ds.names("train")) == 4
    (root / "val.txt").write_text("img00\nnope\n")
    with pytest.raises(folders.FolderError, match="val.txt: 1 name.* nope"):
        folders.FolderSet(root, "mask")


def test_cover_crop_keeps_the_aspect_ratio_and_centres():
    import torch

    x = torch.arange(40 * 80, dtype=torch.float32).reshape(1, 1, 40, 80)
    assert folders.cover_size((40, 80), (32, 32)) == (32, 64)
    out = folders.cover_crop(x, (40, 40), "nearest")
    assert out.shape == (1, 1, 40, 40) and torch.equal(out, x[..., 20:60])


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and what was expected (the CLI, before any model loads)
# --------------------------------------------------------------------------------------------------
def _train(root, out, task="depth"):
    return ["train", "--profile", "smoke", "--task", task, "--data", str(root), "-o", str(out)]


def test_an_image_without_a_label_and_the_reverse_name_the_first_few_and_the_count(tmp_path, capsys):
    root = write_folder(tmp_path / "d", "depth")
    for i in range(4):
        (root / "depth" / f"img{i:02d}.png").unlink()
    err = _error(capsys, _train(root, tmp_path / "o"))
    assert "4 image(s)" in err and "img00, img01, img02, ..." in err and "depth/<name>.(png|npy)" in err
    root = write_folder(tmp_path / "e", "depth")
    (root / "rgb" / "img05.jpg").unlink()
    err = _error(capsys, _train(root, tmp_path / "o"))
    assert "1 label(s)" in err and "img05" in err and "no image" in err


@pytest.mark.parametrize("task,breaks,words", [
    ("depth", lambda r: Image.new("L", SIZE[::-1]).save(r / "depth" / "img02.png"),
     ["img02.png", "8-bit grey PNG", "expected a 16-bit single-channel PNG in millimetres"]),
    ("normal", lambda r: Image.new("LA", SIZE[::-1]).save(r / "normal" / "img02.png"),
     ["img02.png", "2-channel", "expected an 8-bit RGB PNG"]),
    ("normal", lambda r: (r / "normal" / "img02.png").unlink() or np.save(r / "normal" / "img02.npy",
                                                                           np.zeros((*SIZE, 2), np.float32)),
     ["img02.npy", "shape [40, 52, 2]", "float .npy [H, W, 3]"]),
    ("seg", lambda r: Image.fromarray(np.full(SIZE, 5, np.uint8)).save(r / "seg" / "img02.png"),
     ["img02.png", "class ids [5] are not in classes.csv", "expected one of [0, 3, 7] or 255"]),
    ("dis", lambda r: Image.new("L", (30, 30)).save(r / "mask" / "img02.png"),
     ["img02.png", "the label is 30 x 30 but the image is 52 x 40", "expected the same size"]),
])
def test_a_label_of_the_wrong_kind_names_the_file_and_what_was_expected(tmp_path, capsys, task, breaks, words):
    root = write_folder(tmp_path / "d", task)
    breaks(root)
    err = _error(capsys, _train(root, tmp_path / "o", task))
    assert all(w in err for w in words), err
    assert not (tmp_path / "o").exists()


def test_an_empty_folder_an_unknown_task_an_unreadable_image_are_one_line_each(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no images in" in _error(capsys, _train(tmp_path / "empty", tmp_path / "o"))
    assert "unknown task 'albedo'" in _error(capsys, _train(tmp_path / "empty", tmp_path / "o", "albedo"))
    root = write_folder(tmp_path / "d", "depth")
    (root / "rgb" / "img00.png").write_bytes(b"not a png at all")
    err = _error(capsys, _train(root, tmp_path / "o"))
    assert "img00.png: cannot read the image" in err
    assert "no folder format" in _error(capsys, _train(root, tmp_path / "o", "pose"))


def test_a_non_empty_output_folder_that_is_not_this_run_is_refused_and_kept(tmp_path, capsys):
    root = write_folder(tmp_path / "d", "depth")
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    assert "not empty and holds no training.json of a run" in _error(capsys, _train(root, out))
    assert (out / "precious.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["precious.txt"]


# --------------------------------------------------------------------------------------------------
# train -> evaluate -> predict, every task, smoke profile
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GENPERCEPT_CACHE", str(tmp_path_factory.mktemp("cache")))  # a fresh clone: no prior yet
    yield
    mp.undo()


@pytest.mark.parametrize("task", ["depth", "normal", "dis", "matting", "seg"])
def test_train_evaluate_predict_round_trip(cache, tmp_path, capsys, task):
    root = write_folder(tmp_path / "data", task, n=6)
    out = tmp_path / "model"
    # 1. train (smoke recipe: 10 steps), with the training crop given as H W
    assert cli.main(_train(root, out, task) + ["--resolution", "32", "40", "--batch-size", "2"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["status"] == "done" and record["task"] == task and record["settings"]["resolution"] == [32, 40]
    assert record["data"]["train"] == 5 and record["base"]["kind"] == "toy"
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    # 2. evaluate on the val split, beside the image-blind guess
    assert cli.main(["evaluate", "--profile", "smoke", "--task", task, "--unet", str(out), "--data", str(root),
                     "--image-blind", "--split", "all"]) == 0
    metrics = pd.read_csv(out / "eval-all" / "metrics.csv")
    per_image = pd.read_csv(out / "eval-all" / "per_image.csv")
    assert list(metrics.kind) == ["model", "image-blind"] and (metrics.images == 6).all()
    assert len(per_image) == 12 and metrics.iloc[:, 3:].notna().all().all()
    assert "image-blind" in capsys.readouterr().out
    # 3. predict: the base and the task come from training.json
    pred = tmp_path / "pred"
    assert cli.main(["predict", "--unet", str(out), str(root / "rgb"), "-o", str(pred)]) == 0
    npy = np.load(pred / "img01_pred.npy")
    assert npy.shape[:2] == SIZE
    if task == "seg":  # the csv's ids, not the indices
        assert set(np.unique(npy)) <= set(SEG_IDS)
        assert set(np.unique(np.array(Image.open(pred / "img01_pred.png")))) <= set(SEG_IDS)


def test_a_killed_run_resumes_with_the_same_command_and_other_settings_are_refused(cache, tmp_path, capsys):
    from genpercept_lib import profiles, userdata

    root = write_folder(tmp_path / "data", "depth")
    out = tmp_path / "model"
    cfg = profiles.setup("smoke", announce=False)
    part = userdata.train_folder(cfg, "depth", root, out, steps=8, stop_after=5)
    assert part["status"] == "training" and (out / "checkpoint").is_dir() and not (out / "config.json").exists()
    done = userdata.train_folder(cfg, "depth", root, out, steps=8)
    assert done["status"] == "done"
    state = json.loads((out / "checkpoint" / "history.json").read_text())["history"]
    assert [h["step"] for h in state] == list(range(1, 9))
    other = tmp_path / "other"
    whole = userdata.train_folder(cfg, "depth", root, other, steps=8)  # uninterrupted: the same weights
    from safetensors.torch import load_file

    a, b = (load_file(d / "diffusion_pytorch_model.safetensors") for d in (out, other))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    assert whole["loss"]["last"] == pytest.approx(done["loss"]["last"], abs=1e-6)
    before = (out / "diffusion_pytorch_model.safetensors").read_bytes()
    err = _error(capsys, _train(root, out) + ["--steps", "9"])
    assert "holds a run of other settings (steps=8 (now 9))" in err and "refusing to overwrite" in err
    assert (out / "diffusion_pytorch_model.safetensors").read_bytes() == before
