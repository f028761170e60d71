"""The four task modules added after depth and normals: DIS (complexity splits), matting (object subsets,
composites), segmentation (colours <-> classes) and pose (crops, heatmaps, the training and evaluation path)."""

import json

import numpy as np
import pytest
import torch

from genpercept_lib import evaluate, experiment, finetune, profiles, tasks
from genpercept_lib import prior as prior_lib
from genpercept_lib.spec import FinetuneSpec
from genpercept_lib.tasks import dis, matting, pose, segmentation


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GENPERCEPT_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=5, prior_unet_steps=5, train_steps=8)
    yield cfg, prior_lib.load_or_train_prior(cfg)
    mp.undo()


# -- DIS ------------------------------------------------------------------------------------------------------
def test_isoperimetric_quotient_orders_shapes_by_complexity():
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2).astype(float)
    square = np.zeros((64, 64))
    square[10:50, 10:50] = 1
    comb = np.zeros((64, 64))
    comb[10:50, 10:50:4] = 1  # thin teeth
    q = [dis.isoperimetric_quotient(m) for m in (disc, square, comb)]
    # pixel-edge perimeter: exactly 4/pi for an axis-aligned square, ~16/pi^2 for a digital disc (staircase)
    assert q[1] == pytest.approx(4 / np.pi) and q[0] == pytest.approx(16 / np.pi**2, rel=0.05) and q[2] > 5 * q[0]
    assert np.isnan(dis.isoperimetric_quotient(np.zeros((4, 4))))


def test_complexity_splits_partition_the_pool():
    rng = np.random.default_rng(0)
    masks = (rng.random((40, 16, 16)) > 0.7).astype(float)
    masks[3] = 0  # an empty mask is left out
    splits = dis.complexity_splits(masks)
    assert list(splits) == list(dis.SPLITS)
    every = np.concatenate(list(splits.values()))
    assert sorted(every) == [i for i in range(40) if i != 3]
    ipq = [np.mean([dis.isoperimetric_quotient(masks[i]) for i in splits[s]]) for s in dis.SPLITS[1:]]
    assert ipq == sorted(ipq)  # TE1 simplest .. TE4 most complex


def test_dis_labels_span_minus_one_to_one_and_every_pixel_counts():
    mask = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])
    image, valid = tasks.get("dis").label_to_image(mask)
    assert image.shape == (1, 3, 2, 2) and image.min() == -1 and image.max() == 1 and valid.all()


# -- matting ----------------------------------------------------------------------------------------------------
def test_people_subset_and_object_sets_come_from_the_foreground_class():
    from genpercept_lib.data import toyworld

    person, fence = toyworld.CLASSES.index("person"), toyworld.CLASSES.index("fence")
    alpha = np.zeros((3, 4, 4), np.float32)
    alpha[:, 1:3, 1:3] = 1.0
    semantic = np.zeros((3, 4, 4), np.int64)
    semantic[0], semantic[1] = person, fence
    data = {"alpha": alpha, "semantic": semantic}
    assert matting.foreground_class(data).tolist() == [person, fence, 0]
    assert matting.people_scenes(data).tolist() == [True, False, False]
    assert FinetuneSpec(task="matting", train_subset="people").label().endswith("trained on people")
    with pytest.raises(ValueError, match="train_subset='cats': expected one of all, people"):
        FinetuneSpec(task="matting", train_subset="cats")


def test_a_look_alike_outside_the_matte_makes_the_foreground_ambiguous():
    semantic = np.zeros((8, 12), np.int64)
    alpha = np.zeros((8, 12), np.float32)
    semantic[2:6, 1:3] = 4  # the matted person, 8 px
    alpha[2:6, 1:3] = 1.0
    assert not matting.look_alike_elsewhere(alpha, semantic)  # the only one of its class
    semantic[2:6, 8:9] = 4  # another person, 4 px = half the foreground's area, not matted
    assert matting.look_alike_elsewhere(alpha, semantic)
    assert not matting.look_alike_elsewhere(alpha, semantic, share=0.6)
    semantic[2:6, 8:9] = 7  # another class: no ambiguity
    assert not matting.look_alike_elsewhere(alpha, semantic)
    assert not matting.look_alike_elsewhere(np.zeros_like(alpha), semantic)  # no foreground at all


