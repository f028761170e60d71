"""GenPerceptPipeline on tiny random models: resize/pad/unpad, shapes and ranges per task, batching, DPT head,
loading a diffusers-layout base folder, and the one-line errors for folders that do not fit."""

import numpy as np
import pytest
import torch
from PIL import Image

from genpercept_lib import heads, models, tasks
from genpercept_lib.images import pad_to_multiple, unpad
from genpercept_lib.pipeline import GenPerceptPipeline

TASKS = tasks.names()


@pytest.fixture(scope="module")
def images():
    """Three 37 x 50 images (not multiples of 8), seeded."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 37, 50, generator=g)  # [N, 3, H, W] in [0, 1]


def _pipe(vae, unet, task="depth", **kwargs):
    return GenPerceptPipeline(vae, unet, task, **kwargs)


# -- resize / pad helpers ------------------------------------------------------------------------------------


def test_pad_to_multiple_replicates_and_unpad_restores():
    x = torch.rand(1, 3, 37, 50)
    padded, padding = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (40, 56) and padding == (3, 6)
    assert torch.equal(padded[..., 39, :50], x[..., 36, :])  # bottom rows replicate the last one
    assert torch.equal(unpad(padded, padding), x)
    same, none = pad_to_multiple(torch.rand(1, 3, 16, 24), 8)
    assert none == (0, 0) and same.shape[-2:] == (16, 24)


# -- predictions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_shapes_and_range_for_each_task(tiny_vae, tiny_unet, images, task):
    out = _pipe(tiny_vae, tiny_unet, task)(images[:2], processing_resolution=64)
    pred = out.prediction
    expected = (2, 37, 50) if tasks.get(task).channels == 1 else (2, 37, 50, 3)
    assert isinstance(pred, np.ndarray) and pred.shape == expected and pred.dtype == np.float32
    assert pred.min() >= 0.0 and pred.max() <= 1.0 and np.isfinite(pred).all()
    assert out.processing_sizes == [(47, 64), (47, 64)]
    if task == "normal":  # ours: (n + 1) / 2 of unit vectors (the authors' are only clipped)
        ours = _pipe(tiny_vae, tiny_unet, task, processing="marigold")(images[:2], processing_resolution=64)
        assert np.allclose(np.linalg.norm(ours.prediction * 2 - 1, axis=-1), 1.0, atol=1e-3)


def test_processing_resolution_output_keeps_aspect(tiny_vae, tiny_unet):
    pipe = _pipe(tiny_vae, tiny_unet, processing="marigold")
    image = torch.rand(3, 30, 90)
    assert pipe(image, processing_resolution=64, match_input_resolution=False).prediction.shape == (1, 21, 64)
    # the authors' decode of the unpadded 21 x 64 image: a 2 x 8 latent, 16 x 64 pixels
    assert _pipe(tiny_vae, tiny_unet)(image, processing_resolution=64,
                                      match_input_resolution=False).prediction.shape == (1, 16, 64)
    assert pipe(image, processing_resolution=64).prediction.shape == (1, 30, 90)
    assert pipe(image, processing_resolution=0, match_input_resolution=False).prediction.shape == (1, 30, 90)


def test_batch_size_does_not_change_outputs(tiny_vae, tiny_unet, images):
    pipe = _pipe(tiny_vae, tiny_unet)
    one = pipe(images, processing_resolution=64, batch_size=1).prediction
    three = pipe(images, processing_resolution=64, batch_size=3).prediction
    assert one.shape == (3, 37, 50)
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_mixed_sizes_give_a_list_in_input_order(tiny_vae, tiny_unet, images):
    pipe = _pipe(tiny_vae, tiny_unet)
    small = torch.rand(3, 20, 24)
    out = pipe([images[0], small, images[1]], processing_resolution=64, batch_size=2)
    assert [p.shape for p in out.prediction] == [(37, 50), (20, 24), (37, 50)]
    alone = pipe(images[1], processing_resolution=64).prediction[0]
    np.testing.assert_allclose(out.prediction[2], alone, atol=1e-5)


def test_accepts_pil_and_numpy_images(tiny_vae, tiny_unet):
    pipe = _pipe(tiny_vae, tiny_unet)
    array = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    from_pil = pipe(Image.fromarray(array), processing_resolution=32).prediction
    from_numpy = pipe(array, processing_resolution=32).prediction
    assert from_pil.shape == (1, 24, 32)
    np.testing.assert_allclose(from_pil, from_numpy, atol=1e-6)


def test_vae_scale_factor_comes_from_the_config(tiny_unet):
    vae4 = models.build_vae(  # downsamples by 4, not 8
        "tiny", block_out_channels=[32, 32, 64], down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
    )
    pipe = _pipe(vae4, tiny_unet)
    assert pipe.scale_factor == 4
    out = pipe(torch.rand(3, 36, 20), processing_resolution=0, match_input_resolution=False)
    assert out.prediction.shape == (1, 36, 20)


def test_half_precision_on_cpu_warns_and_falls_back(tiny_vae, tiny_unet):
    pipe = _pipe(tiny_vae, tiny_unet)
    with pytest.warns(UserWarning, match="float32"):
        out = pipe(torch.rand(3, 16, 16), processing_resolution=16, dtype="fp16", device="cpu")
    assert pipe.dtype == torch.float32 and out.prediction.shape == (1, 16, 16)


def test_deterministic_pipeline_ignores_ensembles(tiny_vae, tiny_unet):
    pipe = _pipe(tiny_vae, tiny_unet)
    x = torch.rand(3, 16, 16)
    with pytest.warns(UserWarning, match="deterministic"):
        many = pipe(x, processing_resolution=16, ensemble_size=3).prediction
    np.testing.assert_allclose(many, pipe(x, processing_resolution=16).prediction, atol=1e-6)


# -- DPT head ------------------------------------------------------------------------------------------------


def test_dpt_head_path_min_max_per_image(tiny_vae, tiny_unet, images):
    torch.manual_seed(0)
    head = heads.DPTHead.for_unet(tiny_unet, features=16)
    pipe = _pipe(tiny_vae, tiny_unet, "disparity", head=head, processing="marigold")
    out = pipe(images[:2], processing_resolution=64, match_input_resolution=False)
    assert out.prediction.shape == (2, 47, 64)
    for pred in out.prediction:  # each image spans [0, 1]
        assert pred.min() == pytest.approx(0.0, abs=1e-6) and pred.max() == pytest.approx(1.0, abs=1e-6)
    assert pipe(images[:1], processing_resolution=64).prediction.shape == (1, 37, 50)


def test_dpt_head_needs_a_scalar_task(tiny_vae, tiny_unet):
    head = heads.DPTHead.for_unet(tiny_unet, features=16)
    with pytest.raises(ValueError, match="one channel"):
        _pipe(tiny_vae, tiny_unet, "normal", head=head)


# -- loading folders -----------------------------------------------------------------------------------------


def test_from_pretrained_encodes_the_empty_prompt_once(tiny_base_dir, tiny_unet_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = GenPerceptPipeline.from_pretrained(tiny_base_dir, tiny_unet_dir, "depth")
    tokenizer = CLIPTokenizer.from_pretrained(tiny_base_dir / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(tiny_base_dir / "text_encoder", local_files_only=True)
    expected = models.encode_empty_prompt(text_encoder, tokenizer)  # [1, 2, 32]: start + end token, unpadded
    assert pipe.text_embedding.shape == (1, 2, 32)
    torch.testing.assert_close(pipe.text_embedding, expected)
    assert pipe(torch.rand(1, 3, 24, 40), processing_resolution=32).prediction.shape == (1, 24, 40)


def test_from_pretrained_with_a_head_folder(tiny_base_dir, tiny_unet_dir, tiny_unet, tmp_path):
    head = heads.DPTHead.for_unet(tiny_unet, features=16)
    heads.save_dpt_head(head, tmp_path / "dpt_head_identity")
    pipe = GenPerceptPipeline.from_pretrained(tiny_base_dir, tiny_unet_dir, "disparity",
                                              head=tmp_path / "dpt_head_identity")
    assert isinstance(pipe.head, heads.DPTHead)
    assert pipe(torch.rand(1, 3, 24, 40), processing_resolution=32).prediction.shape == (1, 24, 40)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_base_without_vae_is_a_one_line_error(tiny_base_dir, tiny_unet_dir, tmp_path):
    (tmp_path / "text_encoder").mkdir()
    with pytest.raises(models.ModelPathError) as err:
        GenPerceptPipeline.from_pretrained(tmp_path, tiny_unet_dir)
    assert "no vae/" in _one_line(err) and "text_encoder/" in str(err.value)


def test_hub_ids_are_refused_offline(tiny_base_dir, tiny_unet_dir):
    with pytest.raises(models.ModelPathError) as err:
        GenPerceptPipeline.from_pretrained("stabilityai/stable-diffusion-2-1", tiny_unet_dir)
    assert "hub downloads are disabled" in _one_line(err)
    with pytest.raises(models.ModelPathError) as err:
        GenPerceptPipeline.from_pretrained(tiny_base_dir, "guangkaixu/genpercept-models")
    assert "hub downloads are disabled" in _one_line(err)


def test_unet_that_does_not_fit_is_a_one_line_error(tiny_base_dir, tmp_path):
    from helpers import write_tiny_unet

    eight = write_tiny_unet(tmp_path / "marigold_unet", in_channels=8)
    with pytest.raises(ValueError) as err:
        GenPerceptPipeline.from_pretrained(tiny_base_dir, eight)
    msg = _one_line(err)
    assert str(eight) in msg and "in_channels=8" in msg and "expected 4" in msg
    three = write_tiny_unet(tmp_path / "rgb_unet", out_channels=3)
    with pytest.raises(ValueError, match="out_channels=3; expected 4"):
        GenPerceptPipeline.from_pretrained(tiny_base_dir, three)


def test_unknown_task_is_a_one_line_error(tiny_vae, tiny_unet):
    with pytest.raises(ValueError) as err:
        _pipe(tiny_vae, tiny_unet, "albedo")
    assert "expected one of depth, disparity" in _one_line(err)


def test_unet_inside_a_checkout_folder_is_found(tiny_base_dir, tmp_path):
    from helpers import write_tiny_unet

    write_tiny_unet(tmp_path / "checkpoint" / "unet")  # a training output: <ckpt>/unet/config.json
    pipe = GenPerceptPipeline.from_pretrained(tiny_base_dir, tmp_path / "checkpoint", "dis")
    assert pipe(torch.rand(3, 16, 24), processing_resolution=24).prediction.shape == (1, 16, 24)


def test_stochastic_ensemble_of_normals(tiny_vae, tiny_unet):
    """Was a ValueError (too many values to unpack): the normals ensemble returns a bare map."""
    from genpercept_lib import schedule
    from genpercept_lib.pipeline import perceive

    unet8 = models.expand_conv_in(models.build_unet("tiny", seed=0)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = perceive(unet8, tiny_vae, x, "stochastic", schedule.alphas_cumprod(*schedule.SD21_BETAS), 2, 3,
                   task="normal", generator=torch.Generator().manual_seed(1), processing="marigold")
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out.norm(dim=1), torch.ones(2, 16, 16), atol=1e-4)
