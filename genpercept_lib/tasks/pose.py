"""Human pose estimation (supplementary sections 6 and 8.6, Table 3): top-down keypoints from person crops.

The authors released no pose code; the supplementary says: top-down with person boxes from Simple Baseline,
15K COCO training samples, ViTPose's keypoint head decoding the output, COCO val AP against Painter. We build
exactly that on the one-step U-Net:

* a person box becomes a crop at ViTPose's aspect ratio (3 : 4; 192 x 256 in the paper profile) with mmpose's
  1.25 padding (``keypoints.box_to_center_scale``, ``crop_transform``, ``cv2.warpAffine`` as mmpose);
* the crop is encoded by the frozen VAE and run once through the U-Net (t = 1, eq. (9)); its decoder feature
  at 1/16 of the crop (the ViT backbone's stride in ViTPose; SD2.1's second up block) feeds a ViTPose "classic"
  keypoint head (``heads.KeypointHead``: two 4 x 4 deconvolutions of 256 channels, a 1 x 1 conv to 17 maps),
  so the heatmaps are 1/4 of the crop, like ViTPose's 48 x 64;
* U-Net and head train together on mmpose's ``JointsMSELoss`` (target weights) against MSRA Gaussian targets
  (sigma 2), with mmpose's left-right flip augmentation;
* decoding: argmax with the quarter-pixel shift towards the higher neighbour, flip test (COCO's left/right
  pairs, the flipped heatmaps shifted by one pixel, ``shift_heatmap=True`` of mmpose's non-UDP configs), back to
  image pixels; person score = box score x mean of the keypoint scores above 0.2 (mmpose's rescoring);
* COCO keypoint AP (``metrics/pose.py``, pycocotools).

Toy world: people in a 64 px scene are a few pixels tall, so scenes are rendered at ``task_sizes["pose"]``
(128 px in the default profile; the same scene at every size) and person crops taken from them at
``POSE_CROP`` (96 x 128 in the default profile; 48 x 64 left a heatmap ceiling of AP 0.43 and a model at AP
0.001). Being half the paper's crop, the toy crop is read at 1/8 (``FEATURE_STRIDE``: the tiny U-Net's finest up
block, 12 x 16 features, the grid ViTPose's head reads at 1/16 of 192 x 256) by a head with one deconvolution (64
channels, ViTPose's 256 on SD2.1's features), heatmaps still at 1/4 of the crop (24 x 32); training adds box-jittered
copies of every person (``AUGMENT``, ``extra["pose_augment"]``) and the default profile trains pose with its own
learning rate (``task_lr``). People smaller than ``MIN_BOX_HEIGHT`` pixels or with
fewer than ``MIN_KEYPOINTS`` labelled keypoints are not trained on (all are evaluated). Evaluation: every
person of the held-out domains' scenes, with the ground-truth boxes and with jittered boxes (a stand-in for a
detector's).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

from .. import keypoints as kp
from ..metrics import pose as pose_metrics
from .base import EvalSet, Task, register

POSE_CROP = {"default": (96, 128), "smoke": (48, 64), "paper": (192, 256)}  # (width, height) of a person crop
HEAD_CHANNELS = {"sd21": (256, 256), "tiny": (64, 64)}  # ViTPose's 256 for SD2.1's features; 64 for the tiny U-Net
MIN_BOX_HEIGHT = 16
MIN_KEYPOINTS = 6
JITTER = (0.10, 0.15)  # jittered boxes: centre shift up to 10 % of the size, size scaled by 1 +- 15 %
EVAL_SETS = ("heldout_gt_boxes", "heldout_jittered_boxes")
# training augmentation (toy world): ``extra["pose_augment_copies"]`` extra crops of every training person, drawn up
# front because the toy crops are encoded once, under mmpose's RandomBBoxTransform with the settings ``AUGMENT`` (its
# ViTPose defaults) updated by ``extra["pose_augment"]``. The default profile draws four copies with box noise the size
# of the jittered evaluation boxes' (JITTER: centre shift 0.10, size 0.15, no rotation): the model must read a box a
# detector placed, not only a centred one. Measured with mmpose's own defaults at 4000 steps (1/16 features, lr 3e-4):
# two copies moved AP from 0.085 to 0.045 with ground-truth boxes, 0.019 to 0.027 with jittered ones
AUGMENT = {"copies": 0, "shift": 0.16, "shift_prob": 0.3, "scale": 0.5, "rotate": 80.0, "rotate_prob": 0.6}
# the decoder level the keypoint head reads, as a stride of the crop: ViTPose's 1/16 for SD2.1 (a 12 x 16 grid for
# 192 x 256 crops); the toy crops are half as large, so 1/8 gives the tiny U-Net the same 12 x 16 grid, from its
# finest up block (skips from the first down block); its own 1/16 level carries only its 3 x 4 bottleneck. Measured
# (scripts/pose_levers.py, lr 1e-3, 4000 steps, no augmentation): 1/16 AP 0.114 / 0.031 (GT / jittered boxes),
# 1/8 0.138 / 0.042
FEATURE_STRIDE = {"sd21": 16, "tiny": 8}


def augment_settings(cfg) -> dict:
    """``AUGMENT`` updated by ``extra["pose_augment"]``; an unknown key is a one-line error naming the valid ones."""
    changes = cfg.extra.get("pose_augment", {})
    unknown = sorted(set(changes) - (set(AUGMENT) - {"copies"})) if isinstance(changes, dict) else ["(not a dict)"]
    if unknown:
        raise ValueError(f"extra['pose_augment']: unknown setting {unknown[0]!r}: expected some of "
                         f"{', '.join(k for k in AUGMENT if k != 'copies')}")
    return {**AUGMENT, **changes}


def augment_copies(cfg) -> int:
    return int(cfg.extra.get("pose_augment_copies", AUGMENT["copies"]))


class PoseModel(nn.Module):
    """The one-step U-Net read as a feature pyramid + the ViTPose keypoint head: crop latent -> heatmaps."""

    def __init__(self, unet, head: nn.Module, level: int):
        super().__init__()
        self.unet, self.head, self.level = unet, head, level

    def forward(self, z_x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        from ..formulations import ONE_STEP_TIMESTEP
        from ..heads import unet_decoder_features

        t = torch.full((z_x.shape[0],), ONE_STEP_TIMESTEP, dtype=torch.long, device=z_x.device)
        features = unet_decoder_features(self.unet, z_x, t, cond.expand(z_x.shape[0], -1, -1))  # coarse -> fine
        return self.head(features[self.level])  # [B, 17, h, w]


def feature_level(unet, latent_hw: tuple[int, int], cond_dim: int, divide: int = 2) -> tuple[int, int]:
    """(index, channels) of the up-block output at 1/``divide`` of the latent resolution (2: 1/16 of the crop,
    ViTPose's; 1: the latent's own, 1/8); at the latent resolution the finest such block (the last, whose skip
    connections come from the first down block)."""
    from ..heads import unet_decoder_features

    with torch.no_grad():
        feats = unet_decoder_features(unet, torch.zeros(1, unet.config.in_channels, *latent_hw), torch.tensor([1]),
                                      torch.zeros(1, 1, cond_dim))
    want = (max(1, latent_hw[0] // divide), max(1, latent_hw[1] // divide))
    hits = [i for i, f in enumerate(feats) if tuple(f.shape[-2:]) == want]
    if hits:
        i = hits[-1] if divide == 1 else hits[0]
        return i, int(feats[i].shape[1])
    return 0, int(feats[0].shape[1])  # no such level (tiny latents): the coarsest


def feature_stride(cfg) -> int:
    default = FEATURE_STRIDE.get(cfg.model, FEATURE_STRIDE["sd21"])
    stride = cfg.extra.get("pose_feature_stride", default)
    if stride not in (8, 16):
        raise ValueError(f"extra['pose_feature_stride']={stride!r}: expected 8 or 16 (the crop stride of the U-Net "
                         "level the keypoint head reads; heatmaps are at 1/4)")
    return int(stride)


def crop_size(cfg) -> tuple[int, int]:
    return tuple(cfg.extra.get("pose_crop", POSE_CROP.get(cfg.name, POSE_CROP["default"])))


def warp(rgb_chw: np.ndarray, center, scale, size, rotation_deg: float = 0.0) -> np.ndarray:
    """The crop of an image [3, H, W] in [0, 1] -> [3, h, w] (cv2.warpAffine, bilinear, as mmpose)."""
    import cv2

    m = kp.crop_transform(center, scale, size, rotation_deg=rotation_deg)
    hwc = np.ascontiguousarray(np.moveaxis(np.asarray(rgb_chw, np.float32), 0, -1))
    out = cv2.warpAffine(hwc, m, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)  # [h, w, 3]
    return np.moveaxis(out, -1, 0)


def flip_joints(joints: np.ndarray, width: int) -> np.ndarray:
    """Joints [..., 17, 3] of a crop ``width`` pixels wide, mirrored (x -> w - 1 - x, left/right swapped; mmpose
    fliplr_joints)."""
    out = joints.copy()
    out[..., 0] = width - 1 - out[..., 0]
    for a, b in kp.COCO_FLIP_PAIRS:
        out[..., [a, b], :] = out[..., [b, a], :]
    return out


def flip_crop(crop: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a crop [3, h, w] and its joints [17, 3]."""
    return np.ascontiguousarray(crop[..., ::-1]), flip_joints(joints, crop.shape[-1])


