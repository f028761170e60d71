"""Build and load the U-Net and VAE that GenPercept repurposes.

* ``build_unet("sd21")`` / ``build_vae("sd21")``: the Stable Diffusion 2.1 architecture from the config JSONs
  shipped in ``genpercept_lib/configs`` (random weights: cost studies need the shape, not the values).
* ``build_unet("tiny")`` / ``build_vae("tiny")``: the small models of the toy world and of the tests.
* ``load_unet(path)`` / ``load_vae(path)``: real weights from a local diffusers folder (``save_pretrained``
  layout). Hub ids are refused with a one-line error when the hub cannot be reached: never a hang.
* ``expand_conv_in``: eq. (1) concatenates the noisy label latent with the image latent, so the U-Net's
  first convolution takes 8 channels; Marigold duplicates the pretrained weights and halves them so the
  activations keep their scale.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIGS = ("sd21", "tiny")


class ModelPathError(ValueError):
    """A model path or hub id that cannot be loaded here (the message is one line)."""


def model_config(kind: str, name: str) -> dict:
    """The shipped config dict for ``kind`` in {"unet", "vae"} and ``name`` in CONFIGS."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}: expected one of {', '.join(CONFIGS)}")
    cfg = json.loads((CONFIG_DIR / f"{name}_{kind}.json").read_text())
    cfg.pop("_class_name", None)
    return cfg


def _seeded_init(cls, config: dict, seed: int | None):
    """Instantiate ``cls`` from ``config`` with weights drawn from a seeded generator (deterministic)."""
    if seed is None:
        return cls.from_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls.from_config(config)


def build_unet(config: str | dict = "tiny", seed: int | None = 0, **overrides) -> UNet2DConditionModel:
    """A randomly initialised U-Net from a shipped config name or a config dict (``overrides`` win)."""
    cfg = dict(model_config("unet", config) if isinstance(config, str) else config)
    cfg.update(overrides)
    return _seeded_init(UNet2DConditionModel, cfg, seed)


def build_vae(config: str | dict = "tiny", seed: int | None = 0, **overrides) -> AutoencoderKL:
    """A randomly initialised VAE from a shipped config name or a config dict (``overrides`` win)."""
    cfg = dict(model_config("vae", config) if isinstance(config, str) else config)
    cfg.update(overrides)
    return _seeded_init(AutoencoderKL, cfg, seed)


def resolve_model_path(path_or_id: str | os.PathLike, subfolder: str | None = None) -> Path:
    """A local diffusers folder holding ``config.json``; anything else is a one-line ModelPathError.

    We never download: this reproduction reads weights from disk (``GENPERCEPT_SD21`` for the paper
    profile). A string shaped like a hub id (``org/name``) that is not a local folder is refused at
    once with a message that says what to do, instead of letting a download hang without network.
    """
    raw = str(path_or_id)
    path = Path(raw).expanduser()
    folder = path / subfolder if subfolder else path
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelPathError(f"{folder}: no config.json; expected a diffusers save_pretrained folder")
        return folder
    looks_like_hub_id = raw.count("/") == 1 and not raw.startswith((".", "/", "~")) and not path.exists()
    if looks_like_hub_id:
        raise ModelPathError(
            f"{raw!r} is not a local folder and hub downloads are disabled here: download it once "
            f"(e.g. `huggingface-cli download {raw} --local-dir DIR`) and pass DIR"
        )
    raise ModelPathError(f"{folder}: no such model folder; expected a diffusers folder with config.json")


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _load(cls, folder: Path, **kwargs):
    """``cls.from_pretrained(folder)`` with one-line errors that name the broken file: a config.json that is not
    JSON, a missing weights file, a truncated or corrupt safetensors file."""
    config = folder / "config.json"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ModelPathError(f"{config}: not a readable JSON config ({_reason(err)})") from None
    weights = [folder / n for n in WEIGHT_NAMES if (folder / n).is_file()]
    if not weights:
        raise ModelPathError(f"{folder}: no weights file; expected {WEIGHT_NAMES[0]} (diffusers save_pretrained)")
    if weights[0].suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights[0]), framework="pt") as f:
                for key in f.keys():  # reads every tensor: a truncated file fails here, by name
                    f.get_slice(key)
        except Exception as err:  # safetensors raises several types for a damaged file
            raise ModelPathError(f"{weights[0]}: not a readable safetensors file ({_reason(err)})") from None
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelPathError(f"{folder}: cannot load the {cls.__name__} ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load_unet(path: str | os.PathLike, subfolder: str | None = None, **kwargs) -> UNet2DConditionModel:
    """A U-Net from a local diffusers folder (``subfolder="unet"`` for a full SD2.1 checkout)."""
    return _load(UNet2DConditionModel, resolve_model_path(path, subfolder), **kwargs)


def load_vae(path: str | os.PathLike, subfolder: str | None = None, **kwargs) -> AutoencoderKL:
    """A VAE from a local diffusers folder (``subfolder="vae"`` for a full SD2.1 checkout)."""
    return _load(AutoencoderKL, resolve_model_path(path, subfolder), **kwargs)


@torch.no_grad()
def expand_conv_in(unet: UNet2DConditionModel, factor: int = 2) -> UNet2DConditionModel:
    """Widen ``conv_in`` to ``factor`` x its input channels, copying the weights and scaling by 1/factor.

    Eq. (1): the U-Net input is concat(z_t^(y), z^(x)) with 2 x 4 channels. With identical halves of the
    input, the widened layer gives exactly the old output (tested). The U-Net config is updated so
    ``save_pretrained``/``from_pretrained`` round-trip.
    """
    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels * factor, old.out_channels, old.kernel_size, old.stride, old.padding,
        device=old.weight.device, dtype=old.weight.dtype,
    )
    new.weight.copy_(old.weight.repeat(1, factor, 1, 1) / factor)  # [C_out, factor*C_in, k, k]
    new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels * factor)
    return unet


