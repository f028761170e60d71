"""Shared fixtures: tiny seeded diffusers components stand in for Stable Diffusion 2.1."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_unet():
    from genpercept_lib import models

    return models.build_unet("tiny", seed=0).eval()


@pytest.fixture(scope="session")
def tiny_vae():
    from genpercept_lib import models

    return models.build_vae("tiny", seed=0).eval()
