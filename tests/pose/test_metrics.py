"""COCO keypoint AP: equality with pycocotools run directly, the ground-truth builder, and bad input."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from genpercept_lib.pose import metrics as P
from genpercept_lib.pose.keypoints import COCO_KEYPOINT_NAMES

W, H = 640, 480


def _random_people(rng, n):
    """n persons with boxes of medium and large size, keypoints inside them, some unlabelled."""
    sizes = rng.uniform(45, 260, size=n)  # box height; sqrt(area) crosses 32 and 96
    x0 = rng.uniform(0, W - 0.5 * sizes)
    y0 = rng.uniform(0, H - sizes)
    boxes = np.stack([x0, y0, x0 + 0.5 * sizes, y0 + sizes], axis=1)  # [n, 4]
    u = rng.uniform(boxes[:, :1], boxes[:, 2:3], size=(n, 17))
    v = rng.uniform(boxes[:, 1:2], boxes[:, 3:4], size=(n, 17))
    vis = rng.choice([0, 1, 2], p=[0.2, 0.2, 0.6], size=(n, 17))
    vis[:, 0] = 2  # at least one labelled keypoint per person
    areas = 0.6 * (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {"keypoints": np.stack([u, v, vis], axis=-1), "boxes": boxes, "areas": areas}


def _dataset(seed=0, n_images=6):
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": W, "height": H, "file_name": f"{i}.png"} for i in range(n_images)]
    people = [_random_people(rng, int(rng.integers(1, 4))) for _ in images]
    return images, people, rng


def _detections(images, people, rng):
    dets = []
    for image, persons in zip(images, people):
        for kpts, area in zip(persons["keypoints"], persons["areas"]):
            noise = rng.normal(0, rng.uniform(0.01, 0.15) * np.sqrt(area), size=(17, 2))
            xy = kpts[:, :2] + noise
            scores = rng.uniform(0.1, 1.0, size=(17, 1))
            dets.append({"image_id": image["id"], "category_id": 1, "keypoints": np.c_[xy, scores].ravel().tolist(),
                         "score": float(rng.uniform(0.3, 1.0))})
        # a false positive per image
        xy = rng.uniform([0, 0], [W, H], size=(17, 2))
        dets.append({"image_id": image["id"], "category_id": 1,
                     "keypoints": np.c_[xy, np.full(17, 0.5)].ravel().tolist(), "score": float(rng.uniform(0, 0.6))})
    return dets


def _pycocotools_stats(gt, dets):
    """pycocotools' own numbers, computed here without the module under test."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:5].tolist()


# --- equality with pycocotools ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_ap_equals_pycocotools_stats_on_random_data(seed, capsys):
    images, people, rng = _dataset(seed)
    gt = P.coco_ground_truth(images, people)
    dets = _detections(images, people, rng)
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    out = P.coco_keypoint_ap(gt, dets)
    expected = _pycocotools_stats(gt, dets)
    assert list(out) == ["AP", "AP50", "AP75", "AP_M", "AP_L"]
    assert list(out.values()) == expected
    assert 0.05 < out["AP"] < 0.95  # a non-trivial case: some matches, some misses
    assert gt == gt_before and dets == dets_before  # inputs untouched
    assert capsys.readouterr().out == ""  # quiet


def test_perfect_detections_score_one_and_verbose_prints():
    images, people, _ = _dataset(3)
    gt = P.coco_ground_truth(images, people)
    dets = [{"image_id": a["image_id"], "keypoints": np.array(a["keypoints"]).reshape(17, 3), "score": 1.0}
            for a in gt["annotations"]]  # [17, 3] accepted, category defaults to 1
    out = P.coco_keypoint_ap(gt, dets)
    assert out["AP"] == out["AP50"] == out["AP75"] == pytest.approx(1.0)
    assert out["AP_M"] == pytest.approx(1.0) and out["AP_L"] == pytest.approx(1.0)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        P.coco_keypoint_ap(gt, dets, verbose=True)
    assert "Average Precision" in buffer.getvalue()


