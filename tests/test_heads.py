"""DPT head: release-compatible state dict (keys, 18,474,753 parameters), I/O, shapes, and numerics
against HuggingFace transformers' DPT modules that the official head is built from."""

from __future__ import annotations

import pytest
import torch

from genpercept_lib.heads import (
    DPTHead,
    DPTHeadLoadError,
    load_dpt_head,
    predict_with_head,
    save_dpt_head,
    unet_decoder_features,
)
from genpercept_lib.models import build_unet, count_parameters, empty_text_embedding

RELEASE_PARAMETERS = 18_474_753
# tiny_unet: the session fixture of conftest.py (build_unet("tiny", seed=0).eval())


def release_keys() -> set[str]:
    """The 36 tensor names of the official dpt_head_identity/model.safetensors."""
    keys = {"feature_upsample_0.conv.weight", "feature_upsample_0.conv.bias"}
    keys |= {f"neck.convs.{i}.weight" for i in range(4)}
    for i in range(4):
        layer = f"neck.fusion_stage.layers.{i}"
        keys |= {f"{layer}.projection.weight", f"{layer}.projection.bias"}
        keys |= {f"{layer}.residual_layer2.convolution{j}.weight" for j in (1, 2)}
        if i > 0:
            keys |= {f"{layer}.residual_layer1.convolution{j}.weight" for j in (1, 2)}
    keys |= {"head.projection.weight", "head.projection.bias"}
    keys |= {f"head.head.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    return keys


def tiny_features(unet, batch=2, size=16):
    sample = torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return unet_decoder_features(unet, sample, 10, empty_text_embedding(unet, batch))


def test_release_layout_keys_and_parameter_count():
    with torch.device("meta"):
        head = DPTHead()
    state = head.state_dict()
    assert len(state) == 36
    assert set(state) == release_keys()
    assert count_parameters(head) == RELEASE_PARAMETERS


def test_release_layout_shapes():
    with torch.device("meta"):
        state = DPTHead().state_dict()
    assert state["feature_upsample_0.conv.weight"].shape == (320, 320, 3, 3)
    assert [state[f"neck.convs.{i}.weight"].shape[1] for i in range(4)] == [320, 640, 1280, 1280]
    assert state["neck.fusion_stage.layers.3.projection.weight"].shape == (256, 256, 1, 1)
    assert state["head.projection.weight"].shape == (256, 256, 3, 3)
    assert state["head.head.4.weight"].shape == (1, 32, 1, 1)


def test_sd21_output_is_image_resolution():
    """768x768 image -> latent 96 -> up-block features -> head output 768x768 (meta: shapes only)."""
    with torch.device("meta"):
        unet, head = build_unet("sd21"), DPTHead()
        sample = torch.empty(1, 4, 96, 96)
        text = torch.empty(1, 2, 1024)  # the unpadded empty prompt
    feats = unet_decoder_features(unet, sample, 999, text)
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(1280, 24, 24), (1280, 48, 48), (640, 96, 96), (320, 96, 96)]
    assert head(feats[::-1]).shape == (1, 1, 768, 768)


def test_decoder_features_skip_output_layers(tiny_unet):
    calls = []
    handle = tiny_unet.conv_out.register_forward_hook(lambda *a: calls.append(1))
    try:
        feats = tiny_features(tiny_unet)
    finally:
        handle.remove()
    assert calls == []
    assert len(feats) == len(tiny_unet.up_blocks)
    assert all(not blk._forward_hooks for blk in tiny_unet.up_blocks)  # hooks removed


def test_decoder_features_match_full_forward(tiny_unet):
    """The last feature through conv_norm_out/conv_act/conv_out is the U-Net's output."""
    sample = torch.randn(1, 4, 16, 16)
    text = empty_text_embedding(tiny_unet, 1)
    with torch.no_grad():
        feats = unet_decoder_features(tiny_unet, sample, 10, text)
        full = tiny_unet(sample, 10, text).sample
        last = tiny_unet.conv_out(tiny_unet.conv_act(tiny_unet.conv_norm_out(feats[-1])))
    torch.testing.assert_close(last, full)


def test_tiny_forward_shape(tiny_unet):
    head = DPTHead.for_unet(tiny_unet)
    assert head.in_channels == tuple(tiny_unet.config.block_out_channels) and head.features == 64
    head = DPTHead.for_unet(tiny_unet, features=16)
    feats = tiny_features(tiny_unet, batch=2, size=8)
    with torch.no_grad():
        out = head(feats[::-1])
        assert out.shape == (2, 1, 64, 64)  # latent 8 -> image 64
        assert torch.isfinite(out).all()
        assert head(feats[::-1], output_size=(60, 50)).shape == (2, 1, 60, 50)
        text = empty_text_embedding(tiny_unet)
        direct = predict_with_head(tiny_unet, head, torch.randn(1, 4, 8, 8), 10, text)
    assert direct.shape == (1, 1, 64, 64)


def test_wrong_feature_order_is_a_clear_error(tiny_unet):
    head = DPTHead.for_unet(tiny_unet)
    with pytest.raises(ValueError, match="reversed"):
        head(tiny_features(tiny_unet))


def test_state_dict_round_trip(tmp_path, tiny_unet):
    head = DPTHead.for_unet(tiny_unet, features=32).eval()
    file = save_dpt_head(head, tmp_path / "dpt_head_identity")
    loaded = load_dpt_head(file.parent).eval()  # the folder form
    assert loaded.in_channels == head.in_channels and loaded.features == 32
    for key, value in head.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    feats = tiny_features(tiny_unet, batch=1)[::-1]
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats), head(feats))
    assert load_dpt_head(file).in_channels == head.in_channels  # the file form


def test_bad_files_give_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(DPTHeadLoadError, match="no such file"):
        load_dpt_head(tmp_path / "missing")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DPTHeadLoadError, match="not a readable safetensors file"):
        load_dpt_head(garbage)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(DPTHeadLoadError, match=r"36 missing, 1 unexpected keys") as info:
        load_dpt_head(wrong)
    assert "\n" not in str(info.value)


def test_matches_transformers_dpt_modules(tiny_unet):
    """Same weights, same output as transformers' DPTNeck + DPTDepthEstimationHead (the official parts)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.dpt import modeling_dpt

    in_channels, features = (32, 64, 64), 256  # HF hard-codes 256 channels in head.projection
    config = transformers.DPTConfig(
        neck_hidden_sizes=list(in_channels), fusion_hidden_size=features, add_projection=True,
        head_in_index=-1,
        use_batch_norm_in_fusion_residual=False, use_bias_in_fusion_residual=False,
        reassemble_factors=[4, 2, 1], is_hybrid=False,
    )
    ours = DPTHead(in_channels, features, final_activation="relu").eval()
    neck, hf_head = modeling_dpt.DPTNeck(config).eval(), modeling_dpt.DPTDepthEstimationHead(config).eval()
    neck.reassemble_stage = None
    state = ours.state_dict()
    # HF's first fusion layer owns an unused residual_layer1: the only keys ours does not have
    missing, unexpected = neck.load_state_dict(
        {k[len("neck."):]: v for k, v in state.items() if k.startswith("neck.")}, strict=False)
    assert unexpected == [] and all("layers.0.residual_layer1" in k for k in missing)
    hf_head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})

    feats = tiny_features(tiny_unet, batch=1, size=8)[::-1]
    with torch.no_grad():
        pyramid = [ours.feature_upsample_0(feats[0]), *feats[1:]]
        expected = hf_head(neck(pyramid))  # [B, H, W]
        torch.testing.assert_close(ours(feats), expected[:, None])
