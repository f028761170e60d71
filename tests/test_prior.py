"""The toy-world prior: trains at smoke scale, is cached, reloads with plain diffusers, rebuilds when broken."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from helpers import record_threads, torch_threads

from genpercept_lib import models, profiles
from genpercept_lib import prior as prior_lib


@pytest.fixture(scope="module")
def smoke_prior(tmp_path_factory):
    cfg = profiles.get_profile("smoke")
    root = tmp_path_factory.mktemp("cache")
    return cfg, root, prior_lib.load_or_train_prior(cfg, root=root)


def test_prior_trains_and_is_cached(smoke_prior):
    cfg, root, prior = smoke_prior
    assert prior.trained_now and len(prior.history["vae"]) == cfg.prior_vae_steps
    again = prior_lib.load_or_train_prior(cfg, root=root)
    assert not again.trained_now and again.folder == prior.folder
    for p, q in zip(again.unet.parameters(), prior.unet.parameters()):
        torch.testing.assert_close(p, q)
    assert again.history["unet"] == prior.history["unet"]


def test_cached_models_load_with_plain_diffusers(smoke_prior):
    _, _, prior = smoke_prior
    vae = AutoencoderKL.from_pretrained(prior.folder / "vae")
    unet = UNet2DConditionModel.from_pretrained(prior.folder / "unet")
    assert vae.config.scaling_factor == pytest.approx(prior.vae.config.scaling_factor)
    assert vae.config.scaling_factor != 1.0  # set from the latents' std after training
    assert unet.config.sample_size == 4  # 32 px / 8


def test_scaling_factor_gives_unit_latents(smoke_prior):
    _, _, prior = smoke_prior
    images = prior_lib.prior_images(profiles.get_profile("smoke"))
    z = models.encode_batched(prior.vae, images["rgb"])
    assert z.std().item() == pytest.approx(1.0, rel=0.05)


def test_broken_cache_is_rebuilt(tmp_path):
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=3, prior_unet_steps=3)
    first = prior_lib.load_or_train_prior(cfg, root=tmp_path)
    (first.folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"corrupt")
    second = prior_lib.load_or_train_prior(cfg, root=tmp_path)
    assert second.trained_now
    assert UNet2DConditionModel.from_pretrained(second.folder / "unet").config.in_channels == 4


def test_samples_have_image_shape(smoke_prior):
    _, _, prior = smoke_prior
    x = prior_lib.sample_images(prior.unet, prior.vae, n=2, steps=2)
    assert x.shape == (2, 3, 32, 32) and x.min() >= 0 and x.max() <= 1


def test_paper_profile_loads_sd21_layout_from_env(tmp_path, monkeypatch, tiny_unet):
    from helpers import write_tiny_base

    write_tiny_base(tmp_path)  # vae/, text_encoder/, tokenizer/
    tiny_unet.save_pretrained(tmp_path / "unet")
    monkeypatch.setenv("GENPERCEPT_SD21", str(tmp_path))
    prior = prior_lib.load_or_train_prior(profiles.get_profile("paper"))
    assert prior.folder == tmp_path and prior.unet.config.in_channels == 4
    assert prior.text_embedding.shape == (1, 2, 32)  # the empty prompt, unpadded: start + end token


def test_paper_profile_without_text_encoder_is_one_clear_line(tmp_path, monkeypatch, tiny_vae, tiny_unet):
    from genpercept_lib.models import ModelPathError

    tiny_vae.save_pretrained(tmp_path / "vae")
    tiny_unet.save_pretrained(tmp_path / "unet")
    monkeypatch.setenv("GENPERCEPT_SD21", str(tmp_path))
    with pytest.raises(ModelPathError, match="no text_encoder/ folder; expected a Stable Diffusion 2.1 folder"):
        prior_lib.load_or_train_prior(profiles.get_profile("paper"))


def test_paper_profile_without_weights_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("GENPERCEPT_SD21", raising=False)
    with pytest.raises(ValueError, match="the paper profile needs GENPERCEPT_SD21 set to a local diffusers checkout"):
        prior_lib.load_or_train_prior(profiles.get_profile("paper"))


def test_prior_does_not_depend_on_what_the_cache_holds(tmp_path, monkeypatch):
    """Built from an empty cache (renders made now) and with the renders cached: identical weights."""
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=6, prior_unet_steps=6)
    fresh = prior_lib.load_or_train_prior(cfg)
    cached = prior_lib.load_or_train_prior(cfg, retrain=True)
    for p, q in zip([*fresh.vae.parameters(), *fresh.unet.parameters()],
                    [*cached.vae.parameters(), *cached.unet.parameters()]):
        assert torch.equal(p, q)


def test_a_retrained_prior_gets_new_fine_tuned_models(tmp_path, monkeypatch, capsys):
    from genpercept_lib import finetune
    from genpercept_lib.spec import FinetuneSpec

    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=3, prior_unet_steps=3)
    first = prior_lib.load_or_train_prior(cfg)
    folder = finetune.finetune_folder(cfg, FinetuneSpec(), first)
    (first.folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"corrupt")
    second = prior_lib.load_or_train_prior(cfg.replace(prior_unet_steps=3))
    assert "notice: the cached prior" in capsys.readouterr().out  # not silent
    (second.folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")  # and once more
    third = prior_lib.load_or_train_prior(cfg)
    assert third.content_hash == first.content_hash  # deterministic training: the same weights again
    torch.manual_seed(1)
    for p in third.unet.parameters():  # a different prior (same settings) keys different fine-tuned models
        p.data.add_(torch.randn_like(p) * 1e-3)
    third.unet.save_pretrained(third.folder / "unet")
    changed = prior_lib.load_or_train_prior(cfg)
    assert changed.content_hash != first.content_hash
    assert finetune.finetune_folder(cfg, FinetuneSpec(), changed) != folder


def test_label_tasks_are_part_of_the_prior_key(monkeypatch):
    """The VAE learns the label images of every ``in_prior`` task; a task joining or leaving that list makes a
    new prior folder (a cached prior trained without its labels is never reused)."""
    from genpercept_lib import tasks

    cfg = profiles.get_profile("default")
    names = [t.name for t in prior_lib.label_tasks()]
    assert {"depth", "normal", "seg_toy", "matting"} <= set(names) and "seg" not in names and "pose" not in names
    before = prior_lib.prior_folder(cfg)
    monkeypatch.setattr(tasks.get("matting"), "in_prior", False)
    assert "matting" not in prior_lib.prior_settings(cfg)["label_tasks"]
    assert prior_lib.prior_folder(cfg) != before


def test_a_label_palette_is_part_of_the_prior_key(monkeypatch):
    """The VAE learns the palette images of seg_toy: new colours make a new prior folder, never a stale one."""
    from genpercept_lib import tasks

    cfg = profiles.get_profile("default")
    before = prior_lib.prior_folder(cfg)
    task = tasks.get("seg_toy")
    monkeypatch.setattr(task, "palette", task.palette[::-1].copy())
    assert prior_lib.prior_settings(cfg)["palettes"]["seg_toy"] == task.palette.tolist()
    assert prior_lib.prior_folder(cfg) != before


def test_prior_images_hold_every_label_task(tmp_path, monkeypatch):
    """One label image per prior scene and label task, each in [-1, 1]: [T * N, 3, H, W]."""
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    cfg = profiles.get_profile("smoke")
    images = prior_lib.prior_images(cfg)
    n = len(images["rgb"])
    assert images["labels"].shape == (len(prior_lib.label_tasks()) * n, 3, cfg.image_size, cfg.image_size)
    assert images["labels"].min() >= -1 and images["labels"].max() <= 1


def test_the_prior_trains_with_its_own_threads_and_restores_them(tmp_path, monkeypatch):
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=2, prior_unet_steps=2, prior_threads=2)
    seen = {}
    record_threads(monkeypatch, prior_lib, "train_vae", seen, "vae")
    record_threads(monkeypatch, prior_lib, "train_generator", seen, "unet")
    before = torch.get_num_threads()
    prior_lib.load_or_train_prior(cfg, root=tmp_path)
    assert seen == {"vae": 2, "unet": 2} and torch.get_num_threads() == before


def test_the_thread_count_keys_the_prior(tmp_path, monkeypatch):
    """Trained with one and with two threads, the same settings give other weights: each count has its own folder,
    and the count in the key is the one the prior trains with (``prior_threads``, else ``threads``)."""
    cfg = profiles.get_profile("default")
    one, two = cfg.replace(prior_threads=1), cfg.replace(prior_threads=2)
    assert prior_lib.prior_settings(one)["threads"] == 1 and prior_lib.prior_settings(two)["threads"] == 2
    assert prior_lib.prior_folder(one) != prior_lib.prior_folder(two)
    assert prior_lib.training_threads(cfg.replace(prior_threads=None, threads=3)) == 3
    small = profiles.get_profile("smoke").replace(prior_vae_steps=2, prior_unet_steps=2, prior_threads=None, threads=2)
    seen = {}
    record_threads(monkeypatch, prior_lib, "train_vae", seen, "vae")
    with torch_threads(1):  # the process runs with another count than the profile's
        trained = prior_lib.load_or_train_prior(small, root=tmp_path)
    assert seen["vae"] == prior_lib.prior_settings(small)["threads"] == 2
    assert json.loads((trained.folder / "prior.json").read_text())["settings"]["threads"] == 2
