"""COCO keypoint AP (OKS-based) with pycocotools, from in-memory dicts, quiet by default.

The protocol is ViTPose's, i.e. mmpose 0.x's (``TopDownCocoDataset.evaluate`` ->
``_do_python_keypoint_eval`` in ``ViTAE-Transformer/ViTPose``): person results are rescored
(``pose.keypoints.rescore``) and scored by ``pycocotools.cocoeval.COCOeval(iouType="keypoints")``
with the 17 COCO OKS sigmas and up to 20 detections per image. The first five of ``COCOeval.stats`` are

    AP    mean over OKS thresholds 0.50:0.05:0.95,  all areas
    AP50  OKS 0.50;   AP75  OKS 0.75
    AP_M  medium persons (32^2 < area <= 96^2);    AP_L  large persons (area > 96^2)

Values are pycocotools' own, including its ``-1`` for "no ground truth in this area range". This module
builds the ground truth (``coco_ground_truth``) and checks the detections before pycocotools sees them,
so bad input is a one-line ValueError rather than an ``AssertionError`` deep inside pycocotools.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)  # 17
PERSON_CATEGORY_ID = 1
AP_KEYS = ("AP", "AP50", "AP75", "AP_M", "AP_L")  # COCOeval.stats[:5] for iouType="keypoints"

COCO_PERSON_CATEGORY = {
    "id": PERSON_CATEGORY_ID,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO_KEYPOINT_NAMES),
    "skeleton": [list(link) for link in COCO_SKELETON],
}


def _np(x, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------------------
def _person_arrays(persons: Mapping, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints [N, 17, 3], boxes [N, 4], areas [N]) of one image; N may be 0."""
    missing = [key for key in ("keypoints", "boxes", "areas") if key not in persons]
    if missing:
        raise ValueError(f"people[{i}] lacks {', '.join(missing)}; expected keypoints, boxes, areas")
    kpts, boxes, areas = _np(persons["keypoints"]), _np(persons["boxes"]), _np(persons["areas"]).reshape(-1)
    kpts = kpts.reshape(0, NUM_KEYPOINTS, 3) if kpts.size == 0 else kpts
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if kpts.ndim != 3 or kpts.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"people[{i}]['keypoints'] has shape {tuple(kpts.shape)}; expected [N, 17, 3]")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"people[{i}]['boxes'] has shape {tuple(boxes.shape)}; expected [N, 4] (x0, y0, x1, y1)")
    if not len(kpts) == len(boxes) == len(areas):
        raise ValueError(f"people[{i}] has {len(kpts)} keypoint sets, {len(boxes)} boxes and {len(areas)} areas")
    return kpts, boxes, areas


def _clip_box(box: np.ndarray, width: float, height: float, where: str) -> list[float]:
    """(x0, y0, x1, y1) clipped to the image -> COCO [x, y, w, h]; ValueError if nothing is left."""
    x0, y0, x1, y1 = box.tolist()
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"{where} = {box.tolist()} is not a box with x1 > x0 and y1 > y0")
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if not (cx1 > cx0 and cy1 > cy0):
        raise ValueError(f"{where} = {box.tolist()} lies outside the {width:g}x{height:g} image")
    return [cx0, cy0, cx1 - cx0, cy1 - cy0]


