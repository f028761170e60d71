"""Fast inference and the five pipelines of Table 1, on tiny seeded models.

Each switch (channels_last, SDPA, VAE tiling, torch.compile, batching, autocast) leaves the one-step
prediction unchanged up to dtype tolerance and can be switched back; every pipeline (stochastic with and
without ensemble, deterministic multi-step, one-step, one-step + DPT head) gives the same output shape;
asking for what this machine lacks (CUDA, bf16, a compiler) warns and falls back instead of failing.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from genpercept_lib import heads, models, pipeline, schedule
from genpercept_lib.pipeline import GenPerceptPipeline, optimize_for_inference, perceive

RES = 32      # images 32 x 32 -> tiny latents 4 x 4 (the tiny U-Net's smallest valid input)
ATOL = 1e-5   # float32: the switches reorder reductions, nothing more
needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, RES, RES, generator=g)  # [N, 3, H, W] in [0, 1]


@pytest.fixture
def fresh():
    """Tiny U-Net, VAE and DPT head built anew: the switches change modules in place."""
    unet, vae = models.build_unet("tiny", seed=0).eval(), models.build_vae("tiny", seed=0).eval()
    torch.manual_seed(0)
    head = heads.DPTHead.for_unet(unet, features=16).eval()
    return unet, vae, head


def one_step(unet, vae, x, **kwargs) -> torch.Tensor:
    return perceive(unet, vae, x, "one_step", **kwargs)  # [B, H, W]


def with_head(unet, vae, head, x) -> np.ndarray:
    return GenPerceptPipeline(vae, unet, "depth", head=head)(x, processing_resolution=0).prediction


@pytest.mark.parametrize("switch", [
    {"channels_last": True},
    {"sdpa": False},
    {"vae_tiling": True, "tile_size": RES},  # a tile as large as the image: tiling does not engage
    {"channels_last": True, "sdpa": True, "vae_tiling": True, "tile_size": 64},
], ids=["channels_last", "classic_attention", "vae_tiling_one_tile", "combined"])
def test_switch_keeps_one_step_prediction(fresh, images, switch):
    unet, vae, head = fresh
    ref, ref_head = one_step(unet, vae, images), with_head(unet, vae, head, images)
    applied = optimize_for_inference(unet, vae, head, **switch)
    assert set(applied) == {"channels_last", "sdpa", "vae_tiling", "compile"}
    if switch.get("channels_last"):
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(one_step(unet, vae, images), ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(with_head(unet, vae, head, images), ref_head, atol=ATOL, rtol=0)
    optimize_for_inference(unet, vae, head)  # the defaults restore the plain models
    assert unet.conv_in.weight.is_contiguous() and not vae.use_tiling
    torch.testing.assert_close(one_step(unet, vae, images), ref, atol=ATOL, rtol=0)


def test_vae_tiling_on_larger_images_is_a_close_approximation(fresh):
    unet, vae, _ = fresh
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = one_step(unet, vae, x)
    assert "32 px tiles" in optimize_for_inference(unet, vae, vae_tiling=True, tile_size=32)["vae_tiling"]
    tiled = one_step(unet, vae, x)
    assert tiled.shape == ref.shape and torch.isfinite(tiled).all()
    assert 0 < (tiled - ref).abs().max() < 0.5  # per-tile statistics: close, not equal
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        optimize_for_inference(unet, vae, vae_tiling=True, tile_size=12)


def test_compile_keeps_both_paths_and_switches_back(fresh, images):
    """The ``eager`` backend exercises the same wiring as inductor (TorchDynamo tracing of every block,
    the DPT head's hooks outside the compiled code) in seconds."""
    unet, vae, head = fresh
    x = images[:1]
    ref, ref_head = one_step(unet, vae, x), with_head(unet, vae, head, x)
    applied = optimize_for_inference(unet, vae, head, compile=True, compile_backend="eager")
    assert applied["compile"].startswith("on")
    assert "forward" in vars(unet.up_blocks[-1]) and "forward" in vars(vae.decoder)
    torch.testing.assert_close(one_step(unet, vae, x), ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(with_head(unet, vae, head, x), ref_head, atol=ATOL, rtol=0)
    assert optimize_for_inference(unet, vae, head)["compile"] == "off"
    assert "forward" not in vars(unet.up_blocks[-1]) and "forward" not in vars(head)


def test_compile_without_a_compiler_warns_and_stays_off(fresh, images, monkeypatch):
    unet, vae, head = fresh
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(pipeline.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="C\\+\\+ compiler"):
        applied = optimize_for_inference(unet, vae, head, compile=True)
    assert applied["compile"].startswith("off (inductor on CPU needs")
    assert "forward" not in vars(unet.up_blocks[0])
    assert one_step(unet, vae, images[:1]).shape == (1, RES, RES)


def test_batched_images_match_one_at_a_time(tiny_unet, tiny_vae, images):
    batched = one_step(tiny_unet, tiny_vae, images)
    single = torch.cat([one_step(tiny_unet, tiny_vae, x[None]) for x in images])
    torch.testing.assert_close(batched, single, atol=ATOL, rtol=0)
    pipe = GenPerceptPipeline(tiny_vae, tiny_unet, "depth")
    np.testing.assert_allclose(pipe(images, processing_resolution=0, batch_size=2).prediction,
                               pipe(images, processing_resolution=0, batch_size=1).prediction, atol=ATOL, rtol=0)


# -- every pipeline, one output shape ------------------------------------------------------------------------


def test_every_pipeline_gives_the_same_output_shape(tiny_unet, tiny_vae, images):
    acp = schedule.alphas_cumprod(0.00085, 0.012)
    stochastic_unet = models.expand_conv_in(copy.deepcopy(tiny_unet))  # input concat(z_t, z_x): 8 channels
    torch.manual_seed(0)
    head = heads.DPTHead.for_unet(tiny_unet, features=16).eval()
    runs = {  # name: (pipeline, ensemble_size, num_inference_steps)
        "stochastic, ensemble 2": (GenPerceptPipeline(tiny_vae, stochastic_unet, "depth", formulation="stochastic",
                                                      alphas_cumprod=acp), 2, 2),
        "stochastic, no ensemble": (GenPerceptPipeline(tiny_vae, stochastic_unet, "depth",
                                                       formulation="stochastic", alphas_cumprod=acp), 1, 2),
        "deterministic multi-step": (GenPerceptPipeline(tiny_vae, tiny_unet, "depth", formulation="deterministic",
                                                        alphas_cumprod=acp), 1, 2),
        "one-step": (GenPerceptPipeline(tiny_vae, tiny_unet, "depth"), 1, 1),
        "one-step + DPT head": (GenPerceptPipeline(tiny_vae, tiny_unet, "depth", head=head), 1, 1),
    }
    shapes = {}
    for name, (pipe, ensemble, steps) in runs.items():
        out = pipe(images, processing_resolution=0, ensemble_size=ensemble, num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(0)).prediction
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, name
        shapes[name] = out.shape
    assert set(shapes.values()) == {(2, RES, RES)}, shapes


# -- what this machine lacks: warn and fall back -------------------------------------------------------------


@needs_cpu_only
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_on_cpu_warns_and_runs_float32(tiny_unet, tiny_vae, images, precision):
    ref = one_step(tiny_unet, tiny_vae, images)
    with pytest.warns(UserWarning, match="requested on cpu: using torch.float32"):
        out = one_step(tiny_unet, tiny_vae, images, autocast=precision)
    assert torch.equal(out, ref)


@needs_cpu_only
def test_pipeline_asked_for_cuda_and_bf16_warns_and_falls_back(tiny_unet, tiny_vae, images):
    pipe = GenPerceptPipeline(tiny_vae, tiny_unet, "depth")
    ref = pipe(images, processing_resolution=0).prediction
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipe(images, processing_resolution=0, device="cuda", dtype="bf16", autocast="bf16").prediction
    messages = " | ".join(str(w.message) for w in caught)
    assert "CUDA is not available: using cpu" in messages and "using torch.float32" in messages
    assert pipe.device.type == "cpu" and pipe.dtype == torch.float32
    np.testing.assert_array_equal(out, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast runs on CUDA only")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_on_cuda_within_half_precision_tolerance(tiny_unet, tiny_vae, images, precision):
    unet, vae = copy.deepcopy(tiny_unet).cuda(), copy.deepcopy(tiny_vae).cuda()
    ref = one_step(unet, vae, images.cuda())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a GPU without it falls back to fp16 with a warning
        out = one_step(unet, vae, images.cuda(), autocast=precision)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)
