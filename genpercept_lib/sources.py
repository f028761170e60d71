"""Where fine-tuning batches come from.

* toy world (``LatentSource``): the training pool (90 % toy Hypersim / 10 % toy Virtual KITTI, supplementary
  section 7) is rendered once, its images and the task's label images (and their left-right mirrors) are
  encoded once with the frozen VAE, and batches are drawn from those latents, each sample mirrored with
  probability ``lr_flip_p`` (0.5, the authors' ``augmentation.lr_flip_p``);
* real data (``PixelSource``, paper profile): RGB and label images are read, resized and flipped per sample
  (``stream.py``) and the loss encodes them on the accelerator.

The task (``tasks/``) says which label a sample carries and how it becomes a VAE image.
"""

from __future__ import annotations

import numpy as np
import torch

from . import losses, models, stream, tasks
from .data import pool
from .profiles import Profile
from .spec import FinetuneSpec


def training_mix(spec: FinetuneSpec) -> dict[str, float]:
    """Toy world: the task's training domains (``Task.toy_mix``), clean or real-like labels."""
    return tasks.get(spec.task).toy_mix(spec.labels)


def training_pool(cfg: Profile, spec: FinetuneSpec) -> dict[str, np.ndarray]:
    """Toy world: the rendered training scenes of ``spec`` (the first ``fraction`` of the pool; a task's named
    subset, e.g. only scenes whose foreground object is a person, when ``spec.train_subset`` says so)."""
    task = tasks.get(spec.task)
    data = pool.render_pool(training_mix(spec), cfg.n_train, task.toy_size(cfg), split="train", seed=cfg.seed,
                            keys=task.pool_keys, subject=task.subject_framing)
    n = max(cfg.batch_size, int(round(cfg.n_train * spec.fraction)))
    keep = np.arange(len(data["rgb"]))[:n]
    if spec.train_subset != "all":
        keep = keep[task.train_subsets[spec.train_subset](data)[:n]]
        if len(keep) < cfg.batch_size:
            raise ValueError(f"train_subset={spec.train_subset!r}: only {len(keep)} of {n} training scenes "
                             f"qualify; expected at least a batch ({cfg.batch_size})")
    return {k: v[keep] for k, v in data.items()}


def training_latents(cfg: Profile, spec: FinetuneSpec, vae) -> dict[str, torch.Tensor]:
    """Toy world: ``encode_training_set``, once per process for a profile, training set and VAE."""
    key = (repr(cfg), spec.task, spec.fraction, spec.labels, spec.train_subset)
    return models.encoded_once(key, vae, lambda: encode_training_set(cfg, spec, vae))


def with_mirrored(task, label: torch.Tensor, valid: torch.Tensor | None):
    """Labels [N, ...] and masks [N, H, W] of the scenes, followed by those of their left-right mirrors (``Task.flip``
    mirrors the label: normals' x turns round): [2N, ...]. Index ``i + N`` is scene ``i`` mirrored."""
    return torch.cat([label, task.flip(label)]), None if valid is None else torch.cat([valid, valid.flip(-1)])


@torch.no_grad()
def encode_training_set(cfg: Profile, spec: FinetuneSpec, vae) -> dict[str, torch.Tensor]:
    """Toy world: z_x, z_y and masks of the training scenes, encoded with the frozen VAE. With
    ``cfg.lr_flip_p > 0`` the left-right mirrored scenes (``Task.flip`` mirrors the label) are encoded too and
    follow the originals: index ``i + n`` is scene ``i`` mirrored (``n`` the number of scenes)."""
    task = tasks.get(spec.task)
    data = training_pool(cfg, spec)
    valid = torch.from_numpy(data["valid"]) if "valid" in data else None
    return encode_samples(task, vae, torch.from_numpy(data["rgb"]), torch.from_numpy(data[task.label_key]), valid,
                          cfg.lr_flip_p)


@torch.no_grad()
def encode_samples(task, vae, rgb: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None,
                   flip_p: float) -> dict[str, torch.Tensor]:
    """Images [N, 3, H, W] in [0, 1], labels [N, (C,) H, W] and masks [N, H, W] -> what ``LatentSource`` draws
    from: z_x, z_y, latent masks, label images (the left-right mirrors follow the originals when ``flip_p > 0``).
    The toy world's training pool and a folder of your own (``userdata.py``) are encoded by this one function."""
    rgb = rgb.float() * 2 - 1  # [N, 3, H, W]
    if flip_p > 0:
        rgb = torch.cat([rgb, rgb.flip(-1)])  # [2N, 3, H, W]
        label, valid = with_mirrored(task, label, valid)  # [2N, ...]
    label_img, valid = task.label_to_image(label, valid)  # [N, 3, H, W], [N, H, W] (2N with mirrors)
    factor = models.vae_scale_factor(vae)
    z_x, z_y = models.encode_batched(vae, rgb), models.encode_batched(vae, label_img)  # [N, 4, h, w] each
    return {"z_x": z_x, "z_y": z_y, "mask": losses.latent_valid_mask(valid, factor),
            "label_img": label_img, "valid": valid, "flip_p": flip_p}


