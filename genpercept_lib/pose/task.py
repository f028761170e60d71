"""The pose task as the registry sees it: its name, COCO keypoint AP, evaluation sets and the settings that make
another model. It has no label image and no VAE decoding: training and prediction are the pose pipeline's own
(``pipeline.py``); ``FinetuneSpec(task="pose")`` names a pose model and keys its cache folder."""

from __future__ import annotations

import numpy as np

from .. import cache
from ..tasks import EvalSet, Task, register
from . import data
from . import metrics as pose_metrics
from .settings import EVAL_SETS, SETTINGS, augment_copies, augment_settings, crop_size, feature_stride


class Pose(Task):
    name = "pose"
    mirrors_scenes = False  # its crops are mirrored and jittered by its own pipeline (training.training_data)
    description = "COCO keypoints of each person box (17 x (x, y, score) in image pixels)"
    channels = 1                       # no dense map: the prediction is a list of COCO detections per image
    label_key = "keypoints"
    metrics = pose_metrics.AP_KEYS
    headline = "AP"
    toy_eval = EVAL_SETS
    ceiling_kind = "heatmap-ceiling"
    formulations = ("one_step",)  # the keypoint head reads the one-step U-Net's decoder features
    real_eval = {"val2017": EvalSet("coco", "val2017", processing_res=0, title="COCO val2017")}
    real_train_mix = {"coco": 1.0}
    own_settings = SETTINGS  # render size, steps and lr, plus crops and augmentation (settings.PoseSettings)

    def eval_pool(self, cfg, name: str, render=None) -> dict:
        """Toy world: the people of the held-out scenes with ground-truth or jittered boxes (``data.eval_items``:
        pose renders its own scenes, with their people, so ``render`` is not used)."""
        return data.eval_items(cfg, name, self.toy_size(cfg))

    def real_item(self, cfg, item: dict) -> dict:
        """A COCO image with its people and the detection boxes to crop (``data.real_item``)."""
        return data.real_item(cfg, item)

    def scores(self, pairs, **protocol) -> dict[str, float]:
        """COCO keypoint AP of (item, detections) pairs (``metrics.coco_keypoint_ap``); NaN without any person."""
        images, people, dets = [], [], []
        for item, pred in pairs:
            h, w = np.shape(item["rgb"])[-2:]
            images.append({"id": int(item["image_id"]), "width": int(w), "height": int(h)})
            people.append({"keypoints": np.asarray(item["keypoints"]).reshape(-1, 17, 3),
                           "boxes": np.asarray(item["boxes"]).reshape(-1, 4), "areas": np.asarray(item["areas"])})
            dets.extend(pred)
        if not any(len(p["boxes"]) for p in people):
            return {m: float("nan") for m in self.metrics}
        gt = pose_metrics.coco_ground_truth(images, people)
        return pose_metrics.coco_keypoint_ap(gt, dets)

    def model_tag(self, cfg) -> str:
        """A model trained on crops of another size, from another U-Net level or with another augmentation
        (``PoseSettings``) is another model."""
        w, h = crop_size(cfg)
        tag = f"{super().model_tag(cfg)}/crop{w}x{h}-stride{feature_stride(cfg)}"
        if not augment_copies(cfg):
            return tag
        return f"{tag}-aug{cache.key({**augment_settings(cfg), 'copies': augment_copies(cfg)}, 6)}"


POSE = register(Pose())
