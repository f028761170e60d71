"""Pose end to end: train the U-Net + keypoint head with the one loop, predict COCO detections per box, and write
the accuracy table's tidy rows (model, untrained, image-blind = the mean pose, heatmap-ceiling).

It reuses the shared pieces by name, never by being probed: ``finetune.fit`` (the cached training loop, keyed like
every other model), ``evaluate.items`` / ``evaluate.score_sets`` (evaluation sets and the task's scores) and
``experiment.tidy`` / ``experiment.reference_rows`` (the row format).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import evaluate, experiment, models
from ..finetune import BATCH_SALT, device, fit, frozen_vae, initial_unet, training_cond
from ..sources import Lazy
from ..spec import FinetuneSpec
from ..train import step_generator
from . import keypoints as kp
from .crops import flip_joints, mean_pose, person_crops, targets
from .model import PoseModel, build, heatmap_loss
from .settings import crop_size
from .task import POSE
from .training import CocoCrops, training_data, training_source

KINDS = ("untrained", "image-blind", "heatmap-ceiling")  # pose's reference rows, in table order


def initial_model(cfg, spec: FinetuneSpec, prior) -> PoseModel:
    """What pose training starts from: the prior's U-Net (or a random one) with a fresh keypoint head."""
    if spec.task != POSE.name:
        raise ValueError(f"the pose pipeline runs task 'pose', not {spec.task!r} (dense tasks: experiment.run)")
    unet = initial_unet(spec, prior.unet)
    cond = training_cond(prior, unet, 1)  # [1, L, D]: the head's level is found with the real condition width
    return build(unet, cfg, spec, prior.vae, cond.shape[-1])


def finetune(cfg, spec: FinetuneSpec, prior, desc: str | None = None, stop_after: int | None = None):
    """Train (or resume, or load from cache) the U-Net + keypoint head of ``spec``; returns (model, history).
    Batches are drawn as ``finetune.make_loss`` draws them; the loss is the heatmap MSE (``model.heatmap_loss``)."""
    model = initial_model(cfg, spec, prior)
    vae = frozen_vae(prior)
    source = Lazy(lambda: training_source(cfg, spec, vae))  # built on the first batch: a cached model needs no data
    cond = training_cond(prior, model.unet, cfg.batch_size)  # [B, L, D]

    def batch_fn(index):
        return source.batch(step_generator(spec.seed, index, salt=BATCH_SALT), cfg.batch_size)

    def loss_fn(m, batch, step):
        return heatmap_loss(m, batch, cond.to(next(m.parameters()).device), vae)

    return fit(cfg, spec, prior, model, batch_fn, loss_fn, desc, stop_after)


def detection(image_id, xy, maxvals, box_score) -> dict:
    """A COCO keypoint detection: keypoints (x, y, maxval) x 17 and mmpose's rescored person score."""
    xy = np.asarray(xy, np.float64).reshape(17, 2)
    flat = np.concatenate([xy, np.asarray(maxvals, np.float64).reshape(17, 1)], axis=1).ravel()
    return {"image_id": int(image_id), "category_id": 1, "keypoints": flat.tolist(),
            "score": float(kp.rescore(float(box_score), np.asarray(maxvals)))}


@torch.no_grad()
def predict_items(cfg, model: PoseModel, vae, items, cond: torch.Tensor, flip_test: bool = True):
    """(item, detections) for every item: each detection box cropped, encoded, run with the flip test."""
    w, h = crop_size(cfg)
    dev = next(model.parameters()).device
    for item in items:
        boxes = np.asarray(item["det_boxes"], np.float32).reshape(-1, 4)
        scores = np.asarray(item["det_scores"], np.float32).reshape(-1)
        dets = []
        if len(boxes):
            crops = person_crops(cfg, {"rgb": [item["rgb"]], "scene": np.zeros(len(boxes), int),
                                       "keypoints": np.zeros((len(boxes), 17, 3), np.float32)}, boxes)
            x = torch.from_numpy(crops["crop"]).to(dev) * 2 - 1  # [P, 3, h, w]
            heat = model(models.encode(vae, x), cond).float()  # [P, 17, h/4, w/4]
            if flip_test:
                flipped = model(models.encode(vae, x.flip(-1)), cond).float()
                heat = torch.from_numpy(kp.merge_flip_test(heat.cpu().numpy(), flipped.cpu().numpy(),
                                                           shift_heatmap=True))
            coords, maxvals = kp.keypoints_from_heatmaps(np.asarray(heat.cpu()), crops["center"], crops["scale"])
            for p in range(len(boxes)):
                dets.append(detection(item["image_id"], coords[p], maxvals[p], scores[p]))
        yield item, dets


