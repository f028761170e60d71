"""The DPT head that GenPercept puts on the U-Net decoder instead of the VAE decoder.

With a customized head the U-Net is read as a feature pyramid: the outputs of its up blocks
(``conv_norm_out``/``conv_out`` never run) go through a DPT neck and head (Ranftl et al., 2021) to a
one-channel map, and the VAE decoder is not needed at all (supplementary section 3: -27% runtime).

The layout follows the official release (``aim-uofa/GenPercept``, ``genpercept/models/dpt_head.py``,
class ``DPTNeckHeadForUnetAfterUpsampleIdentity`` with ``hf_configs/dpt-sd2.1-unet-after-upsample-general``),
written here in our own words with the same parameter names, so ``state_dict()`` loads the released
``dpt_head_identity/model.safetensors`` unchanged (36 tensors, 18,474,753 parameters for SD2.1):

* the up-block outputs are reversed, fine to coarse. For SD2.1 at latent size h x w they are
  [320 @ h, 640 @ h, 1280 @ h/2, 1280 @ h/4] = ``unet.config.block_out_channels`` (``in_channels``);
* ``feature_upsample_0``: nearest x2 upsampling then a 3x3 conv (with bias) on the finest one -> 2h;
* ``neck.convs.i``: 3x3 conv, no bias, ``in_channels[i]`` -> ``features`` (256);
* ``neck.fusion_stage.layers``: DPT feature fusion from coarse to fine. Layer 0 sees only the coarsest
  feature (so it has no ``residual_layer1``); layer i adds ``residual_layer1(feature)`` to the running
  map (the feature bilinearly resized to it when sizes differ), then ``residual_layer2``, a bilinear x2
  upsampling (align_corners=True) and a 1x1 ``projection`` with bias. Residual units are pre-activation:
  x + conv2(relu(conv1(relu(x)))), 3x3 convs without bias;
* ``head``: ``projection`` 3x3 conv + ReLU, then conv 256->128 (3x3), bilinear x2, conv 128->32 (3x3),
  ReLU, conv 32->1 (1x1) and no final activation ("identity"; the older ``dpt_head`` release ends in
  ReLU: ``final_activation="relu"``, same keys).

Output resolution: the fusion starts at h/4 and doubles four times (4h), the head doubles once more,
so the map is 8h x 8w = the input image size when h, w are multiples of the U-Net's downsampling
(8 for SD2.1, i.e. images in multiples of 64). Otherwise the U-Net rounds sizes up on the way down
and the output is slightly larger: pass ``output_size`` to resize it to the image. With any number of
up blocks N >= 2 the same holds (start at h / 2^(N-2), N doublings, one more in the head).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .cache import usual_modes

SD21_IN_CHANNELS = (320, 640, 1280, 1280)  # fine -> coarse, = SD2.1 block_out_channels
FEATURES = 256                              # config.fusion_hidden_size
HEAD_CHANNELS = 32                          # channels before the last 1x1 conv of the head
WEIGHTS_NAME = "model.safetensors"


class DPTHeadLoadError(ValueError):
    """A DPT head file that cannot be loaded (the message is one line)."""


class PreActResidualUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs without bias (HF ``DPTPreActResidualLayer``)."""

    def __init__(self, features: int):
        super().__init__()
        self.convolution1 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.convolution2 = nn.Conv2d(features, features, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convolution1(F.relu(x))  # [B, F, h, w]
        y = self.convolution2(F.relu(y))  # [B, F, h, w]
        return x + y


class FusionLayer(nn.Module):
    """Merge the running map with one more pyramid level, refine, upsample x2 (``DPTFeatureFusionLayer``)."""

    def __init__(self, features: int, takes_skip: bool = True):
        super().__init__()
        self.projection = nn.Conv2d(features, features, 1, bias=True)
        if takes_skip:
            self.residual_layer1 = PreActResidualUnit(features)
        self.residual_layer2 = PreActResidualUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if skip.shape[-2:] != x.shape[-2:]:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.residual_layer1(skip)  # [B, F, h, w]
        x = self.residual_layer2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # [B, F, 2h, 2w]
        return self.projection(x)


class FusionStage(nn.Module):
    """Fusion layers applied from the coarsest level to the finest; layer 0 takes no skip."""

    def __init__(self, n_levels: int, features: int):
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(features, takes_skip=i > 0) for i in range(n_levels))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        coarse_to_fine = list(features)[::-1]
        x = self.layers[0](coarse_to_fine[0])
        for layer, skip in zip(self.layers[1:], coarse_to_fine[1:]):
            x = layer(x, skip)
        return x  # the finest fused map, [B, F, H/2, W/2]