def test_matting_composite_on_a_checkerboard():
    out = np.array([[1.0, 0.0]])
    rgb = np.array([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    pic = np.asarray(tasks.get("matting").colored(out, rgb)) / 255.0
    np.testing.assert_allclose(pic[0, 0], [1, 0, 0], atol=1 / 255)  # opaque: the image
    assert np.allclose(pic[0, 1], pic[0, 1, 0]) and 0.5 < pic[0, 1, 0] < 1  # transparent: grey checkerboard


# -- segmentation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seg", "seg_toy"])
def test_colours_round_trip_to_the_class_map_exactly(name):
    task = tasks.get(name)
    classes = torch.from_numpy(np.random.default_rng(1).integers(0, len(task.palette), (2, 7, 9)))
    classes[0, 0, 0] = segmentation.IGNORE
    image, valid = task.label_to_image(classes)
    assert not valid[0, 0, 0] and valid.sum() == classes.numel() - 1
    for i in range(2):
        back = task.classes(((image[i] + 1) / 2).numpy())
        known = classes[i] != segmentation.IGNORE
        assert (back[known.numpy()] == classes[i][known].numpy()).all()


def test_far_colours_are_decoded_and_counted_unknown_ids_are_errors():
    task = tasks.get("seg_toy")
    gt = np.zeros((2, 2), np.int64)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 21)] * 3, indexing="ij"), -1).reshape(-1, 3)  # [N, 3]
    far = np.linalg.norm(grid[:, None] - task.palette[None], axis=-1).min(1)  # [N] distance to the nearest entry
    between = grid[far.argmax()]  # the colour farthest from every palette entry
    assert far.max() > task.tolerance
    pred = np.moveaxis(np.stack([[task.palette[0], task.palette[0]], [between, between]]), -1, 0)
    scores = task.scores([({"semantic": gt}, pred)])
    assert scores["between_colors"] == pytest.approx(0.5) and 0 <= scores["mIoU"] <= 1
    with pytest.raises(ValueError, match=r"class ids \[99\] outside the palette"):
        task.label_to_image(torch.full((1, 2, 2), 99))


def test_blend_miou_counts_a_third_class_painted_along_an_edge():
    """Two classes side by side; a palette whose third colour is their blend paints it along the edge (and the
    third class, absent from the ground truth, joins the mean at IoU 0); a palette without it does not."""
    labels = np.zeros((1, 16, 16), np.int64)
    labels[:, :, 12:] = 1  # the edge falls inside an 8 x 8 block, as most edges do
    aliased = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.5, 0.0, 1.0]])  # class 2 = blend of 0 and 1
    clean = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # the blur moves the edge either way (0.375: a block straddling it decodes whole to one side), but only the
    # aliased palette adds a third class at IoU 0: over three classes instead of two
    assert segmentation.blend_miou(clean, labels) == pytest.approx(0.375)
    assert segmentation.blend_miou(aliased, labels) == pytest.approx(2 / 9)
    assert segmentation.blend_miou(aliased, labels, factor=1) == pytest.approx(1.0)  # no blur, no blend


def test_toy_palette_keeps_blends_of_indoor_classes_indoors():
    """The toy palette's rule (toyworld.SEMANTIC_COLORS): every blend of two classes of the indoor training domain
    decodes to an indoor class, and the indoor classes are the ones toy Hypersim's scenes hold."""
    from genpercept_lib.data import toyworld

    task = tasks.get("seg_toy")
    indoor = [toyworld.CLASSES.index(c) for c in toyworld.INDOOR_CLASSES]
    for a in indoor:
        for b in indoor:
            for t in np.linspace(0, 1, 21):
                blend = t * task.palette[a] + (1 - t) * task.palette[b]  # [3]
                assert task.classes(blend[:, None, None])[0, 0] in indoor, (a, b, t)
    seen = set(np.unique(toyworld.render_batch("toy_hypersim", range(24), 32)["semantic"]).tolist()) - {255}
    assert seen <= set(indoor)
    grid = toyworld.GRID_COLORS_V1  # the palette before: a blend of two indoor classes decodes outdoors
    furniture, ceiling, sidewalk = (toyworld.CLASSES.index(c) for c in ("furniture", "ceiling", "sidewalk"))
    mid = (grid[furniture] + grid[ceiling]) / 2
    assert segmentation.colors_to_classes(mid[:, None, None], grid)[0][0, 0] == sidewalk


def test_seg_predict_outputs_class_map_and_palette_png(tmp_path):
    from genpercept_lib.predict import output_paths, write_outputs

    task = tasks.get("seg")
    classes = np.array([[0, 1], [30, 39]])
    colours = np.moveaxis(segmentation.classes_to_colors(classes, task.palette), 0, -1)  # [H, W, 3]
    paths = output_paths(tmp_path, __import__("pathlib").Path("x"))
    write_outputs(colours, "seg", paths)
    assert np.load(paths[0]).tolist() == classes.tolist()
    from PIL import Image

    with Image.open(paths[1]) as img:
        assert img.mode == "P" and np.asarray(img).tolist() == classes.tolist()


