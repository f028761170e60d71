"""``genpercept predict``: run a GenPercept checkpoint on image files and folders.

    genpercept predict --base SD21_DIR --unet genpercept-models/unet_depth_v2 --task depth photos/ -o out/

Per image ``<stem>_pred.npy`` (float32 at the input size, values in [0, 1]), ``<stem>_pred.png`` (16-bit for
depth/disparity, 8-bit otherwise) and ``<stem>_colored.png`` (Spectral for depth/disparity, RGB for normals
and segmentation, grey for DIS/matting), under ``-o`` with the input folder structure mirrored.

Inputs of every kind are read the same way (``load_image``): RGB, grayscale, RGBA/LA (composited on white),
palette (with or without transparency), 16-bit PNG/TIFF, EXIF orientation applied. A file that cannot be read
is named on stderr with the reason and skipped; the exit status is then 1. Files that are not images (by
extension) are ignored; existing outputs are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .pipeline import TASK_CHANNELS, GenPerceptPipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TASKS = tuple(TASK_CHANNELS)  # depth, disparity, dis, matting, normal, seg
SIXTEEN_BIT_TASKS = ("depth", "disparity")
OUTPUT_SUFFIXES = ("_pred.npy", "_pred.png", "_colored.png")
DEFAULTS = dict(processing_res=768, batch_size=1, dtype="fp32", device="auto")


class ImageReadError(ValueError):
    """An input file that is not a readable image (the message is the reason, one line)."""


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def pil_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> float32 [H, W, 3] in [0, 1].

    16-bit grayscale ("I;16", or "I" as older Pillow opens it) is divided by 65535, float ("F") clipped to
    [0, 1], grayscale replicated to 3 channels; transparency (alpha or a palette's transparent index) is
    composited on white; every other mode goes through Pillow's RGB conversion.
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
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    return rgb


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


def find_images(inputs) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Image files under ``inputs`` (files or folders, recursive) -> ((path, relative_path) list, missing).

    A folder's images keep their path relative to it (so the output mirrors it); a file given directly is
    relative to its own folder (its name). Non-image files are ignored; ``missing`` lists inputs that do not
    exist, with the reason. Sorted within each input, duplicates dropped.
    """
    found: list[tuple[Path, Path]] = []
    missing: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in inputs:
        root = Path(raw).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
            pairs = [(p, p.relative_to(root)) for p in files]
        elif root.is_file():
            pairs = [(root, Path(root.name))] if is_image_file(root) else []
        else:
            missing.append((root, "no such file or folder"))
            continue
        for path, rel in pairs:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((path, rel))
    return found, missing


def output_stems(pairs: list[tuple[Path, Path]]) -> list[Path]:
    """Output stems (relative, no suffix) for ``pairs``; a clash (a.png and a.jpg) adds the extension."""
    stems, taken = [], set()
    for _, rel in pairs:
        stem = rel.with_suffix("")
        if stem in taken:
            stem = rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.').lower()}")
        n = 2
        base = stem
        while stem in taken:
            stem, n = base.with_name(f"{base.name}_{n}"), n + 1
        taken.add(stem)
        stems.append(stem)
    return stems


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def output_paths(out_dir: Path, stem: Path) -> list[Path]:
    """``<out>/<rel dir>/<stem>_pred.npy``, ``_pred.png``, ``_colored.png``."""
    return [out_dir / stem.parent / f"{stem.name}{suffix}" for suffix in OUTPUT_SUFFIXES]


def prediction_png(pred: np.ndarray, task: str) -> Image.Image:
    """[H, W] or [H, W, 3] in [0, 1] -> 16-bit grey (depth, disparity), 8-bit grey or 8-bit RGB."""
    pred = np.clip(pred, 0.0, 1.0)
    if task in SIXTEEN_BIT_TASKS:
        return Image.fromarray(np.round(pred * 65535.0).astype(np.uint16))  # mode I;16
    return Image.fromarray(np.round(pred * 255.0).astype(np.uint8))  # L or RGB


def colored_png(pred: np.ndarray, task: str) -> Image.Image:
    """A picture of the prediction: Spectral for depth/disparity (near red for depth), RGB otherwise."""
    from .viz import colorize_depth

    pred = np.clip(pred, 0.0, 1.0)
    if task in SIXTEEN_BIT_TASKS:
        rgb = colorize_depth(pred, lo=0.0, hi=1.0)  # [H, W, 3]
    elif pred.ndim == 2:
        rgb = np.repeat(pred[..., None], 3, axis=-1)  # [H, W, 3] grey
    else:
        rgb = pred  # normals already mapped to (n + 1) / 2, segmentation colours
    return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))


