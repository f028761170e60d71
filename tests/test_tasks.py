"""The task registry: lookups, one-line errors, and the promise that a new task is one module - a throw-away
"grey" task (image luminance) is registered here and fine-tuned and evaluated in the smoke profile through the
unchanged trainer, evaluation and reference rows."""

import numpy as np
import pandas as pd
import pytest
import torch

from genpercept_lib import evaluate, experiment, finetune, profiles, tasks
from genpercept_lib import prior as prior_lib
from genpercept_lib.spec import FinetuneSpec


class Grey(tasks.Task):
    """Predict the image's luminance (a task nobody needs, defined in a test and nowhere else)."""

    name = "grey"
    channels = 1
    label_key = "rgb"
    metrics = ("MAE",)
    lower_is_better = ("MAE",)
    headline = "MAE"
    pool_keys = ("rgb", "valid")

    def label_to_image(self, label, valid=None):
        lum = (0.299 * label[:, 0] + 0.587 * label[:, 1] + 0.114 * label[:, 2]).float()  # [B, H, W]
        return (lum * 2 - 1)[:, None].repeat(1, 3, 1, 1), torch.ones_like(lum, dtype=torch.bool)

    def scores(self, pairs, **protocol):
        errs = [np.abs(pred - (0.299 * item["rgb"][0] + 0.587 * item["rgb"][1] + 0.114 * item["rgb"][2])).mean()
                for item, pred in pairs]
        return {"MAE": float(np.mean(errs))}

    def image_blind(self, labels, valid):
        lum = 0.299 * labels[:, 0] + 0.587 * labels[:, 1] + 0.114 * labels[:, 2]  # [N, H, W]
        return lum.mean(0)


@pytest.fixture
def grey(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    task = tasks.register(Grey())
    yield task
    tasks.unregister("grey")


def test_builtin_tasks_and_lookups():
    assert {"depth", "normal", "disparity"} <= set(tasks.names())
    depth = tasks.get("depth")
    assert depth.metrics == ("AbsRel", "delta1") and depth.channels == 1 and tasks.get(depth) is depth
    with pytest.raises(ValueError, match="unknown task 'albedo': expected one of depth") as err:
        tasks.get("albedo")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="registered already"):
        tasks.register(type(depth)())
    with pytest.raises(ValueError, match="unknown task 'albedo'"):
        FinetuneSpec(task="albedo")


def test_a_new_task_is_one_module(grey):
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=5, prior_unet_steps=5, train_steps=6)
    prior = prior_lib.load_or_train_prior(cfg)
    spec = FinetuneSpec(task="grey")
    unet, history = finetune.finetune(cfg, spec, prior)
    assert len(history) == 6 and np.isfinite([h["loss"] for h in history]).all()
    domains = evaluate.eval_domains(cfg, "grey")
    model = experiment.run(cfg, prior, spec, domains[:2])
    refs = experiment.references(cfg, prior, spec, domains[:2])
    table = pd.concat([model, refs], ignore_index=True)
    assert list(table.kind.unique()) == ["model", "untrained", "image-blind", "vae-ceiling"]
    assert table.MAE.between(0, 1).all() and set(table.task) == {"grey"}
    # the image-blind row is the mean training luminance, the same for every image: recompute it by hand, over the
    # scenes as rendered and mirrored (training draws each mirrored with probability lr_flip_p = 0.5)
    from genpercept_lib import sources

    train = sources.training_pool(cfg, spec)["rgb"]
    lum_train = 0.299 * train[:, 0] + 0.587 * train[:, 1] + 0.114 * train[:, 2]  # [N, H, W]
    guess = (lum_train.mean(0) + lum_train[:, :, ::-1].mean(0)) / 2  # [H, W]
    for domain in domains[:2]:
        rgb = evaluate.eval_pool(cfg, domain, "grey")["rgb"]
        lum = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
        expected = float(np.mean([np.abs(guess - x).mean() for x in lum]))
        got = table[(table.kind == "image-blind") & (table.domain == domain)].MAE.item()
        assert got == pytest.approx(expected, rel=1e-5)