class LatentSource:
    """Toy world: batches drawn from latents encoded once (``training_latents``); each sample is the mirrored
    scene with probability ``flip_p`` (the authors' ``augmentation.lr_flip_p``, a coin per sample)."""

    KEYS = ("z_x", "z_y", "mask", "label_img", "valid")

    def __init__(self, data: dict):
        self.data, self.flip_p = data, float(data.get("flip_p", 0.0))
        self.n = len(data["z_x"]) // 2 if self.flip_p > 0 else len(data["z_x"])

    def batch(self, generator: torch.Generator, size: int) -> dict:
        idx = torch.randint(0, self.n, (size,), generator=generator)  # [B]
        if self.flip_p > 0:
            idx = idx + self.n * (torch.rand(size, generator=generator) < self.flip_p).long()  # [B] mirrored: + n
        return {k: self.data[k][idx] for k in self.KEYS}

    def latent_shape(self, size: int) -> tuple[int, ...]:
        return (size, *self.data["z_y"].shape[1:])


class PixelSource:
    """Real data (paper profile): RGB and label images read and resized per step; the loss encodes them."""

    def __init__(self, real: stream.RealStream, vae):
        self.real, self.task = real, real.task
        factor = models.vae_scale_factor(vae)
        self.latent = (vae.config.latent_channels, real.size[0] // factor, real.size[1] // factor)

    def batch(self, generator: torch.Generator, size: int) -> dict:
        b = self.real.batch(generator, size)
        label_img, valid = self.task.label_to_image(b["label"], b["valid"])
        return {"rgb": b["rgb"] * 2 - 1, "label_img": label_img, "valid": valid}  # [B, 3, H, W] x2, [B, H, W]

    def latent_shape(self, size: int) -> tuple[int, ...]:
        return (size, *self.latent)


def real_training_mix(cfg: Profile, spec: FinetuneSpec) -> dict[str, float]:
    """Reader name -> weight. Clean (synthetic) labels: the task's mix (depth: the profile's 90% Hypersim /
    10% VKITTI; normals: Hypersim alone). Real labels (Fig. 3): Taskonomy + Cityscapes, 9 : 1."""
    task = tasks.get(spec.task)
    if spec.labels == "reallike":
        if task.name != "depth":
            raise NotImplementedError(f"labels='reallike' with task={task.name!r}: the real-label sets are read "
                                      "for depth only (Taskonomy depth_zbuffer, Cityscapes disparity)")
        return dict(cfg.real.real_label_mix)
    if task.name == "depth":
        return dict(cfg.real.train_mix or task.real_train_mix)
    if not task.real_train_mix:
        raise NotImplementedError(f"task {task.name!r} has no real training set in the paper profile")
    return dict(task.real_train_mix)


class Lazy:
    """An object built on first attribute access."""

    def __init__(self, build):
        self._build, self._obj = build, None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._build()
        return getattr(self._obj, name)


def training_source(cfg: Profile, spec: FinetuneSpec, vae):
    """Where fine-tuning batches come from: encoded toy latents, or real images streamed from disk."""
    if cfg.source == "toyworld":
        return LatentSource(training_latents(cfg, spec, vae))
    if cfg.source != "real":
        raise ValueError(f"profile {cfg.name!r}: source={cfg.source!r}, expected toyworld or real")
    return PixelSource(real_stream(cfg, spec), vae)


def real_stream(cfg: Profile, spec: FinetuneSpec) -> stream.RealStream:
    """Paper profile: the training stream of ``spec`` (mix, training resolution, fraction, seed, flips); the
    trainer and the image-blind reference (``experiment.training_labels``) both draw from it."""
    size = tuple(cfg.real.train_resolution or (cfg.image_size, cfg.image_size))
    return stream.RealStream(real_training_mix(cfg, spec), spec.task, size, spec.fraction, seed=cfg.seed,
                             roots=cfg.real.roots, flip_p=cfg.lr_flip_p)
