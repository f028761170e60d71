"""Pose training data: crops of the toy training people (and their mirror images and augmented copies), encoded
once with the frozen VAE; in the paper profile, COCO train2017's people read and cropped per batch."""

from __future__ import annotations

import numpy as np
import torch

from ..data import readers
from ..models import encode_batched, encoded_once
from .crops import augmented_crop, crop_joints, flip_crop, person_crops, targets
from .data import toy_scenes
from .settings import MIN_BOX_HEIGHT, MIN_KEYPOINTS, augment_copies, crop_size, pose_settings
from .task import POSE


def _person_boxes_ok(box, joints) -> bool:
    return (box[3] - box[1]) >= MIN_BOX_HEIGHT and int((joints[:, 2] > 0).sum()) >= MIN_KEYPOINTS


def training_data(cfg, spec, augment: bool = True) -> dict:
    """Toy world: crops of the training scenes' people and their mirror images, plus (``augment``)
    ``augment_copies(cfg)`` randomly shifted, scaled, rotated and flipped crops of each (``augmented_crop``)."""
    data = toy_scenes(cfg, POSE.toy_mix(spec.labels), cfg.n_train, "train", POSE.toy_size(cfg))
    keep = [p for p in range(len(data["boxes"])) if _person_boxes_ok(data["boxes"][p], data["keypoints"][p])]
    n = max(cfg.batch_size, int(round(len(keep) * spec.fraction)))
    sub = {"rgb": data["rgb"], "scene": data["scene"][keep][:n], "boxes": data["boxes"][keep][:n],
           "keypoints": data["keypoints"][keep][:n]}
    crops = person_crops(cfg, sub)
    flipped = [flip_crop(c, j) for c, j in zip(crops["crop"], crops["joints"])]
    crop = np.concatenate([crops["crop"], np.stack([f[0] for f in flipped])]) if flipped else crops["crop"]
    joints = np.concatenate([crops["joints"], np.stack([f[1] for f in flipped])]) if flipped else crops["joints"]
    copies = augment_copies(cfg) if augment else 0
    if not copies or not len(sub["boxes"]):
        return {"crop": crop, "joints": joints}
    rng, settings = np.random.default_rng(spec.seed + 5021), pose_settings(cfg).augment
    extra_crops, extra_joints = [], []
    for _ in range(copies):
        for p in range(len(sub["boxes"])):
            c, j = augmented_crop(sub["rgb"][sub["scene"][p]], sub["boxes"][p], sub["keypoints"][p],
                                  crop_size(cfg), rng, settings)
            if rng.random() < 0.5:
                c, j = flip_crop(c, j)
            extra_crops.append(c)
            extra_joints.append(j)
    return {"crop": np.concatenate([crop, np.stack(extra_crops)]).astype(np.float32),
            "joints": np.concatenate([joints, np.stack(extra_joints)]).astype(np.float32)}


def encode_training_set(cfg, spec, vae) -> dict:
    """Toy world: the training crops encoded with the frozen VAE, their heatmap targets and joint weights."""
    data = training_data(cfg, spec)
    target, weight = targets(data["joints"], crop_size(cfg))
    z_x = encode_batched(vae, torch.from_numpy(data["crop"]) * 2 - 1)  # [P, 4, h/8, w/8]
    return {"z_x": z_x, "target": torch.from_numpy(target), "weight": torch.from_numpy(weight)}


def training_source(cfg, spec, vae):
    """Where pose's training batches come from: toy crops encoded once per process (shared by the models that
    differ only in init), or COCO crops read per batch."""
    if cfg.source == "real":
        return CocoCrops(cfg, spec)
    key = (repr(cfg), POSE.name, spec.fraction, spec.labels, spec.seed)  # the jittered copies draw from the seed
    return HeatmapSource(encoded_once(key, vae, lambda: encode_training_set(cfg, spec, vae)))


class HeatmapSource:
    """Batches of (crop latent, target heatmaps, target weights) drawn from tensors encoded once."""

    KEYS = ("z_x", "target", "weight")

    def __init__(self, data: dict):
        self.data, self.n = data, len(data["z_x"])

    def batch(self, generator: torch.Generator, size: int) -> dict:
        idx = torch.randint(0, self.n, (size,), generator=generator)
        return {k: self.data[k][idx] for k in self.KEYS}

    def latent_shape(self, size: int):
        return (size, *self.data["z_x"].shape[1:])


class CocoCrops:
    """Paper profile: person crops of COCO train2017 read per sample (the supplementary's 15K training samples:
    the first ``PoseSettings.train_samples`` people with labelled keypoints of a seeded permutation), mmpose's flip with
    probability 0.5, MSRA targets; the loss encodes the crops."""

    def __init__(self, cfg, spec):
        root = cfg.real.roots.get("coco")
        self.ds = readers.open_listed("coco", None if root is None else str(root), "train2017")  # once per process
        self.cfg, self.size = cfg, crop_size(cfg)
        people = [(i, p) for i, image_id in enumerate(self.ds.image_ids)
                  for p, ann in enumerate(self.ds.annotations(image_id)) if ann.get("num_keypoints", 0) > 0]
        order = np.random.default_rng(spec.seed).permutation(len(people))
        n = pose_settings(cfg).train_samples
        self.people = [people[k] for k in order[: max(1, int(round(min(n, len(people)) * spec.fraction)))]]
        if not self.people:
            raise ValueError(f"{self.ds.annotation_file}: no person with labelled keypoints to train on")

    def batch(self, generator: torch.Generator, size: int) -> dict:
        crops, joints = [], []
        for _ in range(size):
            i, p = self.people[int(torch.randint(0, len(self.people), (1,), generator=generator))]
            item = self.ds[i]
            x, y, w, h = item["boxes"][p]
            data = {"rgb": [item["rgb"]], "scene": np.zeros(1, int), "boxes": np.array([[x, y, x + w, y + h]]),
                    "keypoints": item["keypoints"][p:p + 1]}
            c = person_crops(self.cfg, data)
            crop, joint = c["crop"][0], c["joints"][0]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop, joint = flip_crop(crop, joint)
            crops.append(crop)
            joints.append(joint)
        target, weight = targets(np.stack(joints), self.size)
        return {"crop": torch.from_numpy(np.stack(crops)), "target": torch.from_numpy(target),
                "weight": torch.from_numpy(weight)}

    def joints(self) -> np.ndarray:
        """The training people's joints in crop pixels [P, 17, 3], from the annotations (no image is read)."""
        out = []
        for i, p in self.people:
            anns = self.ds.annotations(self.ds.image_ids[i])
            x, y, w, h = anns[p]["bbox"]
            kps = np.asarray(anns[p]["keypoints"], np.float32).reshape(17, 3)
            out.append(crop_joints(kps, (x, y, x + w, y + h), self.size))
        return np.stack(out)

    def latent_shape(self, size: int):
        return (size, 4, self.size[1] // 8, self.size[0] // 8)
