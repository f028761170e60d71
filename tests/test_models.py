import pytest
import torch
from accelerate import init_empty_weights

from genpercept_lib import models


def test_sd21_architecture_from_shipped_configs():
    with init_empty_weights():
        unet = models.build_unet("sd21", seed=None)
        vae = models.build_vae("sd21", seed=None)
    assert models.count_parameters(unet) == 865_910_724  # SD2.1 U-Net
    assert models.count_parameters(vae) == 83_653_863  # SD2.1 VAE
    assert models.vae_scale_factor(vae) == 8 and unet.config.cross_attention_dim == 1024


def test_tiny_models_are_seeded():
    a, b = models.build_unet("tiny", seed=3), models.build_unet("tiny", seed=3)
    c = models.build_unet("tiny", seed=4)
    assert torch.equal(a.conv_in.weight, b.conv_in.weight)
    assert not torch.equal(a.conv_in.weight, c.conv_in.weight)


def test_expand_conv_in_keeps_output_for_duplicated_input(tiny_vae):
    unet = models.build_unet("tiny", seed=0)
    z = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    cond = models.empty_text_embedding(unet, 2)
    with torch.no_grad():
        before = unet(z, t, encoder_hidden_states=cond).sample
        models.expand_conv_in(unet)
        after = unet(torch.cat([z, z], 1), t, encoder_hidden_states=cond).sample
    assert unet.conv_in.in_channels == 8 and unet.config.in_channels == 8
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unet.conv_in.weight[:, :4], unet.conv_in.weight[:, 4:])


def test_save_and_load_roundtrip(tmp_path, tiny_vae):
    unet = models.expand_conv_in(models.build_unet("tiny", seed=1))
    unet.save_pretrained(tmp_path / "unet")
    tiny_vae.save_pretrained(tmp_path / "vae")
    loaded = models.load_unet(tmp_path / "unet")
    assert loaded.config.in_channels == 8
    torch.testing.assert_close(loaded.conv_in.weight, unet.conv_in.weight)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert models.load_vae(tmp_path, subfolder="vae").config.latent_channels == 4


def test_encode_decode_shapes(tiny_vae):
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = models.encode(tiny_vae, x)
    assert z.shape == (2, 4, 4, 6)
    assert models.decode(tiny_vae, z).shape == (2, 3, 32, 48)


def test_missing_path_is_one_line(tmp_path):
    with pytest.raises(models.ModelPathError, match="no such model folder") as err:
        models.load_unet(tmp_path / "nope")
    assert "\n" not in str(err.value)


def test_folder_without_config(tmp_path):
    with pytest.raises(models.ModelPathError, match="no config.json"):
        models.load_vae(tmp_path)


def test_hub_id_refused_offline_without_hanging():
    with pytest.raises(models.ModelPathError, match="hub downloads are disabled") as err:
        models.load_unet("stabilityai/stable-diffusion-2-1", subfolder="unet")
    assert "\n" not in str(err.value) and "--local-dir" in str(err.value)


def test_unknown_config_name():
    with pytest.raises(ValueError, match="expected one of sd21, tiny"):
        models.build_unet("sd15")