def write_outputs(pred: np.ndarray, task: str, paths: list[Path]) -> None:
    """Write the .npy and the two PNGs, each atomically (temp file, then rename)."""
    from .results import atomic_path

    npy, png, colored = paths
    writers = {
        npy: lambda p: np.save(p, pred.astype(np.float32)),
        png: lambda p: prediction_png(pred, task).save(p, format="PNG"),
        colored: lambda p: colored_png(pred, task).save(p, format="PNG"),
    }
    for path in paths:
        with atomic_path(path) as tmp:
            writers[path](tmp)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``genpercept predict`` options (the task is checked in ``run`` so its error stays one line)."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    parser.add_argument("--base", required=True, metavar="DIR",
                        help="Stable Diffusion 2.1 folder, diffusers layout: vae/, text_encoder/, tokenizer/")
    parser.add_argument("--unet", required=True, metavar="DIR",
                        help="GenPercept U-Net folder (config.json + diffusion_pytorch_model.safetensors)")
    parser.add_argument("--head", default=None, metavar="DIR",
                        help="DPT head folder with model.safetensors (e.g. dpt_head_identity/)")
    parser.add_argument("--task", required=True, metavar="TASK", help=f"one of {', '.join(TASKS)}")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    parser.add_argument("--processing-res", type=int, default=DEFAULTS["processing_res"], metavar="N",
                        help="longer side while processing, 0 = native size (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], metavar="N",
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--dtype", default=DEFAULTS["dtype"], choices=("fp32", "fp16", "bf16"),
                        help="half precision needs a GPU; on CPU: fp32 (default: %(default)s)")
    parser.add_argument("--device", default=DEFAULTS["device"], choices=("auto", "cpu", "cuda"),
                        help="auto = cuda if available (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")


def _check_args(args) -> None:
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}: expected one of {', '.join(TASKS)}")
    if args.processing_res < 0:
        raise ValueError(f"--processing-res {args.processing_res}: expected >= 0 (0 = native size)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected >= 1")


@dataclass
class _Job:
    path: Path
    outputs: list[Path]


def _plan(inputs, out_dir: Path, overwrite: bool, report) -> tuple[list[_Job], int, int]:
    """Jobs to run, the number skipped because their outputs exist, the number of missing inputs."""
    pairs, missing = find_images(inputs)
    for path, reason in missing:
        report(path, reason)
    if not pairs and not missing:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}: expected files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    jobs, skipped = [], 0
    for (path, _), stem in zip(pairs, output_stems(pairs)):
        outputs = output_paths(out_dir, stem)
        if not overwrite and all(p.exists() for p in outputs):
            skipped += 1
        else:
            jobs.append(_Job(path, outputs))
    return jobs, skipped, len(missing)


def run(args) -> int:
    """Predict every input image; 0 if all were written or skipped, 1 if any failed (named on stderr)."""
    from tqdm.auto import tqdm

    _check_args(args)
    failed = []

    def report(path, reason):
        failed.append(path)
        tqdm.write(f"{path}: {reason}", file=sys.stderr)

    jobs, skipped, _ = _plan(args.inputs, args.output, args.overwrite, report)
    written = 0
    if jobs:
        pipe = GenPerceptPipeline.from_pretrained(args.base, args.unet, args.task, head=args.head,
                                                  device=args.device, dtype=args.dtype)
        with tqdm(total=len(jobs), desc="genpercept predict", unit="img") as bar:
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start : start + args.batch_size]
                written += _run_chunk(pipe, chunk, args, report)
                bar.update(len(chunk))
    print(f"{written} written, {skipped} skipped (existing), {len(failed)} failed")
    return 1 if failed else 0


def _run_chunk(pipe: GenPerceptPipeline, chunk: list[_Job], args, report) -> int:
    """Read, predict and write one batch of jobs (unreadable files reported); returns the number written."""
    loaded = []
    for job in chunk:
        try:
            loaded.append((job, load_image(job.path)))
        except ImageReadError as err:
            report(job.path, str(err))
    if not loaded:
        return 0
    out = pipe([image for _, image in loaded], processing_resolution=args.processing_res,
               batch_size=args.batch_size)
    written = 0
    for (job, _), pred in zip(loaded, out.prediction):
        try:
            write_outputs(pred, args.task, job.outputs)
            written += 1
        except OSError as err:
            report(job.path, f"cannot write outputs ({err})")
    return written