def crop_joints(joints: np.ndarray, box, crop_wh) -> np.ndarray:
    """A person's joints [17, 3] in the pixels of its crop (box xyxy, crop (w, h)); joints outside: invisible."""
    w, h = crop_wh
    center, scale = kp.box_to_center_scale(box, w / h)
    return _joints_through(joints, kp.crop_transform(center, scale, (w, h)), crop_wh)


def _joints_through(joints: np.ndarray, matrix: np.ndarray, crop_wh) -> np.ndarray:
    """Joints [17, 3] mapped by a crop's 2x3 affine ``matrix``; those that leave the crop become invisible."""
    w, h = crop_wh
    out = np.array(joints, np.float32, copy=True)
    out[:, :2] = kp.apply_affine(out[:, :2], matrix)
    inside = (out[:, 0] >= 0) & (out[:, 0] < w) & (out[:, 1] >= 0) & (out[:, 1] < h)
    out[~inside, 2] = 0
    return out


def _truncnorm(rng: np.random.Generator, size) -> np.ndarray:
    """Standard normal samples truncated to [-1, 1] (mmpose ``RandomBBoxTransform._truncnorm``)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1
    return out


def augmented_crop(rgb_chw: np.ndarray, box, joints: np.ndarray, crop_wh, rng: np.random.Generator,
                   settings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One training crop [3, h, w] and its joints [17, 3] under mmpose's ``RandomBBoxTransform`` (the default of
    its ViTPose configs): with probability 0.3 the box centre moves by up to 0.16 of the padded box
    (truncated normal), the box is scaled by 1 + 0.5 t, and with probability 0.6 the crop is rotated by 80 t
    degrees (t a standard normal truncated to [-1, 1]). ``settings`` (``augment_settings``) replace those numbers.
    Joints leaving the crop become invisible."""
    a = AUGMENT if settings is None else settings
    w, h = crop_wh
    center, scale = kp.box_to_center_scale(box, w / h)
    shift = _truncnorm(rng, 2) * a["shift"] * scale if rng.random() < a["shift_prob"] else 0.0
    center = center + shift
    scale = scale * (1.0 + a["scale"] * float(_truncnorm(rng, 1)[0]))
    rotation = a["rotate"] * float(_truncnorm(rng, 1)[0]) if rng.random() < a["rotate_prob"] else 0.0
    out = _joints_through(joints, kp.crop_transform(center, scale, (w, h), rotation_deg=rotation), (w, h))
    return warp(rgb_chw, center, scale, (w, h), rotation), out


