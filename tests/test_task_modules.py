"""The task modules added after depth and normals: DIS (complexity splits), matting (object subsets,
composites) and segmentation (colours <-> classes). Pose has its own package and tests (tests/pose/)."""

import numpy as np
import pytest
import torch

from genpercept_lib import tasks
from genpercept_lib.spec import FinetuneSpec
from genpercept_lib.tasks import dis, matting, segmentation


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
    from genpercept_lib.apps.predict import output_paths, write_outputs

    task = tasks.get("seg")
    classes = np.array([[0, 1], [30, 39]])
    colours = np.moveaxis(segmentation.classes_to_colors(classes, task.palette), 0, -1)  # [H, W, 3]
    paths = output_paths(tmp_path, __import__("pathlib").Path("x"))
    write_outputs(colours, "seg", paths)
    assert np.load(paths[0]).tolist() == classes.tolist()
    from PIL import Image

    with Image.open(paths[1]) as img:
        assert img.mode == "P" and np.asarray(img).tolist() == classes.tolist()