# -- pose --------------------------------------------------------------------------------------------------------
def test_flip_crop_mirrors_pixels_and_swaps_left_right():
    crop = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)[:1].repeat(3, 0)  # [3, 3, 4]
    joints = np.zeros((17, 3), np.float32)
    joints[5] = (0, 1, 2)   # left shoulder at the left edge
    flipped, fj = pose.flip_crop(crop, joints)
    assert np.array_equal(flipped[..., 0], crop[..., -1])
    assert fj[6].tolist() == [3, 1, 2] and fj[5, 2] == 0  # now the right shoulder, at x = w - 1


def test_augmented_crop_moves_pixels_and_joints_together():
    """mmpose's RandomBBoxTransform as drawn here: whatever shift, scale and rotation a draw gives, a bright dot
    at a joint lands where the joint's new coordinates say (within 1.5 crop pixels), and joints pushed out of the crop
    become invisible."""
    rgb = np.zeros((3, 128, 128), np.float32)
    joints = np.zeros((17, 3), np.float32)
    joints[:, 2] = 2
    joints[:, 0], joints[:, 1] = 64, 64
    joints[0] = (60, 40, 2)  # the nose: a bright dot
    rgb[:, 39:42, 59:62] = 1.0
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20):
        crop, out = pose.augmented_crop(rgb, (44, 30, 84, 100), joints, (48, 64), rng)
        assert crop.shape == (3, 64, 48) and out.shape == (17, 3)
        if out[0, 2] > 0 and 2 <= out[0, 0] < 46 and 2 <= out[0, 1] < 62:
            y, x = np.unravel_index(crop[0].argmax(), crop[0].shape)
            assert abs(x - out[0, 0]) <= 1.5 and abs(y - out[0, 1]) <= 1.5  # a 3 px dot, resampled
            checked += 1
        inside = (out[:, 0] >= 0) & (out[:, 0] < 48) & (out[:, 1] >= 0) & (out[:, 1] < 64)
        assert (out[~inside, 2] == 0).all()
    assert checked >= 10  # most draws keep the nose inside the crop
    tail = pose._truncnorm(np.random.default_rng(1), 10_000)
    assert np.abs(tail).max() <= 1 and abs(tail.mean()) < 0.05


def test_augmented_crop_follows_its_settings():
    """``settings`` replace mmpose's defaults: with no shift, no scaling and no rotation the augmented crop is the
    plain crop; the default profile's box noise never rotates and never moves the centre by more than 0.10 of the
    padded box."""
    rgb = np.random.default_rng(3).random((3, 128, 128)).astype(np.float32)
    joints = np.zeros((17, 3), np.float32)
    joints[:, 0], joints[:, 1], joints[:, 2] = np.linspace(50, 70, 17), np.linspace(30, 90, 17), 2
    box = np.array([40, 20, 80, 100], np.float32)
    still = {**pose.AUGMENT, "shift": 0.0, "scale": 0.0, "rotate_prob": 0.0}
    crop, out = pose.augmented_crop(rgb, box, joints, (48, 64), np.random.default_rng(0), still)
    np.testing.assert_allclose(crop, pose.warp(rgb, *pose.kp.box_to_center_scale(box, 48 / 64), (48, 64)), atol=1e-6)
    np.testing.assert_allclose(out, pose.crop_joints(joints, box, (48, 64)), atol=1e-4)
    toy = profiles.get_profile("default").extra["pose_augment"]
    assert toy["rotate_prob"] == 0 and toy["shift"] <= pose.JITTER[0] and toy["scale"] <= pose.JITTER[1]
    with pytest.raises(ValueError, match="pose_augment.*'shfit'"):
        pose.augment_settings(profiles.get_profile("smoke").replace(extra={"pose_augment": {"shfit": 0.1}}))


