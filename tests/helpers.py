"""Builders for tiny, offline model folders in the layouts the released checkpoints use.

``write_tiny_base(folder)`` writes what a Stable Diffusion 2.1 checkout provides to GenPercept: ``vae/``
(the tiny AutoencoderKL), ``text_encoder/`` (a 2-layer CLIPTextModel, hidden size 32 = the tiny U-Net's
cross_attention_dim) and ``tokenizer/`` (a CLIP BPE tokenizer from a hand-written vocab.json + merges.txt,
the files SD2.1 ships). ``write_tiny_unet(folder)`` saves a one-step U-Net with ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

# A handful of byte-level BPE tokens: the two specials, and enough to tokenize "a photo".
TINY_VOCAB = ["<|startoftext|>", "<|endoftext|>", "a</w>", "p", "h", "o", "t", "o</w>", "ph", "ot", "phot",
              "photo</w>", "!</w>"]
TINY_MERGES = ["p h", "o t", "ph ot", "phot o</w>"]


def write_tiny_tokenizer(folder: str | Path) -> Path:
    """vocab.json, merges.txt and tokenizer_config.json of a tiny CLIPTokenizer (no hub access)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(TINY_VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def build_tiny_text_encoder(hidden_size: int = 32, seed: int = 0):
    """A seeded 2-layer CLIPTextModel whose width matches the tiny U-Net's cross_attention_dim."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


def write_tiny_base(folder: str | Path, vae_overrides: dict | None = None, text_hidden_size: int = 32
                    ) -> Path:
    """A base folder in diffusers layout: vae/, text_encoder/, tokenizer/ (tiny, random, offline)."""
    from genpercept_lib import models

    folder = Path(folder)
    models.build_vae("tiny", seed=0, **(vae_overrides or {})).save_pretrained(folder / "vae")
    build_tiny_text_encoder(text_hidden_size).save_pretrained(folder / "text_encoder")
    write_tiny_tokenizer(folder / "tokenizer")
    return folder


def write_tiny_unet(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny U-Net folder (config.json + diffusion_pytorch_model.safetensors), like unet_depth_v2/."""
    from genpercept_lib import models

    folder = Path(folder)
    models.build_unet("tiny", seed=seed, **overrides).save_pretrained(folder)
    return folder


def record_threads(monkeypatch, module, name: str, seen: dict, key: str | None = None) -> None:
    """Wrap ``module.<name>`` so that each call records the torch thread count it runs with in ``seen[key]``."""
    original = getattr(module, name)

    def spy(*args, **kwargs):
        seen[key or name] = torch.get_num_threads()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads (a process with another count than a profile's), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
