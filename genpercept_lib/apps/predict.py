"""``genpercept predict``: run a GenPercept checkpoint on image files and folders.

    genpercept predict --base SD21_DIR --unet genpercept-models/unet_depth_v2 --task depth photos/ -o out/

Per image ``<stem>_pred.npy`` (the prediction at the input size), ``<stem>_pred.png`` and ``<stem>_colored.png``
(and any extra picture the task adds), under ``-o`` with the input folder structure mirrored; what each
holds is the task's (``tasks/<name>.py``: depth a 16-bit PNG and the Spectral map, masks and mattes 8-bit, ...).
``--processing`` picks the image processing: ``authors`` (default; what the released ``run.py`` does, so the
released checkpoints give the released outputs) or ``marigold`` (ours: padding, rounding, float resizing, unit
normals; see ``images.py`` and notebook 11 for what each changes).

Inputs of every kind are read the same way (``images.load_image``): RGB, grayscale, RGBA/LA (composited on white),
palette (with or without transparency), 16-bit PNG/TIFF, EXIF orientation applied. An image that cannot be
read or predicted (corrupt, too small at the processing size, out of memory at its size) is named on stderr with
the reason and the run goes on; the exit status is then 1. Files inside folders that are not images (by extension)
are ignored, except images of a format this tool does not read (``.gif``, ``.svg``, ...) and symbolic links that
lead nowhere (a loop, a missing target): each is named on one line, as is a file named explicitly that is not an
image; symbolic links to folders are followed. This tool's own outputs (``*_pred.png``, ``*_colored.png``) in the
output folder are never taken as inputs (an input folder that holds the output folder). The output folder records
what made its outputs (``genpercept_predict.json``: task, model folders, processing); existing outputs are
kept only if they were made the same way, and replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import errno
import json
import mimetypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import tasks
from ..cache import atomic_path, atomic_write_text
from ..images import IMAGE_EXTENSIONS, PROCESSINGS, ImageReadError, is_image_file, load_image, processing_size
from ..progress import tqdm

if TYPE_CHECKING:  # the pipeline (diffusers) is imported when a model is loaded: `--help` and bad input are quick
    from ..pipeline import GenPerceptPipeline

OUTPUT_SUFFIXES = ("_pred.npy", "_pred.png", "_colored.png")
RECORD = "genpercept_predict.json"  # what made the outputs in a folder (task, model folders, settings)
DEFAULTS = dict(processing_res=768, batch_size=1, dtype="fp32", device="auto", processing="authors")


def _walk(root: Path) -> list[Path]:
    """Every file under ``root``, symbolic links to folders followed (each real folder once: no loops)."""
    files, seen = [], set()
    for folder, subdirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs.sort()
        files += [Path(folder) / n for n in sorted(names)]
    return files


def _dead_link(path: Path) -> str | None:
    """Why the symbolic link ``path`` leads to no file (a loop, a missing target), or None if it is not one."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as err:
        return ("a loop of symbolic links" if err.errno == errno.ELOOP else
                f"a symbolic link to {os.readlink(path)}, which does not exist" if err.errno == errno.ENOENT else
                f"a symbolic link that cannot be followed ({err.strerror})")
    return None


def _unread_image(path: Path) -> bool:
    """An image by its extension (``mimetypes``: .gif, .svg, .ico, ...) in a format this tool does not read."""
    kind = mimetypes.guess_type(path.name)[0] or ""
    return kind.startswith("image/") and not is_image_file(path)