def test_pose_head_reads_the_level_its_stride_names(smoke):
    """The toy U-Net's head reads its 1/8 level through one deconvolution, SD2.1's (and ``pose_feature_stride=16``)
    the 1/16 level through ViTPose's two; either way the heatmaps are 1/4 of the crop, and the stride is part of
    the model's cache key; a stride the head cannot reach is a one-line error."""
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    assert pose.feature_stride(cfg) == 8 and pose.feature_stride(profiles.get_profile("paper")) == 16
    w, h = pose.crop_size(cfg)
    z = torch.zeros(2, 4, h // 8, w // 8)
    for stride, deconvs in ((8, 1), (16, 2)):
        c = cfg.replace(extra={**cfg.extra, "pose_feature_stride": stride})
        model = finetune.initial_model(c, spec, prior).eval()
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.head.modules()) == deconvs
        cond = finetune.training_cond(prior, model.unet, 2)
        with torch.no_grad():
            assert model(z, cond).shape == (2, 17, h // 4, w // 4)
    sixteen = cfg.replace(extra={**cfg.extra, "pose_feature_stride": 16})
    assert finetune.finetune_folder(sixteen, spec, prior) != finetune.finetune_folder(cfg, spec, prior)
    with pytest.raises(ValueError, match="pose_feature_stride"):
        pose.feature_stride(cfg.replace(extra={"pose_feature_stride": 4}))


def test_pose_training_data_adds_augmented_copies_and_the_guess_ignores_them(smoke):
    cfg, prior = smoke
    spec = FinetuneSpec(task="pose")
    assert len(tasks.get("pose").training_data(cfg, spec)["crop"]) == len(
        tasks.get("pose").training_data(cfg, spec, augment=False)["crop"])  # off unless asked for
    on = cfg.replace(extra={**cfg.extra, "pose_augment_copies": 2})
    plain = tasks.get("pose").training_data(on, spec, augment=False)
    full = tasks.get("pose").training_data(on, spec)
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
    net, history = finetune.finetune(cfg, spec, prior)
    assert isinstance(net, pose.PoseModel) and len(history) == cfg.train_steps
    sets = evaluate.eval_domains(cfg, "pose")
    table = experiment.run(cfg, prior, spec, sets)
    refs = experiment.references(cfg, prior, spec, sets)
    assert list(refs.kind.unique()) == ["untrained", "image-blind", "heatmap-ceiling"]
    assert table.AP.between(0, 1).all() and set(table.domain) == set(sets)
    ceiling = refs[(refs.kind == "heatmap-ceiling") & (refs.domain == "heldout_gt_boxes")].AP.item()
    assert ceiling > 0.3  # the ground truth through the heatmaps comes back close to where it was


def test_real_pose_items_use_a_detections_file(tmp_path):
    item = {"rgb": np.zeros((3, 40, 60), np.float32), "keypoints": np.zeros((1, 17, 3), np.float32),
            "boxes": np.array([[10, 5, 20, 30]], np.float32), "image_id": 7, "areas": np.array([400.0])}
    cfg = profiles.get_profile("paper")
    gt_boxes = tasks.get("pose").real_item(cfg, item)
    assert gt_boxes["boxes"].tolist() == [[10, 5, 30, 35]] and gt_boxes["det_boxes"].tolist() == [[10, 5, 30, 35]]
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 7, "category_id": 1, "bbox": [50, 30, 20, 20], "score": 0.9},
                                {"image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    cfg = cfg.replace(extra={**cfg.extra, "pose_detections": str(dets)})
    detected = tasks.get("pose").real_item(cfg, item)
    assert detected["det_boxes"].tolist() == [[50, 30, 60, 40]]  # clipped to the 60 x 40 image
    assert detected["det_scores"].tolist() == pytest.approx([0.9])


def test_real_pose_image_blind_guess_is_the_coco_training_mean_pose(tmp_path, monkeypatch):
    """Paper profile: the mean pose comes from COCO train2017's annotations (and their mirrors), never from a
    toy render of n_train scenes."""
    from data import reader_fixtures as fx

    fx.make_coco(tmp_path / "coco", splits=("train2017", "val2017"))
    cfg = profiles.get_profile("paper")
    cfg = cfg.replace(extra={**cfg.extra, "pose_crop": (48, 64), "roots": {"coco": str(tmp_path / "coco")}})
    monkeypatch.setattr(pose.Pose, "toy_scenes", lambda *a, **k: pytest.fail("rendered toy scenes"))
    task, spec = tasks.get("pose"), FinetuneSpec(task="pose")
    crops = pose.CocoCrops(cfg, spec, task)
    assert pose.CocoCrops(cfg, spec, task).ds is crops.ds  # COCO's annotation file is loaded once per process
    joints = crops.joints()  # the one labelled person of the fixture
    assert joints.shape == (1, 17, 3)
    expected = pose.mean_pose(np.concatenate([joints, pose.flip_joints(joints, 48)]))
    guess = task.blind_guesser(cfg, spec)
    box = np.array([[1, 2, 4, 6]], np.float32)  # the person's own box, xyxy
    (det,) = guess({"det_boxes": box, "det_scores": [1.0], "image_id": 1})
    center, scale = pose.kp.box_to_center_scale(box[0], 48 / 64)
    back = pose.kp.apply_affine(np.asarray(det["keypoints"]).reshape(17, 3)[:, :2],
                                pose.kp.crop_transform(center, scale, (48, 64)))
    assert np.allclose(back, expected, atol=1e-3)
