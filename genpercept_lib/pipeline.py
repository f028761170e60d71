"""Images -> predictions with any of the three formulations: encode, sample, decode, ensemble.

``perceive`` is the one inference path that every notebook uses (the toy world and the real models alike).
Labels live in the VAE's RGB space as 3-channel images in [-1, 1]; the task (``tasks.get(name)``) says how a
decoded image becomes its prediction and how ensemble members merge.

``GenPerceptPipeline`` wraps it for pictures of any size and the released checkpoints (SD2.1 base folder,
task U-Net folder, optional DPT head): the image processor (``images.py``) prepares each picture, the
authors' processing by default, ours as the named option ``processing="marigold"``; batching,
dtype/device, and the prediction brought back to the input size, in [0, 1] as numpy.
``genpercept predict`` (``predict.py``) is its command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import formulations, heads, models, tasks
from .images import Processing, as_image_list, get_processing, prepare, resize, restore, unpad
from .models import resolve_device
from .progress import tqdm


@torch.no_grad()
def perceive(
    unet,
    vae,
    images: torch.Tensor,
    formulation: str = "one_step",
    alphas_cumprod: torch.Tensor | None = None,
    num_inference_steps: int = 1,
    ensemble_size: int = 1,
    task: str | tasks.Task = "depth",
    text_embedding: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    autocast: str | torch.dtype | None = None,
    processing: str | Processing | None = None,
) -> torch.Tensor:
    """Predict labels for ``images`` [B, 3, H, W] in [0, 1] (any size the VAE takes).

    Returns the task's prediction for the VAE's decode, [B, h, w] (one-channel tasks, in [0, 1]; depth is
    affine-invariant) or [B, 3, h, w] (h, w = H, W when they are multiples of the VAE factor). With
    ``ensemble_size`` > 1 each image is predicted m times (stochastic: m noises) and the members are merged
    by the task (depth: Marigold's affine-invariant ensembling). ``processing`` (default: the authors')
    picks the decode and ensembling details (``images.Processing``). ``autocast`` ("fp16" | "bf16") runs
    encode, sampling and decode under ``torch.autocast`` on CUDA; on CPU it warns and runs in float32.
    The B images of a call run as one batch.
    """
    if ensemble_size < 1:
        raise ValueError(f"ensemble_size={ensemble_size!r}: expected an integer >= 1")
    task = tasks.get(task)
    proc = get_processing(processing)
    cond = text_embedding if text_embedding is not None else models.empty_text_embedding(unet)  # [1, L, D]
    denoise = formulations.unet_denoiser(unet, cond)
    p = next(unet.parameters())
    members = []
    with inference_autocast(p.device, autocast):
        x = images.to(p.device, p.dtype) * 2.0 - 1.0  # [B, 3, H, W] in [-1, 1]
        z_x = models.encode(vae, x)  # [B, 4, h, w]
        for _ in range(ensemble_size):
            z_y = formulations.sample(
                formulation, denoise, z_x, alphas_cumprod, num_inference_steps, generator=generator
            )  # [B, 4, h, w]
            members.append(task.decode(models.decode(vae, z_y), proc))  # [B, H, W] or [B, 3, H, W]
    if ensemble_size == 1:
        return members[0]
    stacked = torch.stack(members, dim=1).float().cpu().numpy()  # [B, E, H, W] or [B, E, 3, H, W]
    return torch.stack([torch.from_numpy(np.asarray(task.ensemble(m, proc))) for m in stacked]).float()


# ---------------------------------------------------------------------------------------------------------
# Fast inference switches
# ---------------------------------------------------------------------------------------------------------
#
# Each switch is explicit and off by default except SDPA (diffusers' own default), has its effect measured
# in notebooks/03_runtime, and is checked in tests/test_fast_inference.py to leave the one-step prediction
# unchanged up to dtype tolerance (VAE tiling only for images no larger than a tile: it is an approximation).
#
#   precision        perceive(..., autocast="fp16" | "bf16"): torch.autocast on CUDA; fp32 on CPU (a warning)
#   channels_last    optimize_for_inference(channels_last=True): NHWC weights/activations (cuDNN, oneDNN)
#   sdpa             optimize_for_inference(sdpa=True): fused scaled_dot_product_attention in every Attention
#   batched images   perceive on a [B, 3, H, W] batch / GenPerceptPipeline(batch_size=B)
#   compile          optimize_for_inference(compile=True): torch.compile per U-Net block, VAE halves, head
#   VAE tiling       optimize_for_inference(vae_tiling=True, tile_size=...): bounded memory for large images

_COMPILED = "_genpercept_compiled"  # marks a module whose forward we replaced with a compiled one


def inference_autocast(device: str | torch.device, precision: str | torch.dtype | None = None):
    """A context that runs the enclosed ops in ``precision`` with ``torch.autocast`` where it is possible.

    None / "fp32": no autocast. "fp16" / "bf16" on CUDA: ``torch.autocast("cuda", dtype)`` (weights stay
    as they are, matmuls and convolutions run in half precision). Where that is not available,
    ``models.resolve_device`` warns and falls back: on CPU to float32 (half convolutions on CPU are
    emulated or missing, and their timings would mean nothing), bf16 on a GPU without it to fp16.
    """

    if precision is None:
        return contextlib.nullcontext()
    dev, dtype = resolve_device(device, precision)
    if dev.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def compile_problem(device: str | torch.device, backend: str = "inductor") -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run on ``device`` here (one line), or None if it can."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    from torch._dynamo import is_dynamo_supported

    if not is_dynamo_supported():
        return "TorchDynamo does not support this Python/platform"
    if backend == "inductor" and device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return "inductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
    return None


def _compile_targets(unet, vae, head) -> list[torch.nn.Module]:
    """Regional compilation: each U-Net block (the DPT head's forward hooks on up blocks stay outside the
    compiled code and keep working), the VAE encoder and decoder, the head."""
    targets = [*unet.down_blocks, unet.mid_block, *unet.up_blocks, vae.encoder, vae.decoder]
    return [m for m in [*targets, head] if m is not None]


def _set_compiled(module: torch.nn.Module, on: bool, backend: str, mode: str | None) -> None:
    if on and not getattr(module, _COMPILED, False):
        # an instance attribute shadows the class's forward; nn.Module.__call__ (hooks) stays eager
        module.forward = torch.compile(module.forward, backend=backend, mode=mode, dynamic=False)
        setattr(module, _COMPILED, True)
    elif not on and getattr(module, _COMPILED, False):
        del module.forward  # back to the class's forward
        delattr(module, _COMPILED)


def optimize_for_inference(unet, vae, head=None, *, channels_last: bool = False, sdpa: bool = True,
                           compile: bool = False, vae_tiling: bool = False, tile_size: int | None = None,
                           compile_backend: str = "inductor", compile_mode: str | None = None) -> dict[str, str]:
    """Set the fast-inference switches on the modules, in place; returns what each switch now is.

    Each switch is a state: calling again with the defaults restores the plain models.

    * ``channels_last``: 4-D weights in NHWC, so convolutions produce NHWC activations (preferred by
      cuDNN tensor cores and oneDNN). Numerically the same convolutions.
    * ``sdpa``: attention through ``torch.nn.functional.scaled_dot_product_attention`` (diffusers'
      ``AttnProcessor2_0``, its default when torch has it); False: the classic processor (baddbmm, softmax,
      bmm), which materialises the L x L attention matrix.
    * ``compile``: ``torch.compile`` (``compile_backend``, ``compile_mode``, static shapes) of every U-Net
      block, the VAE encoder and decoder and the head: the first call at each input shape compiles
      (minutes for SD2.1 on a CPU), later calls run the fused code. Where it cannot run (no C++ compiler
      for inductor on CPU, an unsupported platform) it warns and stays off.
    * ``vae_tiling``: encode/decode in overlapping tiles of ``tile_size`` pixels (default: the VAE's
      ``sample_size``, 768 for SD2.1) blended at the seams: bounded memory for images larger than a tile.
      Exact for images no larger than a tile (tiling does not engage); an approximation otherwise
      (GroupNorm statistics and attention are per tile).
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    device = next(unet.parameters()).device
    modules = [m for m in (unet, vae, head) if m is not None]
    applied = {}

    # 1. memory format
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in modules:
        module.to(memory_format=memory_format)
    applied["channels_last"] = "on" if channels_last else "off"

    # 2. attention kernel (the U-Net's transformer blocks and the VAE's mid-block attention)
    for module in (unet, vae):
        if hasattr(module, "set_attn_processor") and module.attn_processors:
            module.set_attn_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
    applied["sdpa"] = "on (fused SDPA)" if sdpa else "off (bmm-softmax-bmm)"

    # 3. VAE tiling
    factor = models.vae_scale_factor(vae)
    if vae_tiling:
        size = int(tile_size or (vae.config.sample_size if isinstance(vae.config.sample_size, int)
                                 else vae.config.sample_size[0]))
        if size < factor or size % factor:
            raise ValueError(f"tile_size={tile_size}: expected a positive multiple of the VAE factor {factor}")
        vae.enable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = size, size // factor
        applied["vae_tiling"] = f"on ({size} px tiles, overlap {vae.tile_overlap_factor:g})"
    else:
        vae.disable_tiling()
        applied["vae_tiling"] = "off"

    # 4. torch.compile
    problem = compile_problem(device, compile_backend) if compile else None
    if problem:
        warnings.warn(f"compile=True: {problem}; running without torch.compile", stacklevel=2)
    on = compile and problem is None
    for module in _compile_targets(unet, vae, head):
        _set_compiled(module, on, compile_backend, compile_mode)
    applied["compile"] = (f"on ({compile_backend}{', ' + compile_mode if compile_mode else ''})" if on
                          else f"off ({problem})" if problem else "off")
    return applied