def coco_ground_truth(images: Sequence[Mapping], people: Sequence[Mapping]) -> dict:
    """A COCO person-keypoints ground-truth dict (what ``person_keypoints_val2017.json`` holds).

    images: one mapping per image with ``id`` (int), ``width``, ``height`` (pixels); other keys (e.g.
        ``file_name``) are copied through.
    people: one mapping per image, same order, with the image's N persons:
        ``keypoints`` [N, 17, 3] (u, v, visibility in {0, 1, 2}: unlabelled, labelled hidden, visible),
        ``boxes`` [N, 4] as (x0, y0, x1, y1) pixels, ``areas`` [N] (COCO's segmentation area; OKS divides
        by it, so a box area makes the metric more lenient than COCO's).

    Conventions: an unlabelled keypoint (visibility 0) is stored as (0, 0, 0) as in COCO;
    ``num_keypoints`` counts visibility > 0 (a person with none is ignored by COCOeval, as in COCO);
    boxes partly outside the image are **clipped** to it (COCO boxes lie inside the image), a box with
    nothing inside the image or with x1 <= x0 is an error; a labelled keypoint outside the image (beyond
    [-0.5, W] x [-0.5, H], which holds both pixel conventions) is an error (mark it visibility 0). Annotation
    ids run from 1 (COCOeval treats id 0 as "unmatched").
    """
    if len(images) != len(people):
        raise ValueError(f"length mismatch: {len(images)} images and {len(people)} people entries")
    out_images, annotations, seen = [], [], set()
    for i, (image, persons) in enumerate(zip(images, people)):
        for key in ("id", "width", "height"):
            if key not in image:
                raise ValueError(f"images[{i}] lacks {key!r}; expected id, width, height")
        image_id, width, height = image["id"], float(image["width"]), float(image["height"])
        if image_id in seen:
            raise ValueError(f"images[{i}] repeats image id {image_id}")
        if not (width > 0 and height > 0):
            raise ValueError(f"images[{i}] has size {width:g}x{height:g}; expected positive width and height")
        seen.add(image_id)
        out_images.append({**image, "id": image_id, "width": image["width"], "height": image["height"]})
        kpts, boxes, areas = _person_arrays(persons, i)
        for n in range(len(kpts)):
            where = f"people[{i}]"
            vis = kpts[n, :, 2]  # [17]
            if not np.isin(vis, (0, 1, 2)).all():
                raise ValueError(f"{where}['keypoints'][{n}] has visibility {sorted(set(vis.tolist()))}; "
                                 "expected 0, 1 or 2")
            xy = np.where(vis[:, None] > 0, kpts[n, :, :2], 0.0)  # [17, 2]
            # inside: [0, W] (COCO's corner convention) or [-0.5, W - 0.5] (pixel centres at integers, the toy
            # world's): anything within [-0.5, W] is in some pixel of the image
            off = (vis > 0) & ((xy[:, 0] < -0.5) | (xy[:, 0] > width) | (xy[:, 1] < -0.5) | (xy[:, 1] > height))
            if off.any():
                k = int(np.argmax(off))
                raise ValueError(f"{where}['keypoints'][{n}, {k}] = {xy[k].tolist()} is labelled but outside "
                                 f"the {width:g}x{height:g} image; set its visibility to 0")
            if not (math.isfinite(areas[n]) and areas[n] > 0):
                raise ValueError(f"{where}['areas'][{n}] = {areas[n]}; expected a positive area")
            bbox = _clip_box(boxes[n], width, height, f"{where}['boxes'][{n}]")
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "keypoints": np.c_[xy, vis].reshape(-1).tolist(),  # [51] = (u, v, visibility) x 17
                "num_keypoints": int((vis > 0).sum()),
                "area": float(areas[n]),
                "bbox": bbox,
                "iscrowd": 0,
            })
    return {"images": out_images, "annotations": annotations, "categories": [copy.deepcopy(COCO_PERSON_CATEGORY)]}


# ---------------------------------------------------------------------------------------------------------
# detections and AP
# ---------------------------------------------------------------------------------------------------------
def _clean_detections(detections: Sequence[Mapping], image_ids: set, category_ids: set) -> list[dict]:
    """Fresh result dicts with only the fields COCOeval reads; one-line ValueError for a bad one."""
    clean = []
    for i, det in enumerate(detections):
        for key in ("image_id", "keypoints", "score"):
            if key not in det:
                raise ValueError(f"detections[{i}] lacks {key!r}; expected image_id, keypoints, score")
        if det["image_id"] not in image_ids:
            raise ValueError(f"detections[{i}] has image_id {det['image_id']!r}, which is not in the ground truth")
        category = det.get("category_id", PERSON_CATEGORY_ID)
        if category not in category_ids:
            raise ValueError(f"detections[{i}] has category_id {category!r}, not a ground-truth category")
        kpts = _np(det["keypoints"]).reshape(-1)
        if kpts.size != 3 * NUM_KEYPOINTS:
            raise ValueError(f"detections[{i}]['keypoints'] has {kpts.size} values; expected 51 (17 x (u, v, score))")
        score = float(det["score"])
        if not (np.isfinite(kpts).all() and math.isfinite(score)):
            raise ValueError(f"detections[{i}] has a non-finite keypoint or score")
        clean.append({"image_id": det["image_id"], "category_id": category, "keypoints": kpts.tolist(),
                      "score": score})
    return clean


def coco_keypoint_ap(gt: dict, detections: Sequence[Mapping], verbose: bool = False) -> dict:
    """``{"AP", "AP50", "AP75", "AP_M", "AP_L"}`` of ``detections`` against ``gt`` (COCOeval stats[:5]).

    gt: a COCO keypoint ground-truth dict (``coco_ground_truth`` or a loaded json); not modified.
    detections: dicts with ``image_id``, ``keypoints`` (51 numbers or [17, 3]: u, v, score), ``score``
        (the rescored person score) and optionally ``category_id`` (default 1); not modified.
    verbose: let pycocotools print its progress and summary table (silenced otherwise).

    An empty detection list warns and is scored as pycocotools scores "nothing found": 0 for every key
    whose area range has ground truth, -1 where it has none (pycocotools' ``loadRes`` itself would crash).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"gt lacks {key!r}; expected a COCO dict with images, annotations, categories")
    dataset = copy.deepcopy(gt)  # COCOeval writes 'ignore' into the ground-truth annotations
    image_ids = {image["id"] for image in dataset["images"]}
    category_ids = {category["id"] for category in dataset["categories"]}
    results = _clean_detections(detections, image_ids, category_ids)
    if not results:
        warnings.warn("coco_keypoint_ap: no detections; every AP is 0 (or -1 where there is no ground truth)",
                      RuntimeWarning, stacklevel=2)

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(dataset["images"]), "categories": copy.deepcopy(dataset["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.useSegm = None  # as mmpose's _do_python_keypoint_eval
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: float(value) for key, value in zip(AP_KEYS, evaluator.stats[:5])}
