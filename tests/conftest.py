"""Shared fixtures: tiny seeded diffusers components stand in for Stable Diffusion 2.1."""


import pytest
import torch

# Tiny models gain nothing from threads, and extra threads thrash when other processes share the cores.
torch.set_num_threads(1)


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