# ---------------------------------------------------------------------------------------------------------
# GenPerceptPipeline: the released checkpoints on arbitrary pictures
# ---------------------------------------------------------------------------------------------------------
#
# Layout on disk (what the authors release, on top of Stable Diffusion 2.1):
#   BASE/vae/ (AutoencoderKL), BASE/text_encoder/ (CLIPTextModel), BASE/tokenizer/ (CLIPTokenizer)
#   UNET/config.json + diffusion_pytorch_model.safetensors   (e.g. genpercept-models/unet_depth_v2/)
#   HEAD/model.safetensors                                   (dpt_head_identity/, the DPT-head model)
#
# Processing (``images.Processing``): the authors' by default - truncated processing size, 8-bit input, no
# padding (the VAE gets the resized image as it is), the decode resized straight to the input size; ours
# ("marigold") rounds, resizes floats, pads to the VAE's multiple and crops after decoding.

BASE_LAYOUT = "vae/, text_encoder/, tokenizer/"


@dataclass
class GenPerceptOutput:
    """What ``GenPerceptPipeline.__call__`` returns.

    prediction: values in [0, 1]; ``[N, H, W]`` for one-channel tasks (depth, disparity, dis, matting) and
        ``[N, H, W, 3]`` for three-channel ones (normal: (n + 1) / 2, seg: palette colours). If the N
        outputs differ in size (inputs of different sizes), a list of N arrays ``[H_i, W_i(, 3)]`` instead.
    processing_sizes: the (height, width) each image was processed at, before any padding.
    """

    prediction: np.ndarray | list[np.ndarray]
    processing_sizes: list[tuple[int, int]] = field(default_factory=list)


