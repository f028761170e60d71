"""``genpercept predict`` end to end on tiny random models: real photos (scikit-image) and awkward inputs
(grayscale, RGBA, palette, 16-bit, EXIF-rotated, corrupt, not an image), outputs and their formats, folder
mirroring, --overwrite, the error report and the one-line errors for bad model folders."""

import contextlib
import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from genpercept_lib import heads
from genpercept_lib.apps import cli
from genpercept_lib.apps.predict import find_images, load_image, output_stems

PHOTO = 48  # px, longer side of the scikit-image photos written as inputs
RES = ["--processing-res", "64"]


def run_cli(*argv):
    """(exit status, stdout, stderr) of ``genpercept predict ...``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["predict", *map(str, argv)])
    return rc, out.getvalue(), err.getvalue()


def _small(array, longer=PHOTO):
    img = Image.fromarray(array)
    scale = longer / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))


def _write_inputs(root):
    """The input tree; returns {relative stem: expected (H, W) of the prediction}."""
    (root / "photos").mkdir(parents=True)
    (root / "deep" / "er").mkdir(parents=True)
    expected = {}

    def save(img, rel, **kw):
        img.save(root / rel, **kw)
        expected[rel.rsplit(".", 1)[0]] = (img.height, img.width)

    save(_small(skdata.astronaut()), "photos/astronaut.jpg")  # 48 x 48
    save(_small(skdata.coffee()), "photos/coffee.png")  # 32 x 48
    save(_small(skdata.chelsea(), 40), "chelsea.webp")
    save(_small(skdata.camera(), 36), "gray.bmp")  # mode L
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[:, :15, 3] = 255, 255  # left half opaque red, right half transparent
    save(Image.fromarray(rgba), "rgba.png")
    save(Image.fromarray(rgba).convert("P"), "deep/palette.png")
    save(Image.fromarray((np.arange(24 * 33, dtype=np.uint16) * 80).reshape(24, 33)), "deep/er/sixteen.png")
    rotated = np.zeros((24, 40, 3), np.uint8)  # stored 40 wide, 24 high; left half red
    rotated[:, :20, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rotated).save(root / "rotated.jpg", exif=exif)
    expected["rotated"] = (40, 24)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (root / "notes.txt").write_text("not an image")
    return expected


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, tiny_base_dir, tiny_unet_dir):
    """One depth run over the whole input tree (batch size 2)."""
    root = tmp_path_factory.mktemp("predict")
    expected = _write_inputs(root / "in")
    rc, out, err = run_cli(root / "in", "--base", tiny_base_dir, "--unet", tiny_unet_dir, "--task", "depth",
                           "-o", root / "out", "--batch-size", "2", *RES)
    return dict(root=root, expected=expected, rc=rc, out=out, err=err, args=(tiny_base_dir, tiny_unet_dir))


# -- reading inputs -----------------------------------------------------------------------------------------


def test_load_image_handles_every_mode(tmp_path):
    gray = Image.fromarray(np.full((4, 5), 100, np.uint8))
    gray.save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 100 / 255))

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:2, :, 3] = 255  # top half opaque blue, bottom transparent -> white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert torch.allclose(x[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # opaque blue stays blue
    assert torch.allclose(x[:, 3, 0], torch.ones(3))  # transparent -> white

    Image.fromarray(rgba).convert("P").save(tmp_path / "p.png")  # palette with a transparent index
    assert torch.allclose(load_image(tmp_path / "p.png")[:, 3, 0], torch.ones(3))

    deep = np.array([[0, 257, 32768, 65535]], np.uint16)  # 257 is 1/255 of the range: not 8-bit truncated
    Image.fromarray(deep).save(tmp_path / "d.png")
    x = load_image(tmp_path / "d.png")
    assert torch.allclose(x[0, 0], torch.tensor(deep[0] / 65535.0, dtype=torch.float32), atol=1e-6)


def test_exif_orientation_is_applied(predicted):
    x = load_image(predicted["root"] / "in" / "rotated.jpg")
    assert x.shape == (3, 40, 24)  # displayed portrait
    assert x[0, :18].mean() > 0.9 and x[0, 22:].mean() < 0.1  # stored left half red -> top half red


def test_corrupt_file_raises_with_a_reason(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "x.png")


def test_find_images_skips_non_images_and_names_missing(predicted, tmp_path):
    pairs, missing = find_images([predicted["root"] / "in", tmp_path / "nope.png"])
    rels = {str(rel) for _, rel in pairs}
    assert "notes.txt" not in rels and "photos/astronaut.jpg" in rels and "deep/er/sixteen.png" in rels
    assert missing and missing[0][0].name == "nope.png"


def test_output_stems_disambiguate_clashes(tmp_path):
    from pathlib import Path

    pairs = [(tmp_path / name, Path(name)) for name in ("a.png", "a.jpg", "b.png")]
    assert [str(s) for s in output_stems(pairs)] == ["a", "a_jpg", "b"]


# -- the main run -------------------------------------------------------------------------------------------


def test_every_image_gets_three_outputs_at_input_size(predicted):
    out = predicted["root"] / "out"
    for stem, size in predicted["expected"].items():
        pred = np.load(out / f"{stem}_pred.npy")
        assert pred.dtype == np.float32 and pred.shape == size, stem
        assert 0.0 <= pred.min() and pred.max() <= 1.0
        assert (out / f"{stem}_pred.png").is_file() and (out / f"{stem}_colored.png").is_file()
    assert np.load(out / "rotated_pred.npy").shape == (40, 24)  # EXIF rotation honoured


def test_folder_structure_is_mirrored_and_non_images_ignored(predicted):
    out = predicted["root"] / "out"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_pred.npy"))
    assert written == sorted(f"{stem}_pred.npy" for stem in predicted["expected"])
    assert not list(out.rglob("notes*")) and not list(out.rglob("broken*"))


def test_depth_png_is_16_bit_and_colored_is_rgb(predicted):
    out = predicted["root"] / "out"
    with Image.open(out / "photos" / "coffee_pred.png") as img:
        assert img.mode in ("I;16", "I") and img.size == (48, 32)
        png = np.asarray(img).astype(np.float64) / 65535.0
    np.testing.assert_allclose(png, np.load(out / "photos" / "coffee_pred.npy"), atol=1 / 65535)
    with Image.open(out / "photos" / "coffee_colored.png") as img:
        assert img.mode == "RGB" and img.size == (48, 32)


def test_corrupt_file_is_reported_and_others_written(predicted):
    assert predicted["rc"] == 1
    lines = [line for line in predicted["err"].splitlines() if "broken.png" in line]
    assert len(lines) == 1 and "cannot read image" in lines[0]
    n = len(predicted["expected"])
    assert f"{n} written, 0 skipped (existing), 1 failed" in predicted["out"]


def test_existing_outputs_are_kept_unless_overwrite(predicted, tmp_path):
    base, unet = predicted["args"]
    src, out = predicted["root"] / "in" / "photos", predicted["root"] / "out" / "photos"
    stamp = (out / "coffee_pred.npy").stat().st_mtime_ns
    rc, stdout, _ = run_cli(src, "--base", base, "--unet", unet, "--task", "depth", "-o", out, *RES)
    assert rc == 0 and "0 written, 2 skipped (existing), 0 failed" in stdout
    assert (out / "coffee_pred.npy").stat().st_mtime_ns == stamp
    rc, stdout, _ = run_cli(src / "coffee.png", "--base", base, "--unet", unet, "--task", "depth", "-o", out,
                            "--overwrite", *RES)
    assert rc == 0 and "1 written, 0 skipped (existing), 0 failed" in stdout
    assert (out / "coffee_pred.npy").stat().st_mtime_ns != stamp


# -- other tasks, the DPT head ------------------------------------------------------------------------------


def test_normal_outputs_are_8_bit_rgb(predicted, tmp_path):
    base, unet = predicted["args"]
    rc, _, _ = run_cli(predicted["root"] / "in" / "photos" / "coffee.png", "--base", base, "--unet", unet,
                       "--task", "normal", "-o", tmp_path, *RES)
    assert rc == 0
    pred = np.load(tmp_path / "coffee_pred.npy")
    assert pred.shape == (32, 48, 3) and pred.min() >= 0 and pred.max() <= 1  # the authors': clipped, not unit
    for name in ("coffee_pred.png", "coffee_colored.png"):
        with Image.open(tmp_path / name) as img:
            assert img.mode == "RGB" and img.size == (48, 32)
    rc, _, _ = run_cli(predicted["root"] / "in" / "photos" / "coffee.png", "--base", base, "--unet", unet,
                       "--task", "normal", "-o", tmp_path / "ours", "--processing", "marigold", *RES)
    ours = np.load(tmp_path / "ours" / "coffee_pred.npy")
    assert rc == 0 and np.allclose(np.linalg.norm(ours * 2 - 1, axis=-1), 1.0, atol=0.05)  # unit normals


def test_matting_png_is_8_bit_gray(predicted, tmp_path):
    base, unet = predicted["args"]
    rc, _, _ = run_cli(predicted["root"] / "in" / "gray.bmp", "--base", base, "--unet", unet,
                       "--task", "matting", "-o", tmp_path, *RES)
    assert rc == 0
    with Image.open(tmp_path / "gray_pred.png") as img:
        assert img.mode == "L"


def test_dpt_head_with_official_key_names(predicted, tmp_path, tiny_unet):
    base, unet = predicted["args"]
    head = heads.DPTHead.for_unet(tiny_unet, features=16)
    heads.save_dpt_head(head, tmp_path / "dpt_head_identity")
    assert "neck.fusion_stage.layers.0.residual_layer2.convolution1.weight" in head.state_dict()
    rc, _, _ = run_cli(predicted["root"] / "in" / "photos" / "coffee.png", "--base", base, "--unet", unet,
                       "--head", tmp_path / "dpt_head_identity", "--task", "disparity",
                       "-o", tmp_path / "out", *RES)
    assert rc == 0
    pred = np.load(tmp_path / "out" / "coffee_pred.npy")
    assert pred.shape == (32, 48) and pred.min() >= 0.0 and pred.max() <= 1.0
    assert pred.max() - pred.min() > 0.5  # min-max normalised at the head's resolution, then resized
    with Image.open(tmp_path / "out" / "coffee_pred.png") as img:
        assert img.mode in ("I;16", "I")


# -- one-line errors ----------------------------------------------------------------------------------------


def _single_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("genpercept predict: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_model_folders_and_task_are_one_line_errors(predicted, tmp_path):
    from helpers import write_tiny_unet

    base, unet = predicted["args"]
    image = predicted["root"] / "in" / "gray.bmp"
    (tmp_path / "base_without_vae" / "text_encoder").mkdir(parents=True)
    eight = write_tiny_unet(tmp_path / "unet8", in_channels=8)
    cases = [
        ((image, "--base", tmp_path / "base_without_vae", "--unet", unet, "--task", "depth"), "no vae/"),
        ((image, "--base", base, "--unet", eight, "--task", "depth"), "in_channels=8"),
        ((image, "--base", base, "--unet", unet, "--task", "albedo"), "unknown task 'albedo': expected one"),
        ((image, "--base", "stabilityai/stable-diffusion-2-1", "--unet", unet, "--task", "depth"),
         "hub downloads are disabled"),
        ((tmp_path / "empty_dir_missing", "--base", base, "--unet", unet, "--task", "depth"), None),
    ]
    for argv, needle in cases:
        rc, _, err = run_cli(*argv, "-o", tmp_path / "out", *RES)
        if needle is None:  # an input that does not exist: named, non-zero
            assert rc == 1 and "empty_dir_missing: no such file or folder" in err
            continue
        assert rc == 2, argv
        assert needle in _single_error(err)
    assert "expected 4" in _single_error(run_cli(image, "--base", base, "--unet", eight, "--task", "depth",
                                                 "-o", tmp_path / "out")[2])


def test_folder_without_images_is_an_error(predicted, tmp_path):
    base, unet = predicted["args"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    rc, _, err = run_cli(tmp_path / "docs", "--base", base, "--unet", unet, "--task", "depth",
                         "-o", tmp_path / "o")
    assert rc == 2 and "no images found" in _single_error(err)


# -- reliability: one bad image, stale outputs, the wrong U-Net, what is named explicitly ------------------------


def test_one_image_that_fails_is_named_and_the_others_are_written(predicted, tmp_path):
    base, unet = predicted["args"]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(folder / name)
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "b.png")  # 1 x 1: too small for the VAE
    rc, out, err = run_cli(folder, "--base", base, "--unet", unet, "--task", "depth", "-o", tmp_path / "o",
                           "--processing-res", "0", "--batch-size", "3")
    assert rc == 1 and "2 written, 0 skipped (existing), 1 failed" in out
    bad = [line for line in err.splitlines() if "b.png" in line]
    assert len(bad) == 1 and "cannot predict this 1 x 1 image" in bad[0]
    assert (tmp_path / "o" / "a_pred.npy").is_file() and (tmp_path / "o" / "c_pred.npy").is_file()


def test_images_too_small_at_the_processing_size_are_said_in_our_words(predicted, tmp_path):
    """torch's "Kernel size can't be greater than actual input size" said nothing about what to change."""
    base, unet = predicted["args"]
    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.zeros((30, 4000, 3), np.uint8)).save(folder / "strip.png")  # 768 x 5 px at 768
    for res, name, says in (("0", "dot.png", "1 x 1 px at its native size (--processing-res 0)"),
                            ("768", "strip.png", "768 x 5 px at --processing-res 768")):
        rc, out, err = run_cli(folder / name, "--base", base, "--unet", unet, "--task", "depth", "-o", tmp_path / res,
                               "--processing-res", res)
        lines = [line.rsplit("\r", 1)[-1] for line in err.splitlines() if name in line]
        assert rc == 1 and "0 written, 0 skipped (existing), 1 failed" in out and len(lines) == 1, err
        line = lines[0]
        assert line == (f"{folder / name}: cannot predict this {'1 x 1' if name == 'dot.png' else '4000 x 30'} "
                        f"image: too small, {says}, under the 8 px a side the VAE needs; try another "
                        "--processing-res (0 = native size)"), line
    rc, _, _ = run_cli(folder / "strip.png", "--base", base, "--unet", unet, "--task", "depth", "-o", tmp_path / "0",
                       "--processing-res", "0")
    assert rc == 0 and (tmp_path / "0" / "strip_pred.npy").is_file()  # at its native size it fits


