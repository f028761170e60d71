"""Person crops: flips swap left and right, mmpose's box augmentation moves pixels and joints together and follows
its settings."""

import numpy as np
import pytest

from genpercept_lib import profiles
from genpercept_lib.pose import crops, settings
from genpercept_lib.pose import keypoints as kp


def test_flip_crop_mirrors_pixels_and_swaps_left_right():
    crop = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)[:1].repeat(3, 0)  # [3, 3, 4]
    joints = np.zeros((17, 3), np.float32)
    joints[5] = (0, 1, 2)   # left shoulder at the left edge
    flipped, fj = crops.flip_crop(crop, joints)
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
        crop, out = crops.augmented_crop(rgb, (44, 30, 84, 100), joints, (48, 64), rng)
        assert crop.shape == (3, 64, 48) and out.shape == (17, 3)
        if out[0, 2] > 0 and 2 <= out[0, 0] < 46 and 2 <= out[0, 1] < 62:
            y, x = np.unravel_index(crop[0].argmax(), crop[0].shape)
            assert abs(x - out[0, 0]) <= 1.5 and abs(y - out[0, 1]) <= 1.5  # a 3 px dot, resampled
            checked += 1
        inside = (out[:, 0] >= 0) & (out[:, 0] < 48) & (out[:, 1] >= 0) & (out[:, 1] < 64)
        assert (out[~inside, 2] == 0).all()
    assert checked >= 10  # most draws keep the nose inside the crop
    tail = crops._truncnorm(np.random.default_rng(1), 10_000)
    assert np.abs(tail).max() <= 1 and abs(tail.mean()) < 0.05


def test_augmented_crop_follows_its_settings():
    """``settings`` replace mmpose's defaults: with no shift, no scaling and no rotation the augmented crop is the
    plain crop; the default profile's box noise never rotates and never moves the centre by more than 0.10 of the
    padded box."""
    rgb = np.random.default_rng(3).random((3, 128, 128)).astype(np.float32)
    joints = np.zeros((17, 3), np.float32)
    joints[:, 0], joints[:, 1], joints[:, 2] = np.linspace(50, 70, 17), np.linspace(30, 90, 17), 2
    box = np.array([40, 20, 80, 100], np.float32)
    still = settings.Augment(shift=0.0, scale=0.0, rotate_prob=0.0)
    crop, out = crops.augmented_crop(rgb, box, joints, (48, 64), np.random.default_rng(0), still)
    np.testing.assert_allclose(crop, crops.warp(rgb, *kp.box_to_center_scale(box, 48 / 64), (48, 64)), atol=1e-6)
    np.testing.assert_allclose(out, crops.crop_joints(joints, box, (48, 64)), atol=1e-4)
    toy = settings.pose_settings(profiles.get_profile("default")).augment
    assert toy.rotate_prob == 0 and toy.shift <= settings.JITTER[0] and toy.scale <= settings.JITTER[1]
    with pytest.raises(profiles.ConfigError, match=r"^overrides: unknown tasks.pose.augment setting 'shfit'"):
        settings.pose_settings(profiles.with_overrides(profiles.get_profile("smoke"),
                                                       {"tasks": {"pose": {"augment": {"shfit": 0.1}}}}))
