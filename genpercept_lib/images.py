"""The image processor: files -> [0, 1] tensors, and images <-> the sizes the VAE sees.

One module for what diffusers and Marigold keep in their image processors: reading any image file, the
processing size (longer side = ``processing_resolution``, aspect kept), resizing, padding to the VAE's
multiple and back. Everything that prepares an image for a GenPercept model or brings a prediction back to
the input size goes through here: ``GenPerceptPipeline`` (released checkpoints), the paper profile's
evaluation, and the real-data training stream.

Two processings, as data (``Processing``):

* ``"authors"`` (the default): exactly what the authors' release does (aim-uofa/GenPercept, ``run.py`` and
  ``genpercept/genpercept_pipeline.py``; ``genpercept/util/image_util.py``):
  1. the processing size *truncates*: ``int(W * min(R / W, R / H))`` (``image_util.py``, ``resize_max_res``);
  2. the uint8 image tensor is resized (bilinear, antialias), so the input is rounded to whole 8-bit levels
     (``genpercept_pipeline.py``, ``pil_to_tensor`` then ``resize_max_res``);
  3. no padding: the VAE gets the resized image as it is (a 42 x 64 image gives a 5 x 8 latent and a 40 x 64
     decode), and the decode is resized straight to the input size (bilinear, antialias;
     ``genpercept_pipeline.py``, ``match_input_res``).
  The post-processing half (channel mean before the clip, normals not renormalised, the DPT head min-max
  normalised at its own resolution) lives with the tasks (``tasks/``) and the pipeline, keyed by the same
  ``Processing``.
* ``"marigold"`` (ours, a named option): rounding instead of truncation, float resizing, replicate-padding
  to the VAE's multiple and cropping after decoding (diffusers' ``MarigoldImageProcessor``), clip before the
  channel mean, unit-normalised normals, the DPT map resized to the processing size and normalised there.

Pure torch (torchvision does not import beside the pinned CPU torch): ``F.interpolate(..., antialias=True)``
is the kernel torchvision's tensor ``resize`` calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An input file that is not a readable image (the message is the reason, one line)."""


# ---------------------------------------------------------------------------------------------------------
# Processing choices
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processing:
    """How an image is prepared for the VAE and how a prediction is brought back (see the module docstring).

    size_rounding: "truncate" (authors, ``int``) or "round" (Marigold) when scaling to the processing size.
    quantize_input: resize 8-bit levels and round the result to 8-bit levels (authors) or resize floats.
    pad: replicate-pad to the VAE's multiple and crop after decoding (Marigold) or feed the image as it is.
    mean_then_clip: scalar tasks take the channel mean of the decoded image, then clip (authors) - or clip
        each channel, then take the mean.
    unit_normals: normals are renormalised to unit length (ours) - or only clipped (authors).
    head_normalize_first: the DPT head's map is min-max normalised at its own resolution and resized once to
        the input size (authors) - or resized to the processing size, normalised, then resized.
    ensemble_max_res: the longer side of the grid the stochastic ensemble fits its alignment on (authors:
        50, ``genpercept_pipeline.py`` ``ensemble_depth(..., max_res=50)``); None = full resolution.
    """

    name: str = "authors"
    size_rounding: str = "truncate"
    quantize_input: bool = True
    pad: bool = False
    mean_then_clip: bool = True
    unit_normals: bool = False
    head_normalize_first: bool = True
    ensemble_max_res: int | None = 50

    def __post_init__(self):
        if self.size_rounding not in ("truncate", "round"):
            raise ValueError(f"size_rounding={self.size_rounding!r}: expected 'truncate' or 'round'")

    def replace(self, **changes) -> Processing:
        return dataclasses.replace(self, **changes)


PROCESSINGS = {
    "authors": Processing(),
    "marigold": Processing(name="marigold", size_rounding="round", quantize_input=False, pad=True,
                           mean_then_clip=False, unit_normals=True, head_normalize_first=False,
                           ensemble_max_res=None),
}
# the switches a user can flip one at a time (notebook 11 measures each), with the value that departs
SWITCHES = ("size_rounding", "quantize_input", "pad", "mean_then_clip", "unit_normals", "head_normalize_first",
            "ensemble_max_res")