@torch.no_grad()
def check_unet(unet, vae, formulation: str = "one_step", name: str = "U-Net", head: bool = False) -> None:
    """One-line ValueError unless ``unet`` fits ``formulation`` on ``vae``'s latents (and a head if any)."""
    latent = vae.config.latent_channels
    expected_in = formulations.unet_in_channels(formulation, latent)
    got_in, got_out = unet.config.in_channels, unet.config.out_channels
    if got_in != expected_in:
        kind = {8: " (a Marigold-style stochastic U-Net that takes concat(z_t, z_x))"}.get(got_in, "")
        raise ValueError(
            f"{name}: in_channels={got_in}{kind}; expected {expected_in} for the {formulation} GenPercept "
            f"model (input: the image latent z_x, {latent} channels)"
        )
    if not head and got_out != latent:
        raise ValueError(f"{name}: out_channels={got_out}; expected {latent} (v in the VAE's latent space)")


def _base_folder(base: str | os.PathLike) -> Path:
    """The base model folder, checked for the diffusers layout; one-line ModelPathError otherwise."""
    path = Path(base).expanduser()
    if not path.is_dir():
        models.resolve_model_path(base, "vae")  # the hub-id / missing-folder message
    for sub in ("vae", "text_encoder", "tokenizer"):
        if not (path / sub).is_dir():
            raise models.ModelPathError(
                f"{path}: no {sub}/ folder; expected a Stable Diffusion 2.1 folder in diffusers layout "
                f"({BASE_LAYOUT})"
            )
    return path