def predictions(cfg, model: PoseModel, vae, spec: FinetuneSpec, domain: str,
                text_embedding: torch.Tensor | None = None):
    """(item, detections) for every evaluation image of ``domain`` (toy scenes, or COCO images one by one)."""
    cond = text_embedding if text_embedding is not None else models.empty_text_embedding(model.unet)  # [1, L, D]
    yield from predict_items(cfg, model, vae, evaluate.items(cfg, domain, spec.task, progress=True), cond)


def run(cfg, prior, spec: FinetuneSpec, domains, trained: bool = True) -> pd.DataFrame:
    """Train ``spec``'s pose model (or, with ``trained=False``, take the untrained one) and score it on
    ``domains``: one tidy row per domain, as ``experiment.run`` writes them (one step, no ensemble)."""
    if trained:
        model, history = finetune(cfg, spec, prior)
        training = experiment.training_note(spec, history)
    else:
        model, training = initial_model(cfg, spec, prior).eval(), "untrained"
    dev = device()
    model, vae = model.to(dev), prior.vae.to(dev)
    text = None if prior.text_embedding is None else prior.text_embedding.to(dev)
    df = evaluate.score_sets(cfg, spec, domains, lambda d: predictions(cfg, model, vae, spec, d, text),
                             desc=f"eval {spec.label()}")
    df = df.assign(denoise_steps=1, ensemble=1, training=training)
    return experiment.tidy(df, spec, spec.label(), "model" if trained else "untrained")


def blind_guesser(cfg, spec: FinetuneSpec):
    """The image-blind guess: the training set's mean pose in crop coordinates (its people and their mirror
    images, as training sees them), placed in each box. Paper profile: COCO's training people, from the
    annotations alone."""
    w, h = crop_size(cfg)
    if cfg.source == "real":
        joints = CocoCrops(cfg, spec).joints()  # [P, 17, 3]
        joints = np.concatenate([joints, flip_joints(joints, w)])
    else:
        joints = training_data(cfg, spec, augment=False)["joints"]  # mirrors included, no augmentation
    mean = mean_pose(joints)  # [17, 2] crop pixels

    def guess(item):
        out = []
        for box, score in zip(np.asarray(item["det_boxes"]).reshape(-1, 4), item["det_scores"]):
            center, scale = kp.box_to_center_scale(box, w / h)
            xy = kp.apply_affine(mean, kp.crop_transform(center, scale, (w, h), inverse=True))
            out.append(detection(item["image_id"], xy, np.ones(17), score))
        return out

    return guess


def ceiling_predictor(cfg):
    """The heatmap ceiling: the ground truth encoded as MSRA targets in each detection crop and decoded back
    (what the heatmap representation at 1/4 of the crop loses; there is no VAE in the pose path)."""
    w, h = crop_size(cfg)

    def predict(item):
        out = []
        gts = np.asarray(item["keypoints"]).reshape(-1, 17, 3)
        for box, score, gt in zip(np.asarray(item["det_boxes"]).reshape(-1, 4), item["det_scores"], gts):
            center, scale = kp.box_to_center_scale(box, w / h)
            joints = gt.copy()
            joints[:, :2] = kp.apply_affine(joints[:, :2], kp.crop_transform(center, scale, (w, h)))
            target, _ = targets(joints[None], (w, h))  # [1, 17, h/4, w/4]
            coords, maxvals = kp.keypoints_from_heatmaps(target, center[None], scale[None])
            out.append(detection(item["image_id"], coords[0], np.maximum(maxvals[0], 1e-3), score))
        return out

    return predict


def image_blind(cfg, spec: FinetuneSpec, domains) -> pd.DataFrame:
    """The ``image-blind`` rows: the mean training pose in every detection box."""
    guess = blind_guesser(cfg, spec)
    return experiment.reference_rows(cfg, spec, domains, lambda item, domain: guess(item),
                                     "image-blind (the mean training label)", "image-blind")


def heatmap_ceiling(cfg, spec: FinetuneSpec, domains) -> pd.DataFrame:
    """The ``heatmap-ceiling`` rows: the ground truth through the heatmaps (``ceiling_predictor``)."""
    predict = ceiling_predictor(cfg)
    return experiment.reference_rows(cfg, spec, domains, lambda item, domain: predict(item),
                                     f"{POSE.ceiling_kind} (the ground truth through the task's representation)",
                                     POSE.ceiling_kind)


def references(cfg, prior, spec: FinetuneSpec, domains, kinds=KINDS) -> pd.DataFrame:
    """The reference rows of the pose table, in ``kind`` order (``experiment.references`` for pose)."""
    make = {"untrained": lambda: run(cfg, prior, spec, domains, trained=False),
            "image-blind": lambda: image_blind(cfg, spec, domains),
            "heatmap-ceiling": lambda: heatmap_ceiling(cfg, spec, domains)}
    unknown = set(kinds) - set(make)
    if unknown:
        raise ValueError(f"pose reference kinds {sorted(unknown)}: expected some of {', '.join(make)}")
    return pd.concat([make[k]() for k in kinds], ignore_index=True)
