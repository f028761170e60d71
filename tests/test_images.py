"""The image processor: the authors' processing pinned point by point (answers worked out by hand), our
"marigold" processing as the named option, and reading image files of every kind."""

import numpy as np
import pytest
import torch
from PIL import Image

from genpercept_lib import images, tasks
from genpercept_lib.images import PROCESSINGS, get_processing, prepare, processing_size, restore
from genpercept_lib.pipeline import finish_head_map

AUTHORS, MARIGOLD = PROCESSINGS["authors"], PROCESSINGS["marigold"]


# -- 3. processing size: int() truncation (authors) vs rounding (ours) ----------------------------------------
def test_processing_size_truncates_like_the_authors():
    assert processing_size(400, 600, 64) == (42, 64)                    # 400 * 64/600 = 42.67 -> 42
    assert processing_size(400, 600, 64, "round") == (43, 64)
    assert processing_size(300, 451, 64) == (42, 64)                    # 42.57
    assert processing_size(451, 300, 64, "round") == (64, 43)
    assert processing_size(37, 50, 0) == (37, 50)                       # 0 = native
    assert processing_size(20, 30, 60) == (40, 60)                      # small images are enlarged
    with pytest.raises(ValueError, match="expected >= 0"):
        processing_size(10, 10, -1)


# -- 4. input quantisation: the uint8 tensor is resized and rounded --------------------------------------------
def test_resize_uint8_rounds_to_8_bit_levels():
    x = torch.tensor([[[[0.0, 1.0 / 255.0]]]]).expand(1, 3, 1, 2)  # two levels, 0 and 1
    half = images.resize_uint8(x, (1, 1))  # the antialiased mean is level 0.5: round-half-even -> 0
    assert torch.equal(half, torch.zeros(1, 3, 1, 1))
    assert images.resize(x, (1, 1)).flatten()[0].item() == pytest.approx(0.5 / 255)  # ours keeps the float
    y = torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(0))
    out = images.resize_uint8(y, (5, 7))
    assert torch.equal(out * 255, torch.round(out * 255))  # on the 8-bit grid
    # an image that is already 8-bit and not resized stays exactly the same
    z = torch.round(y * 255) / 255
    assert torch.equal(prepare(z, 0, 8, AUTHORS).x[0], z[0])


# -- 5. padding: the authors feed the resized image as it is ---------------------------------------------------
def test_authors_do_not_pad_ours_pad_to_the_vae_multiple():
    image = torch.rand(3, 400, 600)
    theirs, ours = prepare(image, 64, 8, AUTHORS), prepare(image, 64, 8, MARIGOLD)
    assert theirs.x.shape[-2:] == (42, 64) and theirs.padding == (0, 0)
    assert ours.x.shape[-2:] == (48, 64) and ours.padding == (5, 0) and ours.processing_size == (43, 64)
    assert torch.equal(ours.x[..., 47, :], ours.x[..., 42, :])  # replicate padding


def test_latent_of_a_size_that_is_not_a_multiple(tiny_vae, tiny_unet):
    """42 x 64 -> the tiny VAE (three stride-2 downsamplers) makes a 5 x 8 latent and a 40 x 64 decode, which
    the authors resize straight to the input size; ours pads to 48 x 64 and crops 43 x 64."""
    from genpercept_lib.pipeline import GenPerceptPipeline

    image = torch.rand(3, 400, 600, generator=torch.Generator().manual_seed(1))
    pipe = GenPerceptPipeline(tiny_vae, tiny_unet, "depth")
    assert pipe(image, processing_resolution=64, match_input_resolution=False).prediction.shape == (1, 40, 64)
    assert pipe(image, processing_resolution=64).prediction.shape == (1, 400, 600)
    ours = GenPerceptPipeline(tiny_vae, tiny_unet, "depth", processing="marigold")
    assert ours(image, processing_resolution=64, match_input_resolution=False).prediction.shape == (1, 43, 64)


# -- 1. depth: channel mean, then clip (authors) vs clip, then mean (ours) -----------------------------------
def test_depth_decode_takes_the_mean_before_the_clip():
    decoded = torch.tensor([1.5, 0.0, 0.0]).view(1, 3, 1, 1)  # one channel outside [-1, 1]
    depth = tasks.get("depth")
    assert depth.decode(decoded, AUTHORS).item() == pytest.approx(0.75)  # mean 0.5 -> (0.5 + 1) / 2
    assert depth.decode(decoded, MARIGOLD).item() == pytest.approx(2.0 / 3.0)  # (1 + 0 + 0) / 3 -> 2/3