def mean_pose(joints: np.ndarray) -> np.ndarray:
    """The mean position [17, 2] of each joint over the people [P, 17, 3] where it is labelled."""
    vis = joints[:, :, 2:] > 0  # [P, 17, 1]
    return (joints[:, :, :2] * vis).sum(0) / np.maximum(vis.sum(0), 1)


def _person_boxes_ok(box, joints) -> bool:
    return (box[3] - box[1]) >= MIN_BOX_HEIGHT and int((joints[:, 2] > 0).sum()) >= MIN_KEYPOINTS


class Pose(Task):
    name = "pose"
    mirrors_scenes = False  # its crops are mirrored and jittered by its own pipeline (training_data)
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

    # -- data -----------------------------------------------------------------------------------------------
    def toy_scenes(self, cfg, mix, n: int, split: str) -> dict:
        """Scenes rendered at the pose size: rgb [N, 3, S, S] and per-scene people (keypoints, boxes, areas),
        cached as one .npz (people concatenated with their scene index)."""
        from ..data import pool, toyworld
        from ..results import atomic_path

        size = self.toy_size(cfg)
        spec = {"mix": mix, "n": n, "size": size, "split": split, "seed": cfg.seed, "renderer": toyworld.VERSION}
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        path = pool.cache_root() / "toyworld" / f"pose-{split}-{n}-{size}px-{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as f:
                    return {k: f[k] for k in f.files}
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        domains = pool.domain_draws(mix, n, cfg.seed)
        rgb, kps, boxes, areas, scene = [], [], [], [], []
        from ..progress import tqdm

        for i, domain in enumerate(tqdm(domains, desc=f"render people ({split})", leave=False)):
            s = toyworld.render(domain, pool.OFFSETS[split] + i, size)
            rgb.append(s["rgb"])
            for j in range(len(s["boxes"])):
                kps.append(s["keypoints"][j])
                boxes.append(s["boxes"][j])
                areas.append(s["areas"][j])
                scene.append(i)
        data = {"rgb": np.stack(rgb), "keypoints": np.asarray(kps, np.float32).reshape(-1, 17, 3),
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "areas": np.asarray(areas, np.float32),
                "scene": np.asarray(scene, np.int64), "domain": np.array(domains)}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **data)
        return data

    def crops(self, cfg, data: dict, boxes: np.ndarray | None = None) -> dict:
        """Person crops of ``data``'s people (their boxes, or ``boxes``): crop [P, 3, h, w], joints in crop
        pixels [P, 17, 3], center and scale [P, 2]."""
        w, h = crop_size(cfg)
        boxes = data["boxes"] if boxes is None else boxes
        out = {"crop": [], "joints": [], "center": [], "scale": []}
        for p, box in enumerate(boxes):
            center, scale = kp.box_to_center_scale(box, w / h)
            joints = crop_joints(data["keypoints"][p], box, (w, h))
            out["crop"].append(warp(data["rgb"][data["scene"][p]], center, scale, (w, h)))
            out["joints"].append(joints)
            out["center"].append(center)
            out["scale"].append(scale)
        empty = {"crop": (0, 3, h, w), "joints": (0, 17, 3), "center": (0, 2), "scale": (0, 2)}
        return {k: np.stack(v).astype(np.float32) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}

    def training_data(self, cfg, spec, augment: bool = True) -> dict:
        """Toy world: crops of the training scenes' people and their mirror images, plus (``augment``)
        ``augment_copies(cfg)`` randomly shifted, scaled, rotated and flipped crops of each (``augmented_crop``)."""
        data = self.toy_scenes(cfg, self.toy_mix(spec.labels), cfg.n_train, "train")
        keep = [p for p in range(len(data["boxes"])) if _person_boxes_ok(data["boxes"][p], data["keypoints"][p])]
        n = max(cfg.batch_size, int(round(len(keep) * spec.fraction)))
        sub = {"rgb": data["rgb"], "scene": data["scene"][keep][:n], "boxes": data["boxes"][keep][:n],
               "keypoints": data["keypoints"][keep][:n]}
        crops = self.crops(cfg, sub)
        flipped = [flip_crop(c, j) for c, j in zip(crops["crop"], crops["joints"])]
        crop = np.concatenate([crops["crop"], np.stack([f[0] for f in flipped])]) if flipped else crops["crop"]
        joints = np.concatenate([crops["joints"], np.stack([f[1] for f in flipped])]) if flipped else crops["joints"]
        copies = augment_copies(cfg) if augment else 0
        if not copies or not len(sub["boxes"]):
            return {"crop": crop, "joints": joints}
        rng, settings = np.random.default_rng(spec.seed + 5021), augment_settings(cfg)
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

    def targets(self, joints: np.ndarray, crop_wh) -> tuple[np.ndarray, np.ndarray]:
        """MSRA targets at 1/4 of the crop: ([P, 17, h/4, w/4], [P, 17])."""
        w, h = crop_wh
        size = (w // 4, h // 4)
        t, wt = [], []
        for j in joints:
            hm = j.copy()
            hm[:, :2] = hm[:, :2] * (size[0] / w)  # heatmap = crop / stride (non-UDP)
            a, b = kp.gaussian_targets(hm, size)
            t.append(a)
            wt.append(b)
        return np.stack(t), np.stack(wt)

    def model_tag(self, cfg) -> str:
        """A model trained on crops of another size (``POSE_CROP``, ``extra["pose_crop"]``) or with another
        augmentation (``AUGMENT``) is another model."""
        w, h = crop_size(cfg)
        tag = f"{super().model_tag(cfg)}/crop{w}x{h}"
        if feature_stride(cfg) != 16:  # (the 1/16 models cached before the stride was a choice keep their key)
            tag += f"-stride{feature_stride(cfg)}"
        if not augment_copies(cfg):
            return tag
        aug = hashlib.sha1(json.dumps({**augment_settings(cfg), "copies": augment_copies(cfg)},
                                      sort_keys=True).encode())
        return f"{tag}-aug{aug.hexdigest()[:6]}"

    # -- the model --------------------------------------------------------------------------------------------
    def build_model(self, unet, cfg, spec, vae, cond_dim: int) -> PoseModel:
        from ..heads import KeypointHead
        from ..models import vae_scale_factor

        w, h = crop_size(cfg)
        f = vae_scale_factor(vae)
        stride = feature_stride(cfg)
        level, channels = feature_level(unet, (h // f, w // f), cond_dim, divide=stride // f)
        deconvs = HEAD_CHANNELS.get(cfg.model, HEAD_CHANNELS["sd21"])[:stride // 8]  # x2 each, to heatmaps at 1/4
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed + 7)
            head = KeypointHead(channels, deconv_channels=deconvs)
        return PoseModel(unet, head, level)

    def training_source(self, cfg, spec, vae):
        from ..models import encoded_once

        if cfg.source == "real":
            return CocoCrops(cfg, spec, self)
        key = (repr(cfg), self.name, spec.fraction, spec.labels, spec.seed)  # the jittered copies draw from the seed
        return _HeatmapSource(encoded_once(key, vae, lambda: self.encode_training_set(cfg, spec, vae)))

    def encode_training_set(self, cfg, spec, vae) -> dict:
        """Toy world: the training crops encoded with the frozen VAE, their heatmap targets and joint weights."""
        from ..models import encode_batched

        data = self.training_data(cfg, spec)
        targets, weights = self.targets(data["joints"], crop_size(cfg))
        z_x = encode_batched(vae, torch.from_numpy(data["crop"]) * 2 - 1)  # [P, 4, h/8, w/8]
        return {"z_x": z_x, "target": torch.from_numpy(targets), "weight": torch.from_numpy(weights)}

    def loss(self, model, batch, cond, vae) -> torch.Tensor:
        """mmpose ``JointsMSELoss(use_target_weight=True)``: 0.5 * mean over joints of MSE(w * pred, w * target).
        Real crops arrive as pixels and are encoded here, on the accelerator, by the frozen VAE."""
        from ..models import encode

        if "z_x" not in batch:
            with torch.no_grad():
                batch = {**batch, "z_x": encode(vae, batch["crop"] * 2 - 1)}  # [B, 4, h/8, w/8]
        pred = model(batch["z_x"], cond)  # [B, K, h, w]
        w = batch["weight"][..., None, None]  # [B, K, 1, 1]
        return 0.5 * ((pred * w - batch["target"] * w) ** 2).mean()

    # -- evaluation -------------------------------------------------------------------------------------------
    def eval_pool(self, cfg, name):
        from ..data import toyworld

        if name not in EVAL_SETS:
            raise ValueError(f"toy pose evaluation set {name!r}: expected one of {', '.join(EVAL_SETS)}")
        data = self.toy_scenes(cfg, {d: 1.0 for d in toyworld.EVAL_DOMAINS}, 4 * cfg.n_eval, "eval")
        return self.as_items(data, jitter=name.endswith("jittered_boxes"), seed=cfg.seed)

    @staticmethod
    def as_items(data: dict, jitter: bool, seed: int) -> dict:
        """Scenes as evaluation items: rgb, the people's keypoints/boxes/areas, detection boxes and scores."""
        rng = np.random.default_rng(seed + 4049)
        items = {"rgb": [], "keypoints": [], "boxes": [], "areas": [], "det_boxes": [], "det_scores": [],
                 "image_id": []}
        for i in range(len(data["rgb"])):
            mine = data["scene"] == i
            boxes = data["boxes"][mine]
            det = boxes.copy()
            if jitter and len(det):
                wh = det[:, 2:] - det[:, :2]
                centre = (det[:, 2:] + det[:, :2]) / 2 + rng.uniform(-JITTER[0], JITTER[0], wh.shape) * wh
                wh = wh * rng.uniform(1 - JITTER[1], 1 + JITTER[1], (len(wh), 1))
                det = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
            items["rgb"].append(data["rgb"][i])
            items["keypoints"].append(data["keypoints"][mine])
            items["boxes"].append(boxes)
            items["areas"].append(data["areas"][mine])
            items["det_boxes"].append(det)
            items["det_scores"].append(np.ones(len(det), np.float32))
            items["image_id"].append(i + 1)
        return items

    @torch.no_grad()
    def predict_items(self, cfg, model, vae, items, cond, flip_test: bool = True):
        """(item, detections) for every item: each detection box cropped, encoded, run with the flip test."""
        from ..models import encode

        w, h = crop_size(cfg)
        dev = next(model.parameters()).device
        for item in items:
            boxes = np.asarray(item["det_boxes"], np.float32).reshape(-1, 4)
            scores = np.asarray(item["det_scores"], np.float32).reshape(-1)
            dets = []
            if len(boxes):
                crops = self.crops(cfg, {"rgb": [item["rgb"]], "scene": np.zeros(len(boxes), int),
                                         "keypoints": np.zeros((len(boxes), 17, 3), np.float32)}, boxes)
                x = torch.from_numpy(crops["crop"]).to(dev) * 2 - 1  # [P, 3, h, w]
                heat = model(encode(vae, x), cond).float()  # [P, 17, h/4, w/4]
                if flip_test:
                    flipped = model(encode(vae, x.flip(-1)), cond).float()
                    heat = torch.from_numpy(kp.merge_flip_test(heat.cpu().numpy(), flipped.cpu().numpy(),
                                                               shift_heatmap=True))
                coords, maxvals = kp.keypoints_from_heatmaps(np.asarray(heat.cpu()), crops["center"], crops["scale"])
                for p in range(len(boxes)):
                    dets.append(detection(item["image_id"], coords[p], maxvals[p], scores[p]))
            yield item, dets

    def real_item(self, cfg, item: dict) -> dict:
        """A COCO reader item as an evaluation item: boxes xyxy, areas, and the detection boxes of the image
        (``extra["pose_detections"]``, a COCO results file; the ground-truth boxes without one)."""
        boxes = np.asarray(item["boxes"], np.float32).reshape(-1, 4)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        path = cfg.extra.get("pose_detections")
        if path:
            dets = _detections_by_image(str(path)).get(int(item["image_id"]), [])
            det = np.array([[x, y, x + w, y + h] for (x, y, w, h), _ in dets], np.float32).reshape(-1, 4)
            scores = np.array([s for _, s in dets], np.float32)
        else:
            det, scores = xyxy, np.ones(len(xyxy), np.float32)
        h, w = np.shape(item["rgb"])[-2:]
        det[:, 0::2], det[:, 1::2] = det[:, 0::2].clip(0, w), det[:, 1::2].clip(0, h)
        keep = (det[:, 2] > det[:, 0]) & (det[:, 3] > det[:, 1])
        return {"rgb": item["rgb"], "keypoints": item["keypoints"], "boxes": xyxy,
                "areas": np.asarray(item.get("areas", boxes[:, 2] * boxes[:, 3]), np.float32),
                "det_boxes": det[keep], "det_scores": scores[keep], "image_id": int(item["image_id"])}

    def scores(self, pairs, **protocol):
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

    # -- reference rows ---------------------------------------------------------------------------------------
    def blind_guesser(self, cfg, spec):
        """The image-blind guess: the training set's mean pose in crop coordinates (its people and their mirror
        images, as training sees them), placed in each box. Paper profile: COCO's training people, from the
        annotations alone."""
        w, h = crop_size(cfg)
        if cfg.source == "real":
            joints = CocoCrops(cfg, spec, self).joints()  # [P, 17, 3]
            joints = np.concatenate([joints, flip_joints(joints, w)])
        else:
            joints = self.training_data(cfg, spec, augment=False)["joints"]  # mirrors included, no augmentation
        mean = mean_pose(joints)  # [17, 2] crop pixels

        def guess(item):
            out = []
            for box, score in zip(np.asarray(item["det_boxes"]).reshape(-1, 4), item["det_scores"]):
                center, scale = kp.box_to_center_scale(box, w / h)
                xy = kp.apply_affine(mean, kp.crop_transform(center, scale, (w, h), inverse=True))
                out.append(detection(item["image_id"], xy, np.ones(17), score))
            return out

        return guess

    def ceiling_predictor(self, cfg):
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
                target, weight = self.targets(joints[None], (w, h))
                coords, maxvals = kp.keypoints_from_heatmaps(target, center[None], scale[None])
                out.append(detection(item["image_id"], coords[0], np.maximum(maxvals[0], 1e-3), score))
            return out

        return predict


class CocoCrops:
    """Paper profile: person crops of COCO train2017 read per sample (the supplementary's 15K training samples:
    the first ``pose_train_samples`` people with labelled keypoints of a seeded permutation), mmpose's flip with
    probability 0.5, MSRA targets; the loss encodes the crops."""

    def __init__(self, cfg, spec, task: Pose):
        from ..data import readers

        root = cfg.extra.get("roots", {}).get("coco")
        self.ds = readers.open_listed("coco", None if root is None else str(root), "train2017")  # once per process
        self.cfg, self.task, self.size = cfg, task, crop_size(cfg)
        people = [(i, p) for i, image_id in enumerate(self.ds.image_ids)
                  for p, ann in enumerate(self.ds._annotations(image_id)) if ann.get("num_keypoints", 0) > 0]
        order = np.random.default_rng(spec.seed).permutation(len(people))
        n = int(cfg.extra.get("pose_train_samples", 15_000))
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
            c = self.task.crops(self.cfg, data)
            crop, joint = c["crop"][0], c["joints"][0]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop, joint = flip_crop(crop, joint)
            crops.append(crop)
            joints.append(joint)
        target, weight = self.task.targets(np.stack(joints), self.size)
        return {"crop": torch.from_numpy(np.stack(crops)), "target": torch.from_numpy(target),
                "weight": torch.from_numpy(weight)}

    def joints(self) -> np.ndarray:
        """The training people's joints in crop pixels [P, 17, 3], from the annotations (no image is read)."""
        out = []
        for i, p in self.people:
            anns = self.ds._annotations(self.ds.image_ids[i])
            x, y, w, h = anns[p]["bbox"]
            kps = np.asarray(anns[p]["keypoints"], np.float32).reshape(17, 3)
            out.append(crop_joints(kps, (x, y, x + w, y + h), self.size))
        return np.stack(out)

    def latent_shape(self, size: int):
        return (size, 4, self.size[1] // 8, self.size[0] // 8)


def _detections_by_image(path: str) -> dict[int, list[tuple[list[float], float]]]:
    """A COCO results file of person boxes (Simple Baseline's ``COCO_val2017_detections_AP_H_56_person.json``):
    image id -> [(bbox xywh, score)]."""
    import functools

    @functools.lru_cache(maxsize=2)
    def load(p):
        from pathlib import Path

        try:
            rows = json.loads(Path(p).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{p}: not a readable COCO detections file ({err})") from None
        out: dict[int, list] = {}
        for r in rows:
            if r.get("category_id", 1) == 1:
                out.setdefault(int(r["image_id"]), []).append((r["bbox"], float(r["score"])))
        return out

    return load(path)


def detection(image_id, xy, maxvals, box_score) -> dict:
    """A COCO keypoint detection: keypoints (x, y, maxval) x 17 and mmpose's rescored person score."""
    xy = np.asarray(xy, np.float64).reshape(17, 2)
    flat = np.concatenate([xy, np.asarray(maxvals, np.float64).reshape(17, 1)], axis=1).ravel()
    return {"image_id": int(image_id), "category_id": 1, "keypoints": flat.tolist(),
            "score": float(kp.rescore(float(box_score), np.asarray(maxvals)))}


class _HeatmapSource:
    """Batches of (crop latent, target heatmaps, target weights) drawn from tensors encoded once."""

    KEYS = ("z_x", "target", "weight")

    def __init__(self, data: dict):
        self.data, self.n = data, len(data["z_x"])

    def batch(self, generator: torch.Generator, size: int) -> dict:
        idx = torch.randint(0, self.n, (size,), generator=generator)
        return {k: self.data[k][idx] for k in self.KEYS}

    def latent_shape(self, size: int):
        return (size, *self.data["z_x"].shape[1:])


POSE = register(Pose())