def get_processing(processing: str | Processing | None) -> Processing:
    """A ``Processing`` by name ("authors", the default, or "marigold"), or the one given."""
    if processing is None:
        return PROCESSINGS["authors"]
    if isinstance(processing, Processing):
        return processing
    if processing not in PROCESSINGS:
        raise ValueError(f"unknown processing {processing!r}: expected one of {', '.join(PROCESSINGS)}")
    return PROCESSINGS[processing]


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def pil_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> float32 [H, W, 3] in [0, 1].

    16-bit grayscale ("I;16", or "I" as older Pillow opens it) is divided by 65535, float ("F") clipped to
    [0, 1], grayscale replicated to 3 channels; transparency (alpha or a palette's transparent index) is
    composited on white; every other mode goes through Pillow's RGB conversion. (The authors'
    ``convert("RGB")`` saturates 16-bit images to white and drops alpha instead of compositing it: a bug we
    do not reproduce.)
    """
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        gray = np.asarray(img, dtype=np.float64)  # [H, W]
        gray = gray / 65535.0 if img.mode != "F" else gray
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)  # [H, W, 3]
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as float32 [3, H, W] in [0, 1], EXIF rotation applied; ImageReadError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated or corrupt file fails here, not later
            img = ImageOps.exif_transpose(img)
            rgb = pil_to_array(img)  # [H, W, 3]
    except Exception as err:  # an untrusted file: any failure to decode it (or its EXIF) means unreadable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImageReadError(f"cannot read image ({reason})") from None
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()  # [3, H, W]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def as_image_tensor(image) -> torch.Tensor:
    """One image -> float32 [3, H, W] in [0, 1].

    Accepts a PIL image (any mode: see ``pil_to_array``), a numpy array [H, W], [H, W, 3|4] (uint8 / 255,
    uint16 / 65535, floats as they are) or a tensor [3, H, W] / [1, H, W] in [0, 1].
    """
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"image tensor of shape {tuple(x.shape)}: expected [3, H, W] or [1, H, W]")
        return x.expand(3, -1, -1).clamp(0.0, 1.0).contiguous()  # [3, H, W]
    if not isinstance(image, np.ndarray):
        image = pil_to_array(image)  # [H, W, 3] float32
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    elif arr.dtype == np.uint16:
        arr = arr / 65535.0
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)  # [H, W, 3]
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image array of shape {arr.shape}: expected [H, W], [H, W, 3] or [H, W, 4]")
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).clamp(0.0, 1.0).contiguous()


def as_image_list(images) -> list[torch.Tensor]:
    """A batch [N, 3, H, W] tensor, one image, or a list of images -> list of [3, H, W] tensors."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        return [as_image_tensor(x) for x in images]
    if isinstance(images, (list, tuple)):
        return [as_image_tensor(x) for x in images]
    return [as_image_tensor(images)]


# ---------------------------------------------------------------------------------------------------------
# Sizes, resizing, padding
# ---------------------------------------------------------------------------------------------------------


def processing_size(height: int, width: int, processing_resolution: int,
                    rounding: str = "truncate") -> tuple[int, int]:
    """(h, w) with the longer side = ``processing_resolution``, aspect kept (0: unchanged).

    ``rounding="truncate"`` is the authors' ``int(...)`` (400 x 600 at 64 -> 42 x 64), ``"round"`` Marigold's
    (43 x 64). Never below 1 pixel.
    """
    if processing_resolution < 0:
        raise ValueError(f"processing_resolution={processing_resolution}: expected >= 0 (0 = native size)")
    if processing_resolution == 0:
        return height, width
    scale = min(processing_resolution / width, processing_resolution / height)
    cast = int if rounding == "truncate" else round
    return max(1, cast(height * scale)), max(1, cast(width * scale))


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize [B, C, H, W] to ``size``: bilinear with antialiasing (torchvision's tensor ``resize``, which both
    the authors and Marigold use), or "nearest" (nearest-exact: class maps and masks are never interpolated)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)
    if mode != "bilinear":
        raise ValueError(f"resize mode {mode!r}: expected 'bilinear' or 'nearest'")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] values rounded to whole 8-bit levels (k / 255): what a uint8 image tensor can hold."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] resized as the authors resize their uint8 tensor: the 8-bit levels are interpolated
    (bilinear, antialias) in float and rounded back to 8-bit levels (torchvision casts uint8 results with
    ``round``). Returns [0, 1] values on the 8-bit grid."""
    levels = torch.round(x.clamp(0.0, 1.0) * 255.0)  # [B, 3, H, W] in 0..255
    if tuple(levels.shape[-2:]) != tuple(size):
        levels = torch.round(resize(levels, size)).clamp(0.0, 255.0)
    return levels / 255.0


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad [B, C, H, W] at the bottom/right to multiples of ``multiple``; returns (x, (ph, pw))."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # [B, C, H + ph, W + pw]
    return x, (ph, pw)


def unpad(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``: crop (ph, pw) rows/columns from the bottom/right of [..., H, W]."""
    ph, pw = padding
    return x[..., : x.shape[-2] - ph, : x.shape[-1] - pw]