class Neck(nn.Module):
    """Per-level 3x3 convs to a common width, then the fusion stage (``DPTNeck`` without reassembly)."""

    def __init__(self, in_channels: Sequence[int], features: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in in_channels)
        self.fusion_stage = FusionStage(len(in_channels), features)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fusion_stage([conv(f) for conv, f in zip(self.convs, features)])


class UpsampleConv(nn.Module):
    """Nearest x2 upsampling then a 3x3 conv with bias (diffusers ``Upsample2D(use_conv=True)``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # [B, C, 2h, 2w]


class DepthHead(nn.Module):
    """``projection`` (3x3 + ReLU), then 3 convs narrowing to 1 channel around one bilinear x2.

    HF ``DPTDepthEstimationHead`` with ``add_projection``.
    """

    def __init__(self, features: int, final_activation: str = "identity"):
        super().__init__()
        if final_activation not in ("identity", "relu"):
            raise ValueError(f"final_activation must be 'identity' or 'relu', got {final_activation!r}")
        self.projection = nn.Conv2d(features, features, 3, padding=1)
        self.head = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(features // 2, HEAD_CHANNELS, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(HEAD_CHANNELS, 1, 1),
            nn.ReLU() if final_activation == "relu" else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.projection(x))  # [B, F, H/2, W/2]
        return self.head(x)  # [B, 1, H, W]


class DPTHead(nn.Module):
    """DPT neck + head on U-Net decoder features; built with no arguments it is the SD2.1 release layout.

    ``in_channels`` lists the feature widths fine -> coarse, i.e. the up-block outputs reversed
    (``unet.config.block_out_channels``). ``forward`` takes the features in that same order.
    """

    def __init__(self, in_channels: Sequence[int] = SD21_IN_CHANNELS, features: int = FEATURES,
                 final_activation: str = "identity"):
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"DPTHead needs at least 2 feature levels, got in_channels={tuple(in_channels)}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.features = features
        self.feature_upsample_0 = UpsampleConv(self.in_channels[0])
        self.neck = Neck(self.in_channels, features)
        self.head = DepthHead(features, final_activation)

    @classmethod
    def for_unet(cls, unet, features: int | None = None, final_activation: str = "identity") -> DPTHead:
        """A head matching ``unet``'s decoder: up block i outputs reversed(block_out_channels)[i] channels.

        ``features`` defaults to 256 capped at the widest U-Net feature (256 for SD2.1, 64 for tiny).
        """
        in_channels = tuple(unet.config.block_out_channels)
        features = features or min(FEATURES, max(in_channels))
        return cls(in_channels, features, final_activation)

    def forward(self, features: Sequence[torch.Tensor],
                output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """features: fine -> coarse (``unet_decoder_features(...)[::-1]``); returns [B, 1, 8h, 8w]."""
        self._check_features(features)
        # 1. upsample the finest level once more: [B, c0, h, w] -> [B, c0, 2h, 2w]
        pyramid = [self.feature_upsample_0(features[0]), *features[1:]]
        # 2. neck: widths to `features`, fuse coarse -> fine: [B, F, 4h, 4w]
        fused = self.neck(pyramid)
        # 3. head: [B, F, 4h, 4w] -> [B, 1, 8h, 8w]
        out = self.head(fused)
        if output_size is not None and tuple(out.shape[-2:]) != tuple(output_size):
            out = F.interpolate(out, size=tuple(output_size), mode="bilinear", align_corners=False)
        return out

    def _check_features(self, features: Sequence[torch.Tensor]) -> None:
        got = tuple(f.shape[1] for f in features)
        if got != self.in_channels:
            reversed_ = got[::-1] == self.in_channels
            hint = " (reversed? pass unet_decoder_features(...)[::-1])" if reversed_ else ""
            raise ValueError(
                f"DPTHead expects feature channels {self.in_channels} (fine -> coarse), got {got}{hint}")


class _DecoderDone(Exception):
    """Raised by the hook on the last up block to stop the U-Net before conv_norm_out/conv_out."""


def unet_decoder_features(unet, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                          **unet_kwargs) -> list[torch.Tensor]:
    """The outputs of ``unet.up_blocks`` in block order (coarse -> fine); conv_norm_out/conv_out never run.

    Forward hooks collect each up block's output; the hook on the last block ends the forward pass, so
    the U-Net's output layers cost nothing (this is the "U-Net without conv_out" of the DPT pipeline).
    SD2.1 at latent h x w: [1280 @ h/4, 1280 @ h/2, 640 @ h, 320 @ h]. Reverse for ``DPTHead``.
    """
    features: list[torch.Tensor] = []
    last = len(unet.up_blocks) - 1

    def grab(module, args, output, index):
        features.append(output)
        if index == last:
            raise _DecoderDone

    handles = [blk.register_forward_hook(functools.partial(grab, index=i))
               for i, blk in enumerate(unet.up_blocks)]
    try:
        unet(sample, timestep, encoder_hidden_states, **unet_kwargs)
    except _DecoderDone:
        pass
    finally:
        for h in handles:
            h.remove()
    return features


def predict_with_head(unet, head: DPTHead, sample: torch.Tensor, timestep,
                      encoder_hidden_states: torch.Tensor, output_size: tuple[int, int] | None = None,
                      **unet_kwargs) -> torch.Tensor:
    """One-step inference with the DPT head: U-Net decoder features -> head, [B, 1, 8h, 8w]."""
    features = unet_decoder_features(unet, sample, timestep, encoder_hidden_states, **unet_kwargs)
    return head(features[::-1], output_size=output_size)


def _weights_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    file = path / WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise DPTHeadLoadError(f"{file}: no such file; expected the file or a folder with {WEIGHTS_NAME}")
    return file


def _in_channels_from(state: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], int] | None:
    """(in_channels, features) read from the ``neck.convs.i.weight`` shapes, or None if there are none."""
    convs = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[:2] == ["neck", "convs"] and parts[3] == "weight" and parts[2].isdigit():
            convs[int(parts[2])] = value.shape  # [features, c_i, 3, 3]
    if not convs or sorted(convs) != list(range(len(convs))):
        return None
    return tuple(convs[i][1] for i in range(len(convs))), convs[0][0]


def load_dpt_head(path: str | os.PathLike, final_activation: str = "identity", **module_kwargs) -> DPTHead:
    """A DPTHead from a safetensors file (or a folder holding ``model.safetensors``), strictly checked.

    The layout (feature widths, ``features``) is read from the tensor shapes, so the SD2.1 release and
    heads trained here on the tiny U-Net load alike. Never unpickles: safetensors only.
    """
    file = _weights_file(path)
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises several types for a broken header
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DPTHeadLoadError(f"{file}: not a readable safetensors file ({reason})") from None
    layout = _in_channels_from(state)
    in_channels, features = layout if layout else (SD21_IN_CHANNELS, FEATURES)
    head = DPTHead(in_channels, features, final_activation, **module_kwargs)
    expected, found = set(head.state_dict()), set(state)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        example = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise DPTHeadLoadError(
            f"{file}: not a DPT head state dict: {len(missing)} missing, {len(unexpected)} unexpected keys "
            f"(e.g. {example})"
        )
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise DPTHeadLoadError(f"{file}: tensor shapes do not match the DPT head layout ({first})") from None
    return head


def save_dpt_head(head: DPTHead, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` (the release layout) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / WEIGHTS_NAME
    tmp = file.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(tmp))
    tmp.replace(file)
    usual_modes(file)  # safetensors writes 0600; a saved head gets the mode other outputs get (0644 usually)
    return file
