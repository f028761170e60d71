"""Where pose's people come from: toy scenes rendered at the pose size (cached as one .npz per set), their
evaluation items (ground-truth or jittered boxes as the detections), and COCO items with a detections file."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .. import cache
from ..data import pool, toyworld
from ..progress import tqdm
from .settings import EVAL_SETS, JITTER, pose_settings


def toy_scenes(cfg, mix, n: int, split: str, size: int) -> dict:
    """Scenes rendered at the pose size ``size``: rgb [N, 3, S, S] and per-scene people (keypoints, boxes, areas),
    cached as one .npz (people concatenated with their scene index)."""
    spec = {"mix": mix, "n": n, "size": size, "split": split, "seed": cfg.seed, "renderer": toyworld.VERSION}
    path = cache.root() / "toyworld" / f"pose-{split}-{n}-{size}px-{cache.key(spec)}.npz"
    cached = cache.load_npz(path)
    if cached is not None:
        return cached
    domains = pool.domain_draws(mix, n, cfg.seed)
    rgb, kps, boxes, areas, scene = [], [], [], [], []
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
    cache.save_npz(path, data)
    return data


def eval_items(cfg, name: str, size: int) -> dict:
    """Toy evaluation set ``name``: every person of the held-out domains' scenes, with the ground-truth boxes or
    jittered ones (a stand-in for a detector's) as the detections."""
    if name not in EVAL_SETS:
        raise ValueError(f"toy pose evaluation set {name!r}: expected one of {', '.join(EVAL_SETS)}")
    data = toy_scenes(cfg, {d: 1.0 for d in toyworld.EVAL_DOMAINS}, 4 * cfg.n_eval, "eval", size)
    return as_items(data, jitter=name.endswith("jittered_boxes"), seed=cfg.seed)


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


def real_item(cfg, item: dict) -> dict:
    """A COCO reader item as an evaluation item: boxes xyxy, areas, and the detection boxes of the image
    (``PoseSettings.detections``, a COCO results file; the ground-truth boxes without one)."""
    boxes = np.asarray(item["boxes"], np.float32).reshape(-1, 4)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    path = pose_settings(cfg).detections
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


@functools.lru_cache(maxsize=2)
def _detections_by_image(path: str) -> dict[int, list[tuple[list[float], float]]]:
    """A COCO results file of person boxes (Simple Baseline's ``COCO_val2017_detections_AP_H_56_person.json``):
    image id -> [(bbox xywh, score)], read once per process."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable COCO detections file ({err})") from None
    out: dict[int, list] = {}
    for r in rows:
        if r.get("category_id", 1) == 1:
            out.setdefault(int(r["image_id"]), []).append((r["bbox"], float(r["score"])))
    return out