@dataclass(frozen=True)
class Prepared:
    """An image made ready for the VAE: ``x`` [1, 3, h', w'] in [0, 1] and how to undo it."""

    x: torch.Tensor
    input_size: tuple[int, int]       # (H, W) of the image given
    processing_size: tuple[int, int]  # (h, w) after resizing, before any padding
    padding: tuple[int, int]          # rows, columns added at the bottom / right (0, 0 without padding)


def prepare(image: torch.Tensor, processing_resolution: int, multiple: int,
            processing: str | Processing | None = None) -> Prepared:
    """[3, H, W] or [1, 3, H, W] in [0, 1] -> ``Prepared`` for the VAE (resize, maybe quantise, maybe pad)."""
    proc = get_processing(processing)
    x = image[None] if image.dim() == 3 else image  # [1, 3, H, W]
    h0, w0 = x.shape[-2:]
    size = processing_size(h0, w0, processing_resolution, proc.size_rounding)
    x = resize_uint8(x, size) if proc.quantize_input else resize(x, size)  # [1, 3, h, w]
    padding = (0, 0)
    if proc.pad:
        x, padding = pad_to_multiple(x, multiple)  # [1, 3, h', w']
    # contiguous: a channels-last stride (a permuted HWC array) would pick other convolution kernels (~1e-5 apart)
    return Prepared(x.contiguous(), (int(h0), int(w0)), size, padding)


def restore(pred: torch.Tensor, prepared: Prepared, size: tuple[int, int] | None,
            mode: str = "bilinear") -> torch.Tensor:
    """A prediction [B, C, h', w'] made on ``prepared.x`` -> [B, C, H, W]: the padding cropped (when there was
    one), then one resize (``mode``) to ``size`` (usually ``prepared.input_size``; None: no resize)."""
    pred = unpad(pred, prepared.padding)  # [B, C, h, w] (authors: the decode of the unpadded latent)
    return pred if size is None else resize(pred, size, mode)


# -- colour maps (figures, ``genpercept predict``'s coloured outputs) ----------------------------------------------
def colorize_depth(depth, valid=None, cmap: str = "Spectral", lo: float | None = None, hi: float | None = None):
    """[H, W] depth -> [H, W, 3] float RGB with the Spectral map (Marigold's); invalid pixels black.

    Near is red, far is blue (values normalised to [lo, hi], by default the 2%/98% quantiles of valid pixels).
    """
    import matplotlib

    depth = np.asarray(depth, dtype=np.float64)  # [H, W]
    valid = np.isfinite(depth) if valid is None else (np.asarray(valid, bool) & np.isfinite(depth))
    vals = depth[valid]
    if vals.size == 0:
        return np.zeros(depth.shape + (3,))
    lo = np.quantile(vals, 0.02) if lo is None else lo
    hi = np.quantile(vals, 0.98) if hi is None else hi
    norm = np.clip((depth - lo) / max(hi - lo, 1e-12), 0, 1)  # [H, W]
    rgb = matplotlib.colormaps[cmap](norm)[..., :3]  # [H, W, 3]
    rgb[~valid] = 0.0
    return rgb


def normals_to_rgb(normal, valid=None):
    """[3, H, W] unit normals -> [H, W, 3] RGB with the usual (n + 1) / 2 mapping; invalid black."""
    n = np.asarray(normal, dtype=np.float64)
    rgb = np.clip((np.moveaxis(n, 0, -1) + 1.0) / 2.0, 0, 1)  # [H, W, 3]
    if valid is not None:
        rgb[~np.asarray(valid, bool)] = 0.0
    return rgb