def find_images(inputs) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Image files under ``inputs`` (files or folders, recursive) -> ((path, relative_path) list, problems).

    A folder's images keep their path relative to it (so the output mirrors it; symbolic links to folders are
    followed); a file given directly is relative to its own folder (its name). Non-image files inside folders
    are ignored; ``problems`` lists, each with the reason, inputs that do not exist, files named explicitly that
    are not images this tool reads, and inside folders the images of a format it does not read (a ``.gif``) and
    symbolic links that lead nowhere (a loop). Sorted within each input, duplicates dropped.
    """
    unread = f"an image format this tool does not read (expected {', '.join(IMAGE_EXTENSIONS)})"
    found: list[tuple[Path, Path]] = []
    problems: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in inputs:
        root = Path(raw).expanduser()
        if root.is_dir():
            pairs = []
            for p in _walk(root):
                dead = _dead_link(p)
                if dead or _unread_image(p):
                    problems.append((p, dead or unread))
                elif p.is_file() and is_image_file(p):
                    pairs.append((p, p.relative_to(root)))
        elif root.is_file():
            if not is_image_file(root):
                problems.append((root, f"not an image file this tool reads (expected {', '.join(IMAGE_EXTENSIONS)})"))
                continue
            pairs = [(root, Path(root.name))]
        else:
            problems.append((root, _dead_link(root) or "no such file or folder"))
            continue
        for path, rel in pairs:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((path, rel))
    return found, problems


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


def write_outputs(pred: np.ndarray, task: str | tasks.Task, paths: list[Path], rgb: np.ndarray | None = None
                  ) -> list[Path]:
    """Write the .npy and the task's two PNGs (plus any extra outputs it has), each atomically (temp file,
    then rename); returns every path written."""

    task = tasks.get(task)
    npy, png, colored = paths
    writers = {
        npy: lambda p: np.save(p, task.npy_array(pred)),
        png: lambda p: task.prediction_png(pred).save(p, format="PNG"),
        colored: lambda p: task.colored(pred, rgb).save(p, format="PNG"),
    }
    stem = npy.name[: -len(OUTPUT_SUFFIXES[0])]
    for suffix, obj in task.extra_outputs(pred, rgb).items():
        path = npy.with_name(stem + suffix)
        writers[path] = (lambda o: (lambda p: np.save(p, o)) if isinstance(o, np.ndarray)
                         else (lambda p: o.save(p, format="PNG")))(obj)
    for path, write in writers.items():
        with atomic_path(path) as tmp:
            write(tmp)
    return list(writers)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``genpercept predict`` options (the task is checked in ``run`` so its error stays one line)."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive)")
    parser.add_argument("--base", default=None, metavar="DIR",
                        help="Stable Diffusion 2.1 folder, diffusers layout: vae/, text_encoder/, tokenizer/ "
                             "(default for a model genpercept train --data wrote: the base in its training.json)")
    parser.add_argument("--unet", required=True, metavar="DIR",
                        help="GenPercept U-Net folder (config.json + diffusion_pytorch_model.safetensors)")
    parser.add_argument("--head", default=None, metavar="DIR",
                        help="DPT head folder with model.safetensors (e.g. dpt_head_identity/)")
    parser.add_argument("--task", default=None, metavar="TASK",
                        help=f"one of {', '.join(tasks.names())} (default: the task in the --unet's training.json)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    parser.add_argument("--processing-res", type=int, default=None, metavar="N",
                        help=f"longer side while processing, 0 = native size (default: {DEFAULTS['processing_res']}, "
                             f"or the training resolution in the --unet's training.json)")
    parser.add_argument("--processing", default=DEFAULTS["processing"], metavar="NAME",
                        help=f"image processing: {' or '.join(PROCESSINGS)} (default: %(default)s, as the "
                             f"authors' run.py)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], metavar="N",
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--dtype", default=DEFAULTS["dtype"], choices=("fp32", "fp16", "bf16"),
                        help="half precision needs a GPU; on CPU: fp32 (default: %(default)s)")
    parser.add_argument("--device", default=DEFAULTS["device"], choices=("auto", "cpu", "cuda"),
                        help="auto = cuda if available (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite outputs that already exist (also those made with other settings)")
    parser.add_argument("--allow-base-unet", action="store_true",
                        help="run the base model's own (not fine-tuned) U-Net on purpose")


def _from_training_record(args) -> tasks.Task:
    """Fill in what the --unet's ``training.json`` (``genpercept train --data``) knows: the task (segmentation with
    its classes), the base model, the processing resolution; returns the task. Without one, --base and --task are
    required, as for the released checkpoints."""
    if args.task is not None:
        tasks.get(args.task)  # one line naming the known tasks, before anything is read
    args.record = record = None
    if (Path(args.unet).expanduser() / "training.json").is_file():  # (diffusers is imported only then)
        from .. import userdata

        args.record = record = userdata.read_record(args.unet)
    if record is None:
        for flag, value in (("--base", args.base), ("--task", args.task)):
            if value is None:
                raise ValueError(f"{flag} is required: {args.unet} has no training.json saying it")
        args.processing_res = DEFAULTS["processing_res"] if args.processing_res is None else args.processing_res
        return tasks.get(args.task)
    if args.task not in (None, record["task"]):
        raise ValueError(f"--task {args.task}: {args.unet} was trained for the {record['task']} task "
                         f"({Path(args.unet) / 'training.json'})")
    args.task = record["task"]
    args.base = args.base or record["base"]["path"]
    if args.processing_res is None:
        args.processing_res = int(record.get("processing_res", DEFAULTS["processing_res"]))
    return userdata.folder_task(args.task, userdata.classes_from_record(record))


def _check_args(args) -> None:
    if args.processing not in PROCESSINGS:
        raise ValueError(f"--processing {args.processing!r}: expected one of {', '.join(PROCESSINGS)}")
    if args.processing_res < 0:
        raise ValueError(f"--processing-res {args.processing_res}: expected >= 0 (0 = native size)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected >= 1")


@dataclass
class _Job:
    path: Path
    outputs: list[Path]


def _record(args) -> dict:
    """What makes an output folder's predictions what they are: written beside them, checked on reruns."""
    def folder(p):
        return str(Path(p).expanduser().resolve()) if p else None

    return {"task": args.task, "base": folder(args.base), "unet": folder(args.unet), "head": folder(args.head),
            "processing": args.processing, "processing_res": args.processing_res}