def load_empty_prompt_embedding(base: str | os.PathLike) -> torch.Tensor:
    """Encode "" once with the base model's CLIP text encoder and tokenizer, [1, L, D] float32 (CPU)."""
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    path = _base_folder(base)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a model used once
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True).eval()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise models.ModelPathError(
            f"{path}: cannot load the CLIP text encoder/tokenizer ({first}); expected {BASE_LAYOUT} "
            f"as in Stable Diffusion 2.1"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return models.encode_empty_prompt(text_encoder, tokenizer).float()  # [1, L, D]


class GenPerceptPipeline:
    """Images -> dense predictions with a GenPercept U-Net (one step by default) and the SD2.1 VAE.

    Build it from folders with ``from_pretrained(base, unet, task, head=None)`` or from modules. Without a
    head the U-Net's prediction is decoded by the VAE (``perceive``); with a DPT head the U-Net decoder
    features go through the head to a one-channel map (no VAE decoder), min-max normalised to [0, 1] per
    image. ``processing`` ("authors", the default, or "marigold", or an ``images.Processing``) says how images
    are prepared and predictions brought back (``images.py``).
    """

    def __init__(self, vae, unet, task: str = "depth", text_embedding: torch.Tensor | None = None,
                 head=None, formulation: str = "one_step", alphas_cumprod: torch.Tensor | None = None,
                 processing: str | Processing | None = None):
        self.task = tasks.get(task)
        self.processing = get_processing(processing)
        check_unet(unet, vae, formulation, head=head is not None)
        if head is not None and self.task.channels != 1:
            one = [n for n, t in tasks.REGISTRY.items() if t.channels == 1]
            raise ValueError(f"a DPT head predicts one channel: task {self.task.name!r} given; expected one of "
                             f"{', '.join(one)}")
        if formulation != "one_step" and alphas_cumprod is None:
            raise ValueError(f"formulation {formulation!r} needs alphas_cumprod (schedule.alphas_cumprod())")
        if text_embedding is None:
            text_embedding = models.empty_text_embedding(unet)  # zeros [1, 1, D] (toy-world models)
        if text_embedding.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(f"text embedding width {text_embedding.shape[-1]}; expected the U-Net's "
                             f"cross_attention_dim {unet.config.cross_attention_dim}")
        self.vae, self.unet, self.head = vae.eval(), unet.eval(), head.eval() if head is not None else None
        self.formulation, self.alphas_cumprod = formulation, alphas_cumprod
        self.text_embedding = text_embedding  # [1, L, D]
        self.scale_factor = models.vae_scale_factor(vae)  # from the VAE config (8 for SD2.1)
        self.to(next(unet.parameters()).device, next(unet.parameters()).dtype)

    @classmethod
    def from_pretrained(cls, base: str | os.PathLike, unet: str | os.PathLike, task: str = "depth",
                        head: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "fp32", processing: str | Processing | None = None
                        ) -> GenPerceptPipeline:
        """Load BASE/vae, the empty-prompt embedding of BASE/text_encoder, the U-Net and a DPT head."""
        tasks.get(task)  # an unknown task fails before anything loads
        base_path = _base_folder(base)
        vae = models.load_vae(base_path, "vae")
        unet_path = Path(unet).expanduser()
        nested = not (unet_path / "config.json").is_file() and (unet_path / "unet" / "config.json").is_file()
        unet_model = models.load_unet(unet, subfolder="unet" if nested else None)  # a folder, or a checkout
        check_unet(unet_model, vae, name=str(unet), head=head is not None)
        head_model = heads.load_dpt_head(head) if head is not None else None
        text_embedding = load_empty_prompt_embedding(base_path)
        pipe = cls(vae, unet_model, task, text_embedding, head_model, processing=processing)
        return pipe.to(device, dtype)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        """Move every module; an unavailable device or half precision on CPU warns and falls back."""

        device, dtype = resolve_device(device or self.device, dtype or self.dtype)
        for module in (self.vae, self.unet, self.head):
            if module is None:
                continue
            p = next(module.parameters())
            if p.device != device:
                module.to(device=device)
            if p.dtype != dtype:  # diffusers warns on every .to(dtype=...), so only when it changes
                module.to(dtype=dtype)
        self.text_embedding = self.text_embedding.to(device=device, dtype=dtype)
        return self

    def optimize(self, **switches) -> dict[str, str]:
        """Set the fast-inference switches on this pipeline's modules (``optimize_for_inference``)."""
        return optimize_for_inference(self.unet, self.vae, self.head, **switches)

    # -- one batch ----------------------------------------------------------------------------------------

    def _predict(self, x: torch.Tensor, ensemble_size: int, num_inference_steps: int, generator,
                 autocast: str | torch.dtype | None = None) -> torch.Tensor:
        """x [B, 3, h, w] in [0, 1] -> raw prediction [B, C, h', w']: the VAE's decode (h' = 8 * the latent's
        height, so h' < h when h is not a multiple of 8 and nothing was padded), or the DPT head's map."""
        if self.head is None:
            pred = perceive(
                self.unet, self.vae, x, self.formulation, self.alphas_cumprod, num_inference_steps,
                ensemble_size, self.task, self.text_embedding, generator, autocast=autocast,
                processing=self.processing,
            )  # [B, h', w'] or [B, 3, h', w']
            return (pred[:, None] if pred.dim() == 3 else pred).float()  # [B, C, h', w']

        with inference_autocast(self.device, autocast):
            z_x = models.encode(self.vae, x.to(self.device, self.dtype) * 2.0 - 1.0)  # [B, 4, h, w]
            t = torch.full((x.shape[0],), formulations.ONE_STEP_TIMESTEP, dtype=torch.int64, device=self.device)
            cond = self.text_embedding.expand(x.shape[0], -1, -1)  # [B, L, D]
            # authors: the head's map at its own resolution; ours: resized to the (padded) input first
            size = None if self.processing.head_normalize_first else tuple(x.shape[-2:])
            pred = heads.predict_with_head(self.unet, self.head, z_x, t, cond, output_size=size)
        return pred.float()  # [B, 1, h', w']

    def _finish(self, pred: torch.Tensor, prepared, size: tuple[int, int] | None) -> np.ndarray:
        """One raw prediction [C, h', w'] -> numpy [H, W] or [H, W, 3] in [0, 1] at ``size`` (None: as made)."""
        pred = pred[None]  # [1, C, h', w']
        if self.head is not None:
            pred = finish_head_map(pred, prepared, size, self.processing)  # [1, 1, H, W]
        else:
            pred = self.task.finish(restore(pred, prepared, size, self.task.pred_resize), self.processing)
        return self.task.to_output(pred[0], self.processing)  # [H, W] or [H, W, 3]

    # -- images -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, images, processing_resolution: int = 768, match_input_resolution: bool = True,
                 batch_size: int = 1, dtype: str | torch.dtype | None = None,
                 device: str | torch.device | None = None, ensemble_size: int = 1,
                 num_inference_steps: int = 1, generator: torch.Generator | None = None,
                 show_progress: bool = False, autocast: str | torch.dtype | None = None) -> GenPerceptOutput:
        """Predict the task's map for ``images`` (a [N, 3, H, W] tensor in [0, 1], PIL images, arrays, lists).

        1. prepare each image (``images.prepare``: longer side = ``processing_resolution``, aspect kept, 0 =
           native; the authors' 8-bit rounding, or our padding to the VAE's multiple); 2. run images of the
           same prepared size in batches of ``batch_size``; 3. bring each prediction back
           (``images.restore``) to the input size if ``match_input_resolution``. Deterministic formulations
           (one-step, the released models) give identical ensemble members, so ``ensemble_size`` > 1 only
           matters for the stochastic one. ``autocast`` ("fp16" | "bf16") runs the models under
           ``torch.autocast`` on CUDA (CPU: a warning, float32); ``optimize`` sets the other switches.
        """
        if batch_size < 1 or ensemble_size < 1 or num_inference_steps < 1:
            raise ValueError(f"batch_size={batch_size}, ensemble_size={ensemble_size}, num_inference_steps="
                             f"{num_inference_steps}: expected integers >= 1")
        if device is not None or dtype is not None:
            self.to(device, dtype)
        if ensemble_size > 1 and (self.formulation != "stochastic" or self.head is not None):
            warnings.warn(f"the {self.formulation} pipeline is deterministic: ensemble_size={ensemble_size} "
                          f"would repeat one prediction; using 1", stacklevel=2)
            ensemble_size = 1
        inputs = as_image_list(images)

        # 1. prepare (resize, maybe quantise, maybe pad)
        prepared = [prepare(image, processing_resolution, self.scale_factor, self.processing) for image in inputs]

        # 2. batches of equally sized images, in input order within each size
        groups: dict[tuple[int, int], list[int]] = {}
        for i, prep in enumerate(prepared):
            groups.setdefault(tuple(prep.x.shape[-2:]), []).append(i)
        results: list[np.ndarray | None] = [None] * len(inputs)
        bar = tqdm(total=len(inputs), desc="images", unit="img", disable=not show_progress, leave=False)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                x = torch.cat([prepared[i].x for i in chunk])  # [B, 3, h, w]
                raw = self._predict(x, ensemble_size, num_inference_steps, generator, autocast)  # [B, C, h', w']

                # 3. back to the input size
                for i, pred in zip(chunk, raw):
                    size = prepared[i].input_size if match_input_resolution else None
                    results[i] = self._finish(pred, prepared[i], size)
                bar.update(len(chunk))
        bar.close()
        same = len({r.shape for r in results}) == 1
        return GenPerceptOutput(np.stack(results) if same else results, [p.processing_size for p in prepared])


def _min_max(x: torch.Tensor) -> torch.Tensor:
    """[..., H, W] min-max normalised to [0, 1] (the authors' DPT-head output; a constant map gives 0)."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp(min=1e-6)


def finish_head_map(pred: torch.Tensor, prepared, size: tuple[int, int] | None,
                    processing: str | Processing | None = None) -> torch.Tensor:
    """The DPT head's affine-invariant map of one image [1, 1, h', w'] -> [1, 1, H, W] in [0, 1] at ``size``.

    Authors (``head_normalize_first``; ``genpercept_pipeline.py``, ``single_infer`` then ``__call__``): min-max
    at the head's own resolution, then one bilinear antialiased resize to the input size. Ours: the map is
    already at the (padded) processing size; crop the padding, min-max there, then resize.
    """
    proc = get_processing(processing)
    if proc.head_normalize_first:
        pred = _min_max(pred)
        if prepared.padding != (0, 0):  # a padded input: crop at the input's grid
            pred = resize(pred, tuple(prepared.x.shape[-2:]))
        return restore(pred, prepared, size)
    pred = _min_max(unpad(pred, prepared.padding))
    return pred if size is None else resize(pred, size)
