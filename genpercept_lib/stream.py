"""Real-data training batches and evaluation inputs for the ``paper`` profile (supplementary section 7).

Training (Marigold's recipe, which GenPercept follows): each sample comes from Hypersim with probability
0.9 and from Virtual KITTI 2 with probability 0.1, is flipped left-right with probability 0.5 (the profile's
``lr_flip_p``, the authors' ``augmentation.lr_flip_p``) and resized
to 480 x 640 (RGB bilinear with antialiasing; labels as the task says, ``Task.label_resize``: depth,
normals and the valid mask nearest-neighbour so no label is invented between a wall and the sky). The task
turns labels into 3-channel VAE inputs (``Task.label_to_image``; depth: per-image 2%/98% quantiles to
[-1, 1]); the frozen VAE encodes them on the accelerator inside the loss (``finetune.make_loss``), so nothing
is precomputed and no latent cache is needed.

``RealStream.batch(generator, size)`` is a pure function of the generator's seed (the training loop seeds one
generator per micro-batch index), as the training loop requires: a resumed run, or a run split over several
GPUs, reads exactly the samples an uninterrupted single-process run would. Smaller training sets (Table 2:
1/2 ... 1/16) are nested prefixes of one seeded permutation of each dataset, so 1/16 is a subset of 1/8.
"""

from __future__ import annotations

import numpy as np
import torch

from . import tasks as task_registry
from .data import readers
from .images import resize

# which split of each reader trains (the others evaluate)
TRAIN_SPLITS = {"hypersim": "train", "hypersim_marigold": "train", "vkitti": "all",
                "taskonomy": "all", "cityscapes": "train_all",  # real labels (Fig. 3)
                "dis5k": "DIS-TR", "p3m10k": "train", "coco": "train2017"}


def training_sample(item: dict, task, size: tuple[int, int], flip: bool) -> dict:
    """One reader item -> {rgb [3, h, w] in [0, 1], label (the item's layout: [h, w] or [C, h, w]), valid [h, w]}
    at ``size``, maybe mirrored (the task says how a label resizes and mirrors)."""
    task = task_registry.get(task)
    key = task.label_key
    if key not in item:
        raise readers.DatasetError(f"{item.get('path', '?')}: no {key} label; the {task.name} task needs one")
    rgb = torch.from_numpy(item["rgb"])[None]                                   # [1, 3, H, W]
    raw = np.asarray(item[key], np.float32)
    label = torch.from_numpy(raw)                                               # [H, W] or [C, H, W]
    label = label[None, None] if label.ndim == 2 else label[None]               # [1, C, H, W]
    valid = item.get("valid", np.ones(raw.shape[-2:], bool))
    valid = torch.from_numpy(np.asarray(valid, bool))[None, None]               # [1, 1, H, W]
    rgb, label = resize(rgb, size), resize(label, size, task.label_resize)
    valid = resize(valid, size, "nearest")
    if flip:
        rgb, label, valid = rgb.flip(-1), task.flip(label), valid.flip(-1)
    label = label[0, 0] if raw.ndim == 2 else label[0]
    return {"rgb": rgb[0].clamp(0, 1), "label": label, "valid": valid[0, 0]}


class RealStream:
    """Seeded training samples from a weighted mix of real datasets (paper profile).

    mix: reader name -> probability, e.g. {"hypersim": 0.9, "vkitti": 0.1}. fraction: the share of each
    dataset kept (a prefix of a seeded permutation). roots: optional reader name -> folder (tests).
    """

    def __init__(self, mix: dict[str, float], task, size: tuple[int, int], fraction: float = 1.0,
                 seed: int = 0, roots: dict | None = None, flip_p: float = 0.5):
        self.task, self.size, self.seed, self.flip_p = task_registry.get(task), tuple(size), seed, flip_p
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
        return f"RealStream({self.task.name}, {self.size[0]}x{self.size[1]}: {parts})"

    def sample(self, generator: torch.Generator) -> dict:
        """One sample: dataset by the mix weights, then a random image of its subset, then a coin for the flip."""
        which = self.names[int(torch.multinomial(self.weights, 1, generator=generator))]
        pool = self.indices[which]
        i = int(pool[int(torch.randint(0, len(pool), (1,), generator=generator))])
        flip = bool(torch.rand((), generator=generator) < self.flip_p)
        return training_sample(self.datasets[which][i], self.task, self.size, flip)

    def batch(self, generator: torch.Generator, size: int) -> dict:
        """``size`` samples stacked: rgb [B, 3, h, w] in [0, 1], label [B, (C,) h, w], valid [B, h, w]."""
        samples = [self.sample(generator) for _ in range(size)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