def test_a_symlink_loop_and_a_gif_in_a_folder_are_named_on_one_line(predicted, tmp_path):
    base, unet = predicted["args"]
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "good.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "anim.gif")
    (folder / "x.png").symlink_to(folder / "y.png")
    (folder / "y.png").symlink_to(folder / "x.png")  # x.png -> y.png -> x.png
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    rc, out, err = run_cli(folder, "--base", base, "--unet", unet, "--task", "depth", "-o", tmp_path / "o", *RES)
    assert rc == 1 and "1 written, 0 skipped (existing), 4 failed" in out

    def said(name):
        (line,) = [line for line in err.splitlines() if line.startswith(str(folder / name))]
        return line.split(": ", 1)[1]

    assert said("anim.gif").startswith("an image format this tool does not read (expected .jpg, ")
    assert said("x.png") == said("y.png") == "a loop of symbolic links"
    assert said("gone.jpg") == f"a symbolic link to {folder / 'nowhere.jpg'}, which does not exist"
    only_gif = tmp_path / "gifs"
    only_gif.mkdir()
    (folder / "anim.gif").rename(only_gif / "anim.gif")
    rc, out, err = run_cli(only_gif, "--base", base, "--unet", unet, "--task", "depth", "-o", tmp_path / "o", *RES)
    assert rc == 1 and "no images found" not in err and "anim.gif: an image format this tool does not read" in err


def test_the_output_folder_inside_an_input_folder_gives_no_predictions_of_predictions(predicted, tmp_path):
    base, unet = predicted["args"]
    for case in ("same", "inside"):  # -o the input folder itself, and -o a folder inside it
        folder = tmp_path / case / "photos"
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "good.png")
        out_dir = folder if case == "same" else folder / "predictions"
        for _ in range(2):  # the second run finds the first one's outputs in the input folder
            rc, out, err = run_cli(folder, "--base", base, "--unet", unet, "--task", "depth", "-o", out_dir,
                                   "--overwrite", *RES)
            assert rc == 0 and "1 written, 0 skipped (existing), 0 failed" in out, out + err
        assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(["good_colored.png", "good_pred.png"] +
                                                                       (["good.png"] if case == "same" else []))
        assert "2 file(s) in" in err and "are outputs of this tool (*_pred.png, *_colored.png): not taken" in err
