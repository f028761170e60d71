"""The pose model: the one-step U-Net read as a feature pyramid, and ViTPose's keypoint head on one of its decoder
levels (``feature_level``: 1/16 of the crop for SD2.1 as ViTPose's ViT; 1/8 for the toy crops), trained on mmpose's
``JointsMSELoss`` against MSRA heatmaps at 1/4 of the crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..formulations import ONE_STEP_TIMESTEP
from ..heads import unet_decoder_features
from ..models import encode, vae_scale_factor
from .settings import HEAD_CHANNELS, crop_size, feature_stride


class KeypointHead(nn.Module):
    """ViTPose's "classic" decoder: two x2 deconvolutions then a 1x1 conv to one heatmap per joint.

    mmpose ``TopdownHeatmapSimpleHead`` (``mmpose/models/heads/topdown_heatmap_simple_head.py`` in
    ``ViTAE-Transformer/ViTPose``) as configured by ``ViTPose_*_coco_256x192.py``: ``num_deconv_layers=2``,
    ``num_deconv_filters=(256, 256)``, ``num_deconv_kernels=(4, 4)``, ``final_conv_kernel=1``. Each
    deconvolution is ConvTranspose2d(kernel 4, stride 2, padding 1, output_padding 0, no bias) + BatchNorm2d
    + ReLU, so x [B, C, h, w] -> heatmaps [B, K, 4h, 4w]; the final conv has a bias. Module names
    (``deconv_layers.{0,1,3,4}``, ``final_layer``) match mmpose's, so a ViTPose ``keypoint_head.*`` state
    dict loads after stripping that prefix. Init as mmpose ``init_weights``: deconv and final conv weights
    ~ N(0, 0.001^2), final bias 0, BatchNorm weight 1 and bias 0.
    """

    def __init__(self, in_channels: int, num_joints: int = 17, deconv_channels: Sequence[int] = (256, 256)):
        super().__init__()
        if in_channels < 1 or num_joints < 1 or not deconv_channels or min(deconv_channels) < 1:
            raise ValueError(f"KeypointHead needs positive sizes, got in_channels={in_channels}, "
                             f"num_joints={num_joints}, deconv_channels={tuple(deconv_channels)}")
        self.in_channels = int(in_channels)
        self.num_joints = int(num_joints)
        layers: list[nn.Module] = []
        channels = self.in_channels
        for planes in deconv_channels:
            layers += [
                nn.ConvTranspose2d(channels, planes, kernel_size=4, stride=2, padding=1, output_padding=0,
                                   bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
            ]
            channels = planes
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, self.num_joints, kernel_size=1)
        self.init_weights()

    def init_weights(self) -> None:
        """mmpose ``normal_init(std=0.001)`` for the (de)convolutions, ``constant_init(1)`` for BatchNorm."""
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, mean=0.0, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, h, w] (e.g. the ViT patch grid) -> heatmaps [B, K, 4h, 4w]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"KeypointHead expects [B, {self.in_channels}, h, w], got {tuple(x.shape)}")
        x = self.deconv_layers(x)  # [B, D, 4h, 4w]
        return self.final_layer(x)  # [B, K, 4h, 4w]


class PoseModel(nn.Module):
    """The one-step U-Net read as a feature pyramid + the ViTPose keypoint head: crop latent -> heatmaps."""

    def __init__(self, unet, head: nn.Module, level: int):
        super().__init__()
        self.unet, self.head, self.level = unet, head, level

    def forward(self, z_x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = torch.full((z_x.shape[0],), ONE_STEP_TIMESTEP, dtype=torch.long, device=z_x.device)
        features = unet_decoder_features(self.unet, z_x, t, cond.expand(z_x.shape[0], -1, -1))  # coarse -> fine
        return self.head(features[self.level])  # [B, 17, h, w]


def feature_level(unet, latent_hw: tuple[int, int], cond_dim: int, divide: int = 2) -> tuple[int, int]:
    """(index, channels) of the up-block output at 1/``divide`` of the latent resolution (2: 1/16 of the crop,
    ViTPose's; 1: the latent's own, 1/8); at the latent resolution the finest such block (the last, whose skip
    connections come from the first down block)."""
    with torch.no_grad():
        feats = unet_decoder_features(unet, torch.zeros(1, unet.config.in_channels, *latent_hw), torch.tensor([1]),
                                      torch.zeros(1, 1, cond_dim))
    want = (max(1, latent_hw[0] // divide), max(1, latent_hw[1] // divide))
    hits = [i for i, f in enumerate(feats) if tuple(f.shape[-2:]) == want]
    if hits:
        i = hits[-1] if divide == 1 else hits[0]
        return i, int(feats[i].shape[1])
    return 0, int(feats[0].shape[1])  # no such level (tiny latents): the coarsest


def build(unet, cfg, spec, vae, cond_dim: int) -> PoseModel:
    """``unet`` with a keypoint head on the level ``feature_stride(cfg)`` names (two deconvolutions for 1/16
    features, one for 1/8), its weights drawn from ``spec.seed`` without touching the global random state."""
    w, h = crop_size(cfg)
    f = vae_scale_factor(vae)
    stride = feature_stride(cfg)
    level, channels = feature_level(unet, (h // f, w // f), cond_dim, divide=stride // f)
    deconvs = HEAD_CHANNELS.get(cfg.model, HEAD_CHANNELS["sd21"])[:stride // 8]  # x2 each, to heatmaps at 1/4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed + 7)
        head = KeypointHead(channels, deconv_channels=deconvs)
    return PoseModel(unet, head, level)


def heatmap_loss(model: PoseModel, batch: dict, cond: torch.Tensor, vae) -> torch.Tensor:
    """mmpose ``JointsMSELoss(use_target_weight=True)``: 0.5 * mean over joints of MSE(w * pred, w * target).
    Real crops arrive as pixels and are encoded here, on the accelerator, by the frozen VAE."""
    if "z_x" not in batch:
        with torch.no_grad():
            batch = {**batch, "z_x": encode(vae, batch["crop"] * 2 - 1)}  # [B, 4, h/8, w/8]
    pred = model(batch["z_x"], cond)  # [B, K, h, w]
    w = batch["weight"][..., None, None]  # [B, K, 1, 1]
    return 0.5 * ((pred * w - batch["target"] * w) ** 2).mean()
