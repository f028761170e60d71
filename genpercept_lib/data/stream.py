"""Real-data training batches and evaluation inputs for the ``paper`` profile (supplementary section 7).

Training (Marigold's recipe, which GenPercept follows): each sample comes from Hypersim with probability
0.9 and from Virtual KITTI 2 with probability 0.1, is flipped left-right with probability 0.5 and resized
to 480 x 640 (RGB bilinear with antialiasing; depth, normals and the valid mask nearest-neighbour so no
label is invented between a wall and the sky). Labels become 3-channel VAE inputs with ``labels.py``
(depth: per-image 2%/98% quantiles to [-1, 1]); the frozen VAE encodes them on the accelerator inside the
loss (``finetune.make_loss``), so nothing is precomputed and no latent cache is needed.

``RealStream.batch(index, size)`` is a pure function of ``index`` (one seeded generator per index), as the
training loop requires: a resumed run, or a run split over several GPUs, reads exactly the samples an
uninterrupted single-process run would. Smaller training sets (Table 2: 1/2 ... 1/16) are nested prefixes of
one seeded permutation of each dataset, so 1/16 is a subset of 1/8.

Evaluation inputs are processed like released checkpoints are (``pipeline.processing_size`` and friends).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import pipeline
from . import readers

# which split of each reader trains (the others evaluate)
TRAIN_SPLITS = {"hypersim": "train", "hypersim_marigold": "train", "vkitti": "all",
                "taskonomy": "all", "cityscapes": "train_all"}  # the last two: real labels (Fig. 3)
TASKS = ("depth", "normal")  # the label key of each task is its name


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, C, H, W] (any dtype) -> [B, C, h, w] nearest-exact: labels are never interpolated."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)


def training_sample(item: dict, task: str, size: tuple[int, int], flip: bool) -> dict:
    """One reader item -> {rgb [3, h, w] in [0, 1], label [C, h, w], valid [h, w]} at ``size``, maybe flipped."""
    if task not in item:
        raise readers.DatasetError(f"{item.get('path', '?')}: no {task} label; the {task} task needs one")
    rgb = torch.from_numpy(item["rgb"])[None]                                   # [1, 3, H, W]
    label = torch.from_numpy(np.asarray(item[task], np.float32))                 # [H, W] or [3, H, W]
    label = label[None, None] if label.ndim == 2 else label[None]               # [1, C, H, W]
    valid = torch.from_numpy(np.asarray(item["valid"], bool))[None, None]       # [1, 1, H, W]
    rgb, label, valid = pipeline.resize(rgb, size), resize_nearest(label, size), resize_nearest(valid, size)
    if flip:
        rgb, label, valid = rgb.flip(-1), label.flip(-1), valid.flip(-1)
        if task == "normal":
            label[:, 0] = -label[:, 0]  # x points right: a mirrored scene's normals mirror too
    return {"rgb": rgb[0].clamp(0, 1), "label": label[0], "valid": valid[0, 0]}


class RealStream:
    """Seeded training samples from a weighted mix of real datasets (paper profile).

    mix: reader name -> probability, e.g. {"hypersim": 0.9, "vkitti": 0.1}. fraction: the share of each
    dataset kept (a prefix of a seeded permutation). roots: optional reader name -> folder (tests).
    """

    def __init__(self, mix: dict[str, float], task: str, size: tuple[int, int], fraction: float = 1.0,
                 seed: int = 0, roots: dict | None = None):
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
        self.task, self.size, self.seed = task, tuple(size), seed
        self.names = sorted(mix)
        weights = torch.tensor([float(mix[n]) for n in self.names], dtype=torch.float64)
        if not len(self.names) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"training mix {mix!r}: expected non-negative weights with a positive sum")
        self.weights = weights / weights.sum()
        self.datasets, self.indices = {}, {}
        for k, name in enumerate(self.names):
            if name not in TRAIN_SPLITS:
                raise ValueError(f"training mix names {name!r}: expected one of {', '.join(TRAIN_SPLITS)}")
            ds = readers.open_dataset(name, root=(roots or {}).get(name), split=TRAIN_SPLITS[name])
            order = np.random.default_rng(seed + 1009 * k).permutation(len(ds))
            self.datasets[name] = ds
            self.indices[name] = order[: max(1, int(round(len(ds) * fraction)))]

    def __len__(self) -> int:
        return sum(len(v) for v in self.indices.values())

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} {float(w):.0%} of {len(self.indices[n])}" for n, w in zip(self.names, self.weights))
        return f"RealStream({self.task}, {self.size[0]}x{self.size[1]}: {parts})"

    def sample(self, generator: torch.Generator) -> dict:
        """One sample: dataset by the mix weights, then a random image of its subset, then a coin for the flip."""
        which = self.names[int(torch.multinomial(self.weights, 1, generator=generator))]
        pool = self.indices[which]
        i = int(pool[int(torch.randint(0, len(pool), (1,), generator=generator))])
        flip = bool(torch.rand((), generator=generator) < 0.5)
        return training_sample(self.datasets[which][i], self.task, self.size, flip)

    def batch(self, generator: torch.Generator, size: int) -> dict:
        """``size`` samples stacked: rgb [B, 3, h, w] in [0, 1], label [B, C, h, w], valid [B, h, w]."""
        samples = [self.sample(generator) for _ in range(size)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