# -- 2. normals: clipped, not renormalised (authors) vs unit vectors (ours) -----------------------------------
def test_normals_are_not_renormalised_by_the_authors():
    decoded = torch.tensor([0.5, 0.0, -2.0]).view(1, 3, 1, 1)
    normal = tasks.get("normal")
    theirs = normal.to_output(normal.decode(decoded, AUTHORS)[0], AUTHORS)  # [1, 1, 3]
    np.testing.assert_allclose(theirs[0, 0], [0.75, 0.5, 0.0])  # (clip(x) + 1) / 2
    ours = normal.to_output(normal.decode(decoded, MARIGOLD)[0], MARIGOLD)
    unit = np.array([0.5, 0.0, -1.0]) / np.linalg.norm([0.5, 0.0, -1.0])  # clip, then normalise
    np.testing.assert_allclose(ours[0, 0], (unit + 1) / 2, atol=1e-6)


# -- 6. DPT head: min-max at the head's resolution, then one resize --------------------------------------------
def test_dpt_head_map_is_normalised_before_the_resize():
    raw = torch.tensor([[0.0, 0.0], [0.0, 4.0]]).view(1, 1, 2, 2)
    prepared = images.Prepared(torch.zeros(1, 3, 2, 2), (1, 1), (2, 2), (0, 0))
    theirs = finish_head_map(raw, prepared, (1, 1), AUTHORS)  # [[0, 0], [0, 1]] -> mean 0.25
    assert theirs.item() == pytest.approx(0.25)
    ours = finish_head_map(raw, prepared, (1, 1), MARIGOLD)  # min-max at 2 x 2 too, here: same map
    assert ours.item() == pytest.approx(0.25)
    # where the two differ: the padded margin holds the map's maximum; ours crops it before normalising
    raw = torch.tensor([0.0, 1.0, 10.0]).view(1, 1, 1, 3)
    padded = images.Prepared(torch.zeros(1, 3, 1, 3), (1, 1), (1, 2), (0, 1))
    assert finish_head_map(raw, padded, (1, 1), MARIGOLD).item() == pytest.approx(0.5)  # [0, 1] -> mean
    assert finish_head_map(raw, padded, (1, 1), AUTHORS.replace(pad=True)).item() == pytest.approx(0.05)


def test_restore_crops_padding_then_resizes_once():
    prepared = images.Prepared(torch.zeros(1, 3, 8, 8), (3, 5), (6, 7), (2, 1))
    pred = torch.arange(64.0).view(1, 1, 8, 8)
    assert restore(pred, prepared, None).shape[-2:] == (6, 7)
    assert restore(pred, prepared, (3, 5)).shape[-2:] == (3, 5)
    labels = torch.tensor([[[[0.0, 3.0], [5.0, 7.0]]]])
    up = restore(labels, images.Prepared(labels, (4, 4), (2, 2), (0, 0)), (4, 4), "nearest")
    assert set(up.unique().tolist()) == {0.0, 3.0, 5.0, 7.0}  # class maps are never blended


def test_processing_by_name_and_switches():
    assert get_processing(None) is AUTHORS and get_processing("marigold") is MARIGOLD
    assert get_processing(AUTHORS.replace(pad=True)).pad is True
    with pytest.raises(ValueError, match="unknown processing 'fast': expected one of authors, marigold"):
        get_processing("fast")
    for switch in images.SWITCHES:  # every switch departs from the authors' value in "marigold"
        assert getattr(AUTHORS, switch) != getattr(MARIGOLD, switch)


# -- reading files ---------------------------------------------------------------------------------------------
def test_load_image_handles_sixteen_bit_and_alpha(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    x = images.load_image(tmp_path / "g16.png")
    assert x.shape == (3, 3, 4) and x[0, 2, 3].item() == pytest.approx(11 * 5000 / 65535)  # not saturated
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on white, not black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert torch.allclose(images.load_image(tmp_path / "a.png"), torch.ones(3, 2, 2))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(images.ImageReadError, match="cannot read image"):
        images.load_image(tmp_path / "broken.png")


def test_prepared_images_are_contiguous():
    """A permuted HWC array has a channels-last stride, which picks other convolution kernels (~1e-5 apart from
    the authors' outputs): the processor hands the VAE contiguous tensors."""
    hwc = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
    assert images.as_image_tensor(hwc).is_contiguous()
    strided = torch.from_numpy(hwc).permute(2, 0, 1)
    assert not strided.is_contiguous() and prepare(strided, 0, 8).x.is_contiguous()