def test_pixel_loss_only_where_the_task_has_one(grey):
    with pytest.raises(ValueError, match="pixel_loss=True: the grey task defines no pixel-space loss"):
        FinetuneSpec(task="grey", pixel_loss=True)
    FinetuneSpec(task="normal", pixel_loss=True)  # the authors' angular loss


def test_normal_angular_loss_is_the_angle():
    from genpercept_lib.tasks.normal import angular_loss

    pred = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    target = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert angular_loss(pred, target, torch.ones(1, 1, 1, dtype=torch.bool)).item() == pytest.approx(np.pi / 2)
    assert angular_loss(pred, target, torch.zeros(1, 1, 1, dtype=torch.bool)).item() == 0.0  # nothing valid


def test_normals_mirror_with_the_image():
    label = torch.zeros(3, 1, 2)
    label[0, 0, 0], label[2, 0, 1] = 1.0, 1.0  # left pixel faces right, right pixel faces the camera
    flipped = tasks.get("normal").flip(label)
    assert torch.equal(flipped[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(flipped[:, 0, 1], torch.tensor([-1.0, 0.0, 0.0]))


# -- depth labels as the authors normalise them (tasks/depth.py) ---------------------------------------------
def _depth_row():
    depth = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 0.0, float("nan")]]])  # [1, 1, 8]
    valid = torch.tensor([[[True] * 5 + [False] * 3]])  # 100 m: beyond the range; 0 and NaN: no depth
    return depth, valid


def test_depth_labels_far_beyond_range_and_missing_pixels_far_by_default():
    """The authors' normaliser maps every pixel with a depth (100 m beyond the range: +1 after the clip); a pixel
    without one is far (+1), as the authors' Virtual KITTI sky; valid pixels span the 2/98 % quantiles."""
    from genpercept_lib.tasks.depth import depth_to_image

    depth, valid = _depth_row()
    img, ok = depth_to_image(depth, valid)
    assert ok.tolist() == valid.tolist()
    lo, hi = np.quantile([1, 2, 3, 4, 5], [0.02, 0.98])
    expected = np.clip((np.array([1, 2, 3, 4, 5]) - lo) / (hi - lo) * 2 - 1, -1, 1)
    np.testing.assert_allclose(img[0, 0, 0, :5].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert img[0, :, 0, 5:].eq(1.0).all()  # beyond range, zero and NaN: far
    assert torch.equal(img[:, 0], img[:, 2])  # replicated to three channels


def test_depth_missing_fill_is_a_named_option_and_keys_the_prior(monkeypatch):
    from genpercept_lib.tasks.depth import Depth, depth_to_image

    depth, valid = _depth_row()
    img, _ = depth_to_image(depth, valid, missing="zero")
    assert img[0, 0, 0, 5].item() == 1.0 and img[0, 0, 0, 6:].eq(0.0).all()  # only pixels without a depth move
    with pytest.raises(ValueError, match="missing='near': expected one of far, zero"):
        Depth(missing="near")
    cfg = profiles.get_profile("default")
    far = prior_lib.prior_folder(cfg)
    zero = Depth(missing="zero")
    monkeypatch.setitem(tasks.REGISTRY, "depth", zero)
    assert "depth" not in prior_lib.prior_settings(cfg)["palettes"]  # the key priors had before the option
    assert prior_lib.prior_folder(cfg) != far  # the VAE learns other images: another prior


def test_disparity_labels_follow_the_authors_min_max_with_invalid_far():
    """ScaleShiftDisparityNormalizer: valid disparity min-max to [-1, 1] with the low end at the smallest
    disparity of any pixel with a depth (here the 100 m pixel), every invalid pixel -1."""
    depth, valid = _depth_row()
    img, ok = tasks.get("disparity").label_to_image(depth, valid)
    disp = 1.0 / np.array([1, 2, 3, 4, 5.0])
    expected = (disp - 1 / 100.0) / (1.0 - 1 / 100.0) * 2 - 1
    np.testing.assert_allclose(img[0, 0, 0, :5].numpy(), expected, rtol=1e-5)
    assert img[0, 0, 0, 0].item() == pytest.approx(1.0) and img[0, :, 0, 5:].eq(-1.0).all()
    assert ok.tolist() == valid.tolist()
