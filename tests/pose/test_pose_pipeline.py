"""The pose pipeline at smoke scale: the head's level and what keys a pose model, the training crops, training and
scoring with every reference row through the tidy row format, COCO items and the mean-pose guess, and the CLI."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from genpercept_lib import evaluate, experiment, finetune, models, pose, profiles
from genpercept_lib import prior as prior_lib
from genpercept_lib.pose import crops as C
from genpercept_lib.pose import keypoints as kp
from genpercept_lib.pose import pipeline, settings, training
from genpercept_lib.pose.model import PoseModel
from genpercept_lib.spec import FinetuneSpec


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GENPERCEPT_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=5, prior_unet_steps=5, train_steps=8)
    yield cfg, prior_lib.load_or_train_prior(cfg)
    mp.undo()


def test_pose_head_reads_the_level_its_stride_names(smoke):
    """The toy U-Net's head reads its 1/8 level through one deconvolution, SD2.1's (and ``feature_stride=16``)
    the 1/16 level through ViTPose's two; either way the heatmaps are 1/4 of the crop, and the stride is part of
    the model's cache key; a stride the head cannot reach is a one-line error."""
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    assert settings.feature_stride(cfg) == 8 and settings.feature_stride(profiles.get_profile("paper")) == 16
    w, h = settings.crop_size(cfg)
    z = torch.zeros(2, 4, h // 8, w // 8)
    for stride, deconvs in ((8, 1), (16, 2)):
        c = profiles.with_overrides(cfg, {"tasks": {"pose": {"feature_stride": stride}}})
        model = pose.initial_model(c, spec, prior).eval()
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.head.modules()) == deconvs
        cond = finetune.training_cond(prior, model.unet, 2)
        with torch.no_grad():
            assert model(z, cond).shape == (2, 17, h // 4, w // 4)
    sixteen = profiles.with_overrides(cfg, {"tasks": {"pose": {"feature_stride": 16}}})
    assert finetune.finetune_folder(sixteen, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    with pytest.raises(profiles.ConfigError, match=r"^overrides: tasks.pose.feature_stride=4: expected 8 or 16"):
        settings.feature_stride(profiles.with_overrides(cfg, {"tasks": {"pose": {"feature_stride": 4}}}))


def test_pose_training_data_adds_augmented_copies_and_the_guess_ignores_them(smoke):
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    assert len(training.training_data(cfg, spec)["crop"]) == len(
        training.training_data(cfg, spec, augment=False)["crop"])  # off unless asked for
    on = profiles.with_overrides(cfg, {"tasks": {"pose": {"augment_copies": 2}}})
    plain = training.training_data(on, spec, augment=False)
    full = training.training_data(on, spec)
    people = len(plain["crop"]) // 2  # originals and their mirror images
    assert len(full["crop"]) == len(plain["crop"]) + 2 * people
    assert finetune.finetune_folder(on, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    np.testing.assert_array_equal(full["crop"][:len(plain["crop"])], plain["crop"])
    assert full["crop"].shape[1:] == plain["crop"].shape[1:] and full["joints"].shape[1:] == (17, 3)


def test_pose_trains_and_is_scored_with_every_reference(smoke):
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    with pytest.raises(ValueError, match="the pose task runs one_step"):
        FinetuneSpec(task="pose", formulation="stochastic")
    net, history = pose.finetune(cfg, spec, prior)
    assert isinstance(net, PoseModel) and len(history) == cfg.train_steps
    sets = evaluate.eval_domains(cfg, "pose")
    table = pose.run(cfg, prior, spec, sets)
    refs = pose.references(cfg, prior, spec, sets)
    assert list(refs.kind.unique()) == ["untrained", "image-blind", "heatmap-ceiling"]
    assert table.AP.between(0, 1).all() and set(table.domain) == set(sets)
    ceiling = refs[(refs.kind == "heatmap-ceiling") & (refs.domain == "heldout_gt_boxes")].AP.item()
    assert ceiling > 0.3  # the ground truth through the heatmaps comes back close to where it was


def test_real_pose_items_use_a_detections_file(tmp_path):
    item = {"rgb": np.zeros((3, 40, 60), np.float32), "keypoints": np.zeros((1, 17, 3), np.float32),
            "boxes": np.array([[10, 5, 20, 30]], np.float32), "image_id": 7, "areas": np.array([400.0])}
    cfg = profiles.get_profile("paper")
    gt_boxes = pose.POSE.real_item(cfg, item)
    assert gt_boxes["boxes"].tolist() == [[10, 5, 30, 35]] and gt_boxes["det_boxes"].tolist() == [[10, 5, 30, 35]]
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 7, "category_id": 1, "bbox": [50, 30, 20, 20], "score": 0.9},
                                {"image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    cfg = profiles.with_overrides(cfg, {"tasks": {"pose": {"detections": str(dets)}}})
    detected = pose.POSE.real_item(cfg, item)
    assert detected["det_boxes"].tolist() == [[50, 30, 60, 40]]  # clipped to the 60 x 40 image
    assert detected["det_scores"].tolist() == pytest.approx([0.9])


def test_real_pose_image_blind_guess_is_the_coco_training_mean_pose(tmp_path, monkeypatch):
    """Paper profile: the mean pose comes from COCO train2017's annotations (and their mirrors), never from a
    toy render of n_train scenes."""
    from data import reader_fixtures as fx

    fx.make_coco(tmp_path / "coco", splits=("train2017", "val2017"))
    cfg = profiles.get_profile("paper")
    cfg = profiles.with_overrides(cfg, {"tasks": {"pose": {"crop": [48, 64]}},
                                        "real": {"roots": {"coco": str(tmp_path / "coco")}}})
    monkeypatch.setattr(training, "toy_scenes", lambda *a, **k: pytest.fail("rendered toy scenes"))
    spec = FinetuneSpec(task="pose")
    crops = training.CocoCrops(cfg, spec)
    assert training.CocoCrops(cfg, spec).ds is crops.ds  # COCO's annotation file is loaded once per process
    joints = crops.joints()  # the one labelled person of the fixture
    assert joints.shape == (1, 17, 3)
    expected = C.mean_pose(np.concatenate([joints, C.flip_joints(joints, 48)]))
    guess = pipeline.blind_guesser(cfg, spec)
    box = np.array([[1, 2, 4, 6]], np.float32)  # the person's own box, xyxy
    (det,) = guess({"det_boxes": box, "det_scores": [1.0], "image_id": 1})
    center, scale = kp.box_to_center_scale(box[0], 48 / 64)
    back = kp.apply_affine(np.asarray(det["keypoints"]).reshape(17, 3)[:, :2],
                                kp.crop_transform(center, scale, (48, 64)))
    assert np.allclose(back, expected, atol=1e-3)


def test_pose_crop_size_keys_the_model(smoke):
    """A pose model trained on 48 x 64 crops is never served for 96 x 128 crops (``PoseSettings.crop``)."""
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    large_crops = profiles.with_overrides(cfg, {"tasks": {"pose": {"crop": [96, 128]}}})
    assert settings.crop_size(large_crops) == (96, 128)
    assert finetune.finetune_folder(large_crops, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    depth = FinetuneSpec()
    assert finetune.finetune_folder(cfg, depth, prior) == finetune.finetune_folder(
        large_crops, depth, prior)  # other tasks: unchanged


def test_pose_builds_its_training_crops_once_per_seed(smoke, monkeypatch):
    """Notebook 06's prior and from-scratch models (same seed) share one set of crops, jittered copies and latents."""
    cfg, prior = smoke
    calls = []
    real = training.encode_training_set
    monkeypatch.setattr(training, "encode_training_set", lambda *a: calls.append(a[1]) or real(*a))
    models._ENCODED.clear()
    a = training.training_source(cfg, FinetuneSpec(task="pose"), prior.vae)
    b = training.training_source(cfg, FinetuneSpec(task="pose", init="scratch"), prior.vae)
    assert len(calls) == 1 and torch.equal(a.data["z_x"], b.data["z_x"]) and a.data["z_x"] is not b.data["z_x"]
    training.training_source(cfg, FinetuneSpec(task="pose", seed=1), prior.vae)  # other jittered copies
    assert len(calls) == 2


def test_lr_flip_p_does_not_key_pose(smoke):
    """Pose mirrors its crops itself: the dense tasks' scene flip is not part of a pose model's key."""
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    assert finetune.finetune_folder(cfg, spec, prior) == finetune.finetune_folder(cfg.replace(lr_flip_p=0.0), spec,
                                                                                   prior)


def test_pose_and_dense_rows_refuse_each_other_in_one_line(smoke):
    """Each pipeline names the reference kinds it makes; the pose pipeline refuses a dense task's spec."""
    cfg, prior = smoke
    with pytest.raises(ValueError, match="pose reference kinds .'vae-ceiling'.: expected some of untrained"):
        pose.references(cfg, prior, FinetuneSpec(task="pose"), [], kinds=("vae-ceiling",))
    with pytest.raises(ValueError, match="reference kinds .'heatmap-ceiling'.: expected some of untrained"):
        experiment.references(cfg, prior, FinetuneSpec(), [], kinds=("heatmap-ceiling",))
    with pytest.raises(ValueError, match="the pose pipeline runs task 'pose', not 'depth'"):
        pose.finetune(cfg, FinetuneSpec(), prior)


def test_cli_trains_and_evaluates_pose(smoke, capsys):
    """``genpercept train --task pose`` trains the model notebook 06 reads (same cache folder) and scores it."""
    from genpercept_lib.apps import cli

    assert cli.main(["train", "--profile", "smoke", "--task", "pose", "--steps", "3", "--evaluate"]) == 0
    out = capsys.readouterr().out.splitlines()
    cfg = profiles.setup("smoke")
    spec = FinetuneSpec(task="pose", steps=3)
    assert out[0].startswith("pose one_step: 3 steps, last loss ")
    assert out[1] == str(finetune.finetune_folder(cfg, spec, prior_lib.load_or_train_prior(cfg)))
    assert "AP" in out[2] and "heldout_gt_boxes" in "\n".join(out[3:])


def test_paper_profile_trains_on_coco_crops_and_scores_val2017(tiny_base_dir, tmp_path, monkeypatch):
    """The real-data path: COCO train2017 people cropped per batch (pixels, encoded in the loss), val2017 scored
    with every reference row; SD2.1 is the tiny base folder."""
    from helpers import write_tiny_unet

    from data import reader_fixtures as fx

    write_tiny_unet(tiny_base_dir / "unet")
    person = [v for j in range(17) for v in (1.5 + (j % 3), 2.0 + j / 8, 2.0)]  # inside image 1's 3 x 4 box
    fx.make_coco(tmp_path / "coco", splits=("val2017", "train2017"), keypoints=person)
    monkeypatch.setenv("GENPERCEPT_SD21", str(tiny_base_dir))
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path / "cache"))
    base = profiles.get_profile("paper")
    cfg = base.replace(n_eval=2, train_steps=2, batch_size=2, grad_accum=1, mixed_precision="no", threads=1,
                       real=dataclasses.replace(base.real, roots={"coco": str(tmp_path / "coco")}),
                       tasks={"pose": {"crop": (48, 64)}})
    prior = prior_lib.load_or_train_prior(cfg)
    spec = FinetuneSpec(task="pose")
    batch = training.training_source(cfg, spec, prior.vae).batch(torch.Generator().manual_seed(0), 2)
    assert batch["crop"].shape == (2, 3, 64, 48) and batch["target"].shape == (2, 17, 16, 12)
    sets = evaluate.eval_domains(cfg, "pose")
    rows = pd.concat([pose.run(cfg, prior, spec, sets), pose.references(cfg, prior, spec, sets)], ignore_index=True)
    assert list(rows.kind) == ["model", *pose.KINDS] and set(rows.domain) == {"val2017"}
    assert rows.AP.notna().all() and rows.AP.between(-1, 1).all()