def empty_text_embedding(unet: UNet2DConditionModel, batch_size: int = 1, seq_len: int = 1) -> torch.Tensor:
    """Stand-in for the encoded empty prompt: zeros [B, seq_len, cross_attention_dim].

    GenPercept conditions on the CLIP embedding of "" (a constant). Models trained here without a text
    encoder (the toy world) use zeros, which is the same kind of constant; ``encode_empty_prompt`` gives
    the real one when a text encoder is available.
    """
    p = next(unet.parameters())
    dim = unet.config.cross_attention_dim
    return torch.zeros(batch_size, seq_len, dim, device=p.device, dtype=p.dtype)  # [B, L, D]


@torch.no_grad()
def encode_empty_prompt(text_encoder, tokenizer, prompt: str = "") -> torch.Tensor:
    """CLIP embedding of the empty prompt without padding, [1, 2, D], computed once and reused for every image.

    GenPercept (following Marigold) tokenizes with ``padding="do_not_pad"``: the released U-Nets were trained to
    cross-attend to the two tokens <|startoftext|> <|endoftext|>, not to 77 padded ones.
    """
    tokens = tokenizer(prompt, padding="do_not_pad", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids.to(text_encoder.device))[0]  # [1, L, D]


def vae_scale_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling of the VAE, from its config (8 for SD2.1 and for the tiny VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """z = E(x) * scaling_factor, the posterior mean (x in [-1, 1], [B, 3, H, W] -> [B, 4, H/8, W/8])."""
    posterior = vae.encode(x).latent_dist
    return posterior.mean * vae.config.scaling_factor  # [B, 4, h, w]


@torch.no_grad()
def encode_batched(vae: AutoencoderKL, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``encode`` over a large stack of images in chunks of ``batch``: [N, 3, H, W] -> [N, 4, H/8, W/8].

    Chunks run on the VAE's device; the latents come back on ``x``'s device (a big stack stays in RAM).
    """
    dev = next(vae.parameters()).device
    return torch.cat([encode(vae, x[k:k + batch].to(dev)).to(x.device) for k in range(0, len(x), batch)])


_ENCODED: dict = {}  # the last encoded training set: key -> (weak reference to the VAE, tensors)


def encoded_once(key: tuple, vae, build) -> dict:
    """``build()`` (a dict of tensors encoded with ``vae``) once per process for ``key`` and this VAE object, so
    the models of a notebook that differ only in pipeline, beta, init or seed share one encoding; each call gets
    its own copy. One set is kept at a time (a 96 px task's label images weigh hundreds of MB)."""
    key = (*key, id(vae))
    hit = _ENCODED.get(key)
    if hit is None or hit[0]() is not vae:  # (an id may be reused by another VAE once the first is freed)
        _ENCODED.clear()
        _ENCODED[key] = hit = (weakref.ref(vae), build())
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in hit[1].items()}


def decode(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """x = D(z / scaling_factor), [B, 4, h, w] -> [B, 3, 8h, 8w] in about [-1, 1]."""
    return vae.decode(z / vae.config.scaling_factor).sample  # [B, 3, H, W]


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- where and in what precision to run ---------------------------------------------------------------------------
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32"
                   ) -> tuple[torch.device, torch.dtype]:
    """The (device, dtype) to use: CUDA where asked and present, else CPU; half precision only on CUDA.

    An unavailable request warns once and falls back (CPU, float32) instead of failing later: half
    precision on CPU is emulated and its timings would not mean anything.
    """
    dtype = _as_dtype(dtype)
    requested = "cuda" if str(device) == "auto" and torch.cuda.is_available() else str(device)
    requested = "cpu" if requested == "auto" else requested
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {requested!r} requested but CUDA is not available: using cpu", stacklevel=2)
        dev = torch.device("cpu")
    if dev.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        warnings.warn(f"{dtype} requested on cpu: using torch.float32", stacklevel=2)
        dtype = torch.float32
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        warnings.warn("bfloat16 is not supported on this GPU: using torch.float16", stacklevel=2)
        dtype = torch.float16
    return dev, dtype