def _check_output_folder(out_dir: Path, record: dict, overwrite: bool) -> None:
    """One line, before any compute, if the folder cannot be written or holds outputs made otherwise."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{out_dir}: cannot write outputs there ({err.strerror or err})") from None
    path = out_dir / RECORD
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path}: unreadable record of earlier outputs; pass --overwrite or choose another "
                         f"output folder") from None
    diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in record.items() if old.get(k) != v]
    if diff:
        raise ValueError(f"{out_dir} holds outputs made with {'; '.join(diff)}: pass --overwrite to replace them, "
                         f"or choose another output folder")


def _check_unet_is_not_the_base(args) -> None:
    """The base model's own U-Net is not a GenPercept model: refuse it unless asked for (one line)."""
    unet, base = Path(args.unet).expanduser().resolve(), Path(args.base).expanduser().resolve()
    if getattr(args, "allow_base_unet", False):
        return
    if unet in (base, base / "unet"):
        raise ValueError(f"--unet {args.unet} is the base model's own U-Net, not a GenPercept one; pass a fine-tuned "
                         f"U-Net folder (e.g. genpercept-models/unet_depth_v2), or --allow-base-unet on purpose")


def _own_output(path: Path, out_dir: Path) -> bool:
    """Whether ``path`` is one of this tool's outputs in ``out_dir`` (``<stem>_pred.png``, ``<stem>_colored.png``)."""
    if not path.name.endswith(OUTPUT_SUFFIXES):
        return False
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(out_dir)))


def _plan(inputs, out_dir: Path, overwrite: bool, report) -> tuple[list[_Job], int, int]:
    """Jobs to run, the number skipped because their outputs exist, the number of bad inputs."""
    pairs, problems = find_images(inputs)
    for path, reason in problems:
        report(path, reason)
    own = [pair for pair in pairs if _own_output(pair[0], out_dir)]
    if own:  # the output folder inside an input folder: predicting on predictions would stack them up
        pairs = [pair for pair in pairs if pair not in own]
        print(f"note: {len(own)} file(s) in {out_dir} are outputs of this tool (*_pred.png, *_colored.png): "
              f"not taken as inputs", file=sys.stderr)
    if not pairs and not problems:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}: expected files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    jobs, skipped = [], 0
    for (path, _), stem in zip(pairs, output_stems(pairs)):
        outputs = output_paths(out_dir, stem)
        if not overwrite and all(p.exists() for p in outputs):
            skipped += 1
        else:
            jobs.append(_Job(path, outputs))
    return jobs, skipped, len(problems)


def run(args) -> int:
    """Predict every input image; 0 if all were written or skipped, 1 if any failed (named on stderr).

    Everything that can be checked is checked before the model loads: the task and settings, the output
    folder (writable, and not holding outputs made with other settings), the U-Net (not the base's own).
    A failure that concerns one image (unreadable, too small, out of memory at its size) is reported on one
    line naming the file, and the run goes on with the others.
    """

    task = _from_training_record(args)
    _check_args(args)
    _check_unet_is_not_the_base(args)
    record = _record(args)
    _check_output_folder(args.output, record, args.overwrite)
    failed = []

    def report(path, reason):
        failed.append(path)
        tqdm.write(f"{path}: {reason}", file=sys.stderr)

    jobs, skipped, _ = _plan(args.inputs, args.output, args.overwrite, report)
    written = 0
    if jobs:
        pipe = _load_pipeline(args, task)

        atomic_write_text(args.output / RECORD, json.dumps(record, indent=2) + "\n")
        with tqdm(total=len(jobs), desc="genpercept predict", unit="img") as bar:
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start : start + args.batch_size]
                written += _run_chunk(pipe, chunk, args, report, task)
                bar.update(len(chunk))
    print(f"{written} written, {skipped} skipped (existing), {len(failed)} failed")
    return 1 if failed else 0