# --- the ground-truth builder ---------------------------------------------------------------------------------
def test_coco_ground_truth_fields_by_hand():
    kpts = np.zeros((1, 17, 3))
    kpts[0, 0] = [50, 40, 2]
    kpts[0, 5] = [45, 60, 1]
    kpts[0, 6] = [7, 7, 0]  # unlabelled: stored as zeros
    gt = P.coco_ground_truth([{"id": 7, "width": 100, "height": 80}],
                             [{"keypoints": kpts, "boxes": [[30, 20, 70, 90]], "areas": [1500.0]}])
    (ann,) = gt["annotations"]
    assert ann["id"] == 1 and ann["image_id"] == 7 and ann["category_id"] == 1 and ann["iscrowd"] == 0
    assert ann["num_keypoints"] == 2 and ann["area"] == 1500.0
    assert ann["bbox"] == [30.0, 20.0, 40.0, 60.0]  # y1 = 90 clipped to the 80-pixel image
    assert len(ann["keypoints"]) == 51
    assert ann["keypoints"][0:3] == [50, 40, 2] and ann["keypoints"][15:18] == [45, 60, 1]
    assert ann["keypoints"][18:21] == [0, 0, 0]
    (cat,) = gt["categories"]
    assert cat["keypoints"] == list(COCO_KEYPOINT_NAMES) and [16, 14] in cat["skeleton"]
    assert gt["images"] == [{"id": 7, "width": 100, "height": 80}]


def test_image_without_people_is_allowed():
    gt = P.coco_ground_truth([{"id": 1, "width": 10, "height": 10}],
                             [{"keypoints": np.zeros((0, 17, 3)), "boxes": np.zeros((0, 4)), "areas": []}])
    assert gt["annotations"] == [] and len(gt["images"]) == 1


# --- bad input ------------------------------------------------------------------------------------------------
def test_empty_detections_warn_and_score_zero_or_minus_one():
    images, people, _ = _dataset(0)
    gt = P.coco_ground_truth(images, people)
    with pytest.warns(RuntimeWarning, match="no detections"):
        out = P.coco_keypoint_ap(gt, [])
    assert out["AP"] == out["AP50"] == out["AP75"] == 0.0
    assert out["AP_M"] == 0.0 and out["AP_L"] == 0.0  # the random data has both sizes
    only_large = copy.deepcopy(gt)
    only_large["annotations"] = [a for a in gt["annotations"] if a["area"] > 96**2]
    with pytest.warns(RuntimeWarning):
        out = P.coco_keypoint_ap(only_large, [])
    assert out["AP_M"] == -1.0 and out["AP_L"] == 0.0  # pycocotools' "no ground truth here"


def test_bad_detections_raise_one_line_errors():
    images, people, rng = _dataset(0)
    gt = P.coco_ground_truth(images, people)
    good = _detections(images, people, rng)[0]
    cases = [
        ({**good, "image_id": 999}, "detections\\[1\\] has image_id 999, which is not in the ground truth"),
        ({**good, "keypoints": good["keypoints"][:48]}, "has 48 values; expected 51"),
        ({**good, "category_id": 2}, "category_id 2"),
        ({k: v for k, v in good.items() if k != "score"}, "lacks 'score'"),
        ({**good, "score": float("nan")}, "non-finite"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            P.coco_keypoint_ap(gt, [good, bad])
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="gt lacks 'annotations'"):
        P.coco_keypoint_ap({"images": [], "categories": []}, [good])


def test_bad_ground_truth_raises_one_line_errors():
    image = [{"id": 1, "width": 100, "height": 80}]
    kpts = np.zeros((1, 17, 3))
    kpts[0, 0] = [50, 40, 2]

    def person(**kw):
        return [{"keypoints": kpts, "boxes": [[10, 10, 60, 70]], "areas": [900.0], **kw}]

    cases = [
        (person(boxes=[[200, 10, 260, 70]]), r"people\[0\]\['boxes'\]\[0\] = .* lies outside the 100x80 image"),
        (person(boxes=[[60, 10, 10, 70]]), "is not a box with x1 > x0"),
        (person(keypoints=np.zeros((1, 16, 3))), r"has shape \(1, 16, 3\); expected \[N, 17, 3\]"),
        (person(areas=[0.0]), "expected a positive area"),
        (person(areas=[1.0, 2.0]), "1 keypoint sets, 1 boxes and 2 areas"),
    ]
    for persons, message in cases:
        with pytest.raises(ValueError, match=message):
            P.coco_ground_truth(image, persons)
    edge = kpts.copy()
    edge[0, 3] = [-0.34, 79.5, 2]  # in the first column's and last row's pixels under either convention
    assert len(P.coco_ground_truth(image, person(keypoints=edge))["annotations"]) == 1
    off = kpts.copy()
    off[0, 3] = [150, 40, 1]
    with pytest.raises(ValueError, match=r"\['keypoints'\]\[0, 3\] .* outside the 100x80 image; set its visibility"):
        P.coco_ground_truth(image, person(keypoints=off))
    bad_vis = kpts.copy()
    bad_vis[0, 1, 2] = 3
    with pytest.raises(ValueError, match="expected 0, 1 or 2"):
        P.coco_ground_truth(image, person(keypoints=bad_vis))
    with pytest.raises(ValueError, match="length mismatch"):
        P.coco_ground_truth(image, [])
