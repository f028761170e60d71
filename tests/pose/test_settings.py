"""Pose's typed settings: one ``PoseSettings`` per profile, every field reachable from a notebook's overrides
(``{"tasks": {"pose": {...}}}``), a wrong one a one-line error naming it."""

import pytest

from genpercept_lib import pose, profiles
from genpercept_lib.pose import settings
from genpercept_lib.pose.settings import Augment, PoseSettings


def pose_settings(profile: str, changes: dict) -> PoseSettings:
    return settings.pose_settings(profiles.with_overrides(profiles.get_profile(profile), {"tasks": {"pose": changes}}))


def test_each_profile_has_its_crop_and_the_default_its_training():
    crops = {n: settings.crop_size(profiles.get_profile(n)) for n in profiles.PROFILE_NAMES}
    assert crops == {"smoke": (48, 64), "default": (96, 128), "paper": (192, 256)}
    default = settings.pose_settings(profiles.get_profile("default"))
    assert (default.size, default.steps, default.lr, default.augment_copies) == (128, 1200, 1.5e-3, 4)
    assert pose.POSE.settings(profiles.get_profile("default")) == default  # the task reads the same settings


@pytest.mark.parametrize("setting, value, expected", [
    ("size", 96, 96), ("steps", 50, 50), ("lr", 1e-3, 1e-3), ("crop", [64, 96], (64, 96)),
    ("feature_stride", 16, 16), ("augment_copies", 2, 2), ("train_samples", 100, 100),
    ("detections", "dets.json", "dets.json"),
])
def test_an_override_changes_one_pose_setting(setting, value, expected):
    assert getattr(pose_settings("default", {setting: value}), setting) == expected


def test_an_augment_override_changes_the_given_numbers_and_keeps_the_profiles_others():
    aug = pose_settings("default", {"augment": {"rotate_prob": 0.5}}).augment
    assert aug == Augment(shift=0.10, shift_prob=1.0, scale=0.15, rotate_prob=0.5)


def test_the_feature_stride_follows_the_model_unless_set():
    assert settings.feature_stride(profiles.get_profile("smoke")) == 8
    assert settings.feature_stride(profiles.get_profile("paper")) == 16
    assert settings.feature_stride(profiles.with_overrides(profiles.get_profile("smoke"),
                                                           {"tasks": {"pose": {"feature_stride": 16}}})) == 16


@pytest.mark.parametrize("changes, match", [
    ({"crop": [48]}, r"tasks.pose.crop=\(48,\): expected a \(width, height\) pair of integers >= 16"),
    ({"feature_stride": 4}, r"tasks.pose.feature_stride=4: expected 8 or 16"),
    ({"augment_copies": -1}, r"tasks.pose.augment_copies=-1: expected an integer >= 0"),
    ({"augment": {"shift_prob": 2}}, r"tasks.pose.augment.shift_prob=2: expected a probability in \[0, 1\]"),
    ({"augment": 3}, r"tasks.pose.augment=3: expected a dict of its settings"),
    ({"train_samples": 0}, r"tasks.pose.train_samples=0: expected an integer >= 1"),
    ({"detections": 5}, r"tasks.pose.detections=5: expected a path to a COCO results file"),
    ({"crpo": [48, 64]}, r"unknown tasks.pose setting 'crpo': expected one of size, steps, lr, crop"),
])
def test_a_bad_pose_override_is_one_line_naming_it(changes, match):
    with pytest.raises(profiles.ConfigError, match="^overrides: " + match) as err:
        pose_settings("smoke", changes)
    assert "\n" not in str(err.value)