def _too_small(pipe: GenPerceptPipeline, image, processing_res: int, err: Exception | None = None) -> str | None:
    """Why ``image`` [3, H, W] is too small to predict at ``processing_res``, in our words, or None. Before the
    model runs: without padding (the authors' processing) a side under the VAE's factor (8) leaves the latent
    empty. After ``err``: a latent side under the U-Net's down-sampling (8 for SD2.1) leaves its inner levels
    under a pixel, where some models fail. torch's own words ("Kernel size can't be greater than actual input
    size", "Expected more than 1 value per channel") do not say what to change."""
    h, w = image.shape[-2:]
    ph, pw = processing_size(h, w, processing_res, pipe.processing.size_rounding)
    factor, pad = pipe.scale_factor, pipe.processing.pad
    lh, lw = (-(-ph // factor), -(-pw // factor)) if pad else (ph // factor, pw // factor)
    down = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    at = f"at --processing-res {processing_res}" if processing_res else "at its native size (--processing-res 0)"
    if not pad and min(ph, pw) < factor:
        need = f"under the {factor} px a side the VAE needs"
    elif err is not None and min(lh, lw) < down:
        need = f"a {lw} x {lh} latent, under the {down} px a side this U-Net needs ({type(err).__name__})"
    else:
        return None
    return (f"cannot predict this {w} x {h} image: too small, {pw} x {ph} px {at}, {need}; try another "
            f"--processing-res (0 = native size)")


# a failure that belongs to one image (its size, its memory), not to the program
_PER_IMAGE_ERRORS = (RuntimeError, ValueError, MemoryError)


def _load_pipeline(args, task: tasks.Task) -> GenPerceptPipeline:
    """The released layout (SD2.1 base + U-Net folder), or a model trained here on the toy prior (its base holds
    vae/ and no text encoder: the zero text condition it trained with)."""
    from .. import pipeline, userdata

    processing = getattr(args, "processing", None)
    if args.record is not None and args.head is None:
        unet, base = userdata.load_model(args.unet, args.base, args.record)
        pipe = pipeline.GenPerceptPipeline(base.vae, unet, task, base.text_embedding, processing=processing)
        return pipe.to(args.device, args.dtype)
    return pipeline.GenPerceptPipeline.from_pretrained(args.base, args.unet, task, head=args.head, device=args.device,
                                              dtype=args.dtype, processing=processing)


def _run_chunk(pipe: GenPerceptPipeline, chunk: list[_Job], args, report, task=None) -> int:
    """Read, predict and write one batch of jobs; a failing image is reported and the others go on."""
    loaded = []
    for job in chunk:
        try:
            image = load_image(job.path)
        except ImageReadError as err:
            report(job.path, str(err))
            continue
        small = _too_small(pipe, image, args.processing_res)
        if small:
            report(job.path, small)
        else:
            loaded.append((job, image))
    if not loaded:
        return 0
    try:
        out = pipe([image for _, image in loaded], processing_resolution=args.processing_res,
                   batch_size=args.batch_size)
        predictions = list(out.prediction)
    except _PER_IMAGE_ERRORS as err:
        if len(loaded) > 1:  # find the image(s) it was about: one at a time
            return sum(_run_chunk(pipe, [job], args, report, task) for job, _ in loaded)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        (job, image), = loaded
        h, w = image.shape[-2:]
        report(job.path, _too_small(pipe, image, args.processing_res, err)
               or f"cannot predict this {w} x {h} image ({type(err).__name__}: {first})")
        return 0
    written = 0
    for (job, image), pred in zip(loaded, predictions):
        try:
            write_outputs(pred, task or args.task, job.outputs, rgb=image.permute(1, 2, 0).numpy())
            written += 1
        except OSError as err:
            report(job.path, f"cannot write outputs ({err})")
    return written
