"""Shared fixtures: tiny seeded diffusers components stand in for Stable Diffusion 2.1."""


import os

import pytest
import torch

# Tiny models gain nothing from threads, and extra threads thrash when other processes share the cores.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test`: one worker a core, a test file a unit of work), the files with tests marked
    `notebooks` (papermill runs: every notebook end to end, ~7 of the suite's ~14 minutes on a slow 2-core machine,
    and test_reproduce.py's ~3) go first, so that each starts on a worker at once rather than one worker being
    left with a long file at the end. A plain `pytest` keeps the file order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("notebooks")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the file order, and within a file, is kept


@pytest.fixture(scope="session")
def tiny_unet():
    from genpercept_lib import models

    return models.build_unet("tiny", seed=0).eval()


@pytest.fixture(scope="session")
def tiny_vae():
    from genpercept_lib import models

    return models.build_vae("tiny", seed=0).eval()


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A base folder in SD2.1's diffusers layout (vae/, text_encoder/, tokenizer/), tiny and offline."""
    from helpers import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory):
    """A one-step GenPercept U-Net folder (config.json + diffusion_pytorch_model.safetensors), tiny."""
    from helpers import write_tiny_unet

    return write_tiny_unet(tmp_path_factory.mktemp("tiny_unet"))
