"""Your own data: fine-tune the one-step model on a folder of images and labels, and evaluate it there.

    genpercept train --task depth --data DIR -o OUT          # the profile's recipe; --steps ... override it
    genpercept evaluate --task depth --unet OUT --data DIR --image-blind
    genpercept predict --unet OUT photos/ -o PRED             # the base model comes from OUT/training.json

The folder format is ``data/folders.py`` (and data/README.md). Training is the notebooks' fine-tuning: the
one-step formulation (eq. (9): input z_x, target -z_y), the latent v-target MSE of ``finetune.make_loss`` (plus
the task's pixel loss with ``pixel_loss``), the shared loop ``train.train`` with its checkpoints in
``OUT/checkpoint/`` (a killed run resumes with the same command), labels encoded by the task's
``label_to_image`` exactly as the notebooks encode them. Images and labels are resized keeping their aspect
ratio to cover the training size and centre-cropped (``folders.cover_crop``), each mirrored with the profile's
``lr_flip_p``. The toy prior (CPU) encodes the whole training split once, as the toy world's pool is
(``sources.encode_samples``); an SD2.1 base (``--base`` or the paper profile) reads and encodes samples per step.

OUT holds what ``genpercept predict --unet OUT`` loads as it loads a released checkpoint (``config.json`` +
``diffusion_pytorch_model.safetensors``), and ``training.json``: the settings, the data, the split, the base
model, the classes (seg) and the training curve's ends. An existing non-empty OUT is reused only when its
``training.json`` holds the same settings (a resume), never overwritten otherwise.

Evaluation scores with the task's own ``scores`` (the notebooks' metrics: depth aligned per image, DSINE's
normal metrics, the DIS5K and P3M metrics, mIoU) over the split, one row per image beside the mean; the
image-blind row is ``Task.image_blind`` of the training split's labels, the same guess for every image.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import evaluate, finetune, images, models, schedule, tasks
from . import prior as prior_lib
from .cache import atomic_write_text
from .data import folders, pool, toyworld
from .pipeline import check_unet, load_empty_prompt_embedding
from .profiles import Profile
from .progress import tqdm
from .sources import LatentSource, Lazy, PixelSource, encode_samples
from .spec import FinetuneSpec
from .tasks.segmentation import ListedSegmentation
from .train import TrainConfig, train

RECORD = "training.json"
WEIGHTS = ("config.json", "diffusion_pytorch_model.safetensors")


# --------------------------------------------------------------------------------------------------
# The task of a folder and its base model
# --------------------------------------------------------------------------------------------------
def folder_task(name: str, classes: folders.ClassTable | None = None) -> tasks.Task:
    """The registered task ``name``; segmentation with the folder's classes.csv (``ListedSegmentation``)."""
    task = tasks.get(name)
    folders.label_folder(task.label_key)  # a task without a folder format (pose): one line
    if task.label_key != "semantic":
        return task
    if classes is None:
        raise folders.FolderError(f"task {name!r} needs the folder's classes.csv")
    return ListedSegmentation(task.name, classes.ids, classes.names, classes.colors)


def classes_from_record(record: dict) -> folders.ClassTable | None:
    rows = record.get("classes")
    if not rows:
        return None
    return folders.ClassTable(tuple(r["id"] for r in rows), tuple(r["name"] for r in rows),
                              np.array([r["rgb"] for r in rows], np.float64) / 255.0)


@dataclass
class Base:
    """What fine-tuning starts from and predictions decode with: the VAE, the prior U-Net, the text condition."""

    vae: object
    unet: object
    folder: Path
    kind: str                                   # "toy" (vae/ + unet/, zero text condition) | "sd21"
    text_embedding: torch.Tensor | None = None


def load_base(cfg: Profile, base: str | os.PathLike | None = None) -> Base:
    """``base`` (an SD2.1 folder, or a toy prior folder holding vae/ and unet/), else SD2.1 from $GENPERCEPT_SD21
    in the paper profile and the shipped toy Stable Diffusion (``data/toy_sd``) in the toy-world profiles: your
    data fine-tunes a downloaded-like model, never a prior trained on the spot."""
    if base is None:
        p = prior_lib.load_or_train_prior(cfg) if cfg.model == "sd21" else prior_lib.load_shipped()
        kind = "toy" if p.text_embedding is None else "sd21"
        return Base(p.vae, p.unet, Path(p.folder).resolve(), kind, p.text_embedding)
    folder = Path(base).expanduser().resolve()
    if (folder / "text_encoder").is_dir():
        return Base(models.load_vae(folder, "vae").eval(), models.load_unet(folder, "unet").eval(), folder,
                    "sd21", load_empty_prompt_embedding(folder))
    return Base(models.load_vae(folder, "vae").eval(), models.load_unet(folder, "unet").eval(), folder, "toy")


# --------------------------------------------------------------------------------------------------
# Settings and the output folder
# --------------------------------------------------------------------------------------------------
def training_size(cfg: Profile, resolution=None) -> tuple[int, int]:
    """(h, w) of the training crops: ``resolution`` (one number: square), else the profile's
    (``real.train_resolution``, else ``image_size`` square)."""
    if resolution is None:
        resolution = cfg.real.train_resolution or (cfg.image_size, cfg.image_size)
    size = tuple(int(r) for r in (resolution if isinstance(resolution, (list, tuple)) else (resolution,)))
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"--resolution {resolution}: expected one or two integers >= 8 (height width)")
    return size


def run_settings(cfg: Profile, task: tasks.Task, ds: folders.FolderSet, base: Base, size, steps: int,
                 batch_size: int, lr: float, seed: int, pixel_loss: bool) -> dict:
    """Everything that makes the trained model what it is: a resume must match it exactly."""
    return {"task": task.name, "data": str(ds.root.resolve()), "train_files": ds.fingerprint("train"),
            "n_train": len(ds.names("train")), "depth_scale": ds.depth_scale, "profile": cfg.name,
            "base": str(base.folder), "base_kind": base.kind, "formulation": "one_step", "resolution": list(size),
            "steps": steps, "batch_size": batch_size, "grad_accum": cfg.grad_accum, "lr": lr,
            "mixed_precision": cfg.mixed_precision, "lr_flip_p": cfg.lr_flip_p, "pixel_loss": pixel_loss,
            "seed": seed, "classes": ds.classes.as_json() if ds.classes else None}


def read_record(folder: str | os.PathLike) -> dict | None:
    """``folder/training.json`` (None where there is none); unreadable: a one-line error naming it."""
    path = Path(folder).expanduser() / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable training record ({err}); expected the JSON genpercept train writes"
                         ) from None


def existing_record(out: Path) -> dict | None:
    """The record of an earlier run in ``out`` (None: new or empty); a file, or a non-empty folder that holds no
    readable record, is refused with one line (checked before any model loads)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: a file, not a folder; expected a new or empty output folder")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        record = read_record(out)
    except ValueError:
        record = None
    if record is None or not isinstance(record.get("settings"), dict):
        raise ValueError(f"{out}: not empty and holds no {RECORD} of a run: refusing to write there; choose a new "
                         f"output folder")
    return record


def claim_output(out: Path, settings: dict) -> dict | None:
    """Make ``out`` ours: new or empty (start), or a run of exactly these settings (resume: its record is
    returned). Anything else is refused with one line, and nothing in it is touched."""
    record = existing_record(out)
    if record is not None:
        old = record["settings"]
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            shown = "; ".join(f"{k}={old.get(k)!r} (now {settings[k]!r})" for k in diff[:3])
            raise ValueError(f"{out} holds a run of other settings ({shown}): refusing to overwrite it; choose a new "
                             f"output folder, or rerun with its settings to resume")
        return record
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RECORD, json.dumps({"status": "training", "settings": settings}, indent=2) + "\n")
    return None


# --------------------------------------------------------------------------------------------------
# Training batches
# --------------------------------------------------------------------------------------------------
def training_arrays(ds: folders.FolderSet, names: list[str], task: tasks.Task, size) -> dict[str, torch.Tensor]:
    """The split's samples at ``size`` (cover and centre crop), stacked: rgb [N, 3, h, w], label, valid [N, h, w]."""
    samples = [folders.training_sample(ds.item(n), task.label_key, size, task.label_resize)
               for n in tqdm(names, desc=f"reading {ds.root.name}", unit="img", leave=False)]
    return {k: torch.stack([s[k] for s in samples]) for k in ("rgb", "label", "valid")}


class FolderStream:
    """Seeded training samples read from the folder per step (SD2.1 bases): the ``RealStream`` interface that
    ``sources.PixelSource`` draws from, a pure function of the generator (a resume reads the same samples)."""

    def __init__(self, ds: folders.FolderSet, names: list[str], task: tasks.Task, size, flip_p: float):
        self.ds, self.names, self.task, self.size, self.flip_p = ds, list(names), task, tuple(size), flip_p

    def sample(self, generator: torch.Generator) -> dict:
        name = self.names[int(torch.randint(0, len(self.names), (1,), generator=generator))]
        flip = bool(torch.rand((), generator=generator) < self.flip_p)
        return folders.training_sample(self.ds.item(name), self.task.label_key, self.size, self.task.label_resize,
                                       self.task.flip if flip else None)

    def batch(self, generator: torch.Generator, size: int) -> dict:
        samples = [self.sample(generator) for _ in range(size)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}  # rgb [B, 3, h, w], label, valid


def training_source(cfg: Profile, ds: folders.FolderSet, task: tasks.Task, base: Base, size):
    """Toy prior: the training split encoded once (``LatentSource``); SD2.1: read per step (``PixelSource``)."""
    names = ds.names("train")
    if not names:
        raise folders.FolderError(f"{ds.root}: no training images ({ds.split_note})")
    if base.kind == "toy":
        arrays = training_arrays(ds, names, task, size)
        return LatentSource(encode_samples(task, base.vae, arrays["rgb"], arrays["label"], arrays["valid"],
                                           cfg.lr_flip_p))
    return PixelSource(FolderStream(ds, names, task, size, cfg.lr_flip_p), base.vae)


# --------------------------------------------------------------------------------------------------
# genpercept train --data
# --------------------------------------------------------------------------------------------------
def _save_unet(unet, out: Path) -> None:
    """The fine-tuned U-Net into ``out`` in the released layout, each file swapped in whole."""
    tmp = out / ".unet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp)
    for name in WEIGHTS:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)


def train_folder(cfg: Profile, task_name: str, data, out, *, steps: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, resolution=None, base=None, depth_scale: float = folders.DEFAULT_DEPTH_SCALE,
                 seed: int = 0, pixel_loss: bool = False, stop_after: int | None = None, log=print) -> dict:
    """Fine-tune the one-step model on the folder ``data`` into ``out`` (module docstring); returns the record.
    ``stop_after``: end after that many steps, as if killed (the same call again resumes)."""
    # 1. the data, checked before any model loads
    key = tasks.get(task_name).label_key
    ds = folders.FolderSet(data, key, depth_scale, seed)
    task = folder_task(task_name, ds.classes)
    log(f"{ds.root}: {ds.split_note}")
    # 2. the recipe: the profile's, with the command line's overrides
    size = training_size(cfg, resolution)
    own = tasks.get(task_name).settings(cfg)  # the registered task's steps and lr (the profile's if it has none)
    steps, batch_size, lr = steps or own.steps, batch_size or cfg.batch_size, lr or own.lr
    if steps < 1 or batch_size < 1 or not 0 < lr < 1:
        raise ValueError(f"steps={steps}, batch size={batch_size}, lr={lr}: expected >= 1, >= 1 and a number in (0, 1)")
    out = Path(out).expanduser()
    existing_record(out)  # a folder that is not ours: refused before any model loads
    spec = FinetuneSpec(task=task.name, pixel_loss=pixel_loss, seed=seed, steps=steps)  # checks pixel_loss
    base_model = load_base(cfg, base)
    settings = run_settings(cfg, task, ds, base_model, size, steps, batch_size, lr, seed, pixel_loss)
    old = claim_output(out, settings)
    if old is not None and old.get("status") == "done":
        log(f"{out}: already trained with these settings ({RECORD})")
        return old
    # 3. the shared loop (checkpoints in out/checkpoint: a killed run resumes)
    unet = finetune.initial_unet(spec, base_model.unet)
    dev = finetune.device()
    base_model.vae.to(dev)
    for p in base_model.vae.parameters():
        p.requires_grad_(False)
    cond = finetune.training_cond(base_model, unet, batch_size)  # [B, L, D]
    source = Lazy(lambda: training_source(cfg, ds, task, base_model, size))
    acp = schedule.alphas_cumprod(*spec.betas)
    batch_fn, loss_fn = finetune.make_loss(spec, base_model.vae, acp, source, cond, seed)
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10 + 1), seed=seed,
                         grad_accum=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                         checkpoint_every=max(5, steps // 4), tag=json.dumps(settings, sort_keys=True))
    history = train(unet, batch_fn, loss_fn, config, out_dir=out, desc=f"train {task.name} on {ds.root.name}",
                    stop_after=stop_after)
    if not history or history[-1]["step"] < steps:
        log(f"{out}: stopped at step {history[-1]['step'] if history else 0} of {steps}; the same command resumes")
        return {"status": "training", "settings": settings}
    return _finish(out, unet, settings, ds, history, size)


def _finish(out: Path, unet, settings: dict, ds: folders.FolderSet, history: list, size) -> dict:
    from accelerate import PartialState

    record = {"status": "done", "settings": settings, "task": settings["task"],
              "base": {"path": settings["base"], "kind": settings["base_kind"]},
              "data": {"folder": settings["data"], "split": ds.split_note, "train": len(ds.names("train")),
                       "val": len(ds.names("val")), "depth_scale": ds.depth_scale},
              "how": {"formulation": "one_step (eq. 9)", "loss": "latent v-target MSE" +
                      (" + the task's pixel loss" if settings["pixel_loss"] else ""),
                      "resize": f"cover {size[0]} x {size[1]} keeping the aspect ratio, centre crop",
                      "steps": settings["steps"], "batch_size": settings["batch_size"], "lr": settings["lr"]},
              "processing_res": max(size), "classes": settings["classes"],
              "loss": {"first": history[0]["loss"], "last": history[-1]["loss"]}}
    if PartialState().is_main_process:
        _save_unet(unet, out)
        atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    return record


# --------------------------------------------------------------------------------------------------
# Loading a trained folder (evaluate, predict)
# --------------------------------------------------------------------------------------------------
def load_model(unet_dir, base=None, record: dict | None = None) -> tuple[object, Base]:
    """(U-Net of ``unet_dir``, its base): ``base`` if given, else the one ``training.json`` records."""
    record = record if record is not None else read_record(unet_dir)
    if base is None:
        if record is None:
            raise ValueError(f"{unet_dir}: no {RECORD} saying which base model it needs; pass --base")
        base = record["base"]["path"]
        if not Path(base).is_dir():
            raise ValueError(f"{Path(unet_dir) / RECORD}: its base model {base} is gone; pass --base")
    base_model = Base(*_load_base_parts(base))
    unet = models.load_unet(unet_dir).eval()
    check_unet(unet, base_model.vae, name=str(unet_dir))
    return unet, base_model


def _load_base_parts(base) -> tuple:
    folder = Path(base).expanduser().resolve()
    vae = models.load_vae(folder, "vae").eval()
    if (folder / "text_encoder").is_dir():
        return vae, None, folder, "sd21", load_empty_prompt_embedding(folder)
    return vae, None, folder, "toy", None


# --------------------------------------------------------------------------------------------------
# genpercept evaluate
# --------------------------------------------------------------------------------------------------
def image_blind_guess(ds: folders.FolderSet, task: tasks.Task, size) -> np.ndarray:
    """``Task.image_blind`` of the training split's labels at the training size: one prediction for every image."""
    names = ds.names("train")
    if not names:
        raise folders.FolderError(f"{ds.root}: no training images for the image-blind row ({ds.split_note})")
    arrays = training_arrays(ds, names, task, size)
    return np.asarray(task.image_blind(arrays["label"].numpy(), arrays["valid"].numpy()), np.float32)


def guess_for(guess: np.ndarray, task: tasks.Task, shape: tuple[int, int]) -> np.ndarray:
    """The image-blind guess [h, w] or [C, h, w] resized to an image's ``shape`` (class colours: nearest)."""
    x = torch.from_numpy(guess)
    x = x[None, None] if x.ndim == 2 else x[None]  # [1, C, h, w]
    mode = "nearest" if task.label_key == "semantic" else "bilinear"
    out = images.resize(x, shape, mode)[0].numpy()
    return out[0] if guess.ndim == 2 else out


def evaluate_folder(cfg: Profile, task_name: str, unet_dir, data, split: str = "val", *, image_blind: bool = False,
                    base=None, depth_scale: float | None = None, processing_res: int | None = None,
                    out_dir=None, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the ``split`` of folder ``data`` with the model in ``unet_dir`` and score it with the task's
    metrics; (metrics: one row per kind, per_image: one row per image and kind), both written as csv."""
    record = read_record(unet_dir) or {}
    settings = record.get("settings", {})
    if settings.get("task") not in (None, task_name):
        raise ValueError(f"{unet_dir} was trained for the {settings['task']} task, not {task_name}")
    key = tasks.get(task_name).label_key
    ds = folders.FolderSet(data, key, depth_scale or settings.get("depth_scale", folders.DEFAULT_DEPTH_SCALE),
                           settings.get("seed", 0))
    task = folder_task(task_name, ds.classes)
    names = ds.names(split)
    if not names:
        raise folders.FolderError(f"{ds.root}: no images in the {split} split ({ds.split_note})")
    unet, base_model = load_model(unet_dir, base, record or None)
    res = processing_res if processing_res is not None else record.get("processing_res", cfg.image_size)
    size = tuple(settings.get("resolution", training_size(cfg)))
    guess = image_blind_guess(ds, task, size) if image_blind else None
    rows, pairs = [], {"model": [], "image-blind": []}
    g = torch.Generator().manual_seed(evaluate.eval_seed(cfg))
    for name in tqdm(names, desc=f"evaluate {ds.root.name}/{split}", unit="img"):
        item = ds.item(name)
        preds = {"model": evaluate.predict_image(unet, base_model.vae, task, torch.from_numpy(item["rgb"]), res,
                                                 text_embedding=base_model.text_embedding, generator=g,
                                                 processing=cfg.processing)}
        if guess is not None:
            preds["image-blind"] = guess_for(guess, task, item["rgb"].shape[-2:])
        for kind, pred in preds.items():
            pairs[kind].append((item, pred))
            rows.append({"name": name, "kind": kind, **task.scores([(item, pred)])})
    metrics = pd.DataFrame([{"kind": kind, "split": split, "images": len(p), **task.scores(p)}
                            for kind, p in pairs.items() if p])
    per_image = pd.DataFrame(rows)
    out = Path(out_dir) if out_dir is not None else Path(unet_dir) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.csv", metrics.to_csv(index=False))
    atomic_write_text(out / "per_image.csv", per_image.to_csv(index=False))
    log(metrics.to_string(index=False))
    log(f"wrote {out / 'metrics.csv'} and {out / 'per_image.csv'}")
    return metrics, per_image


# --------------------------------------------------------------------------------------------------
# genpercept toyworld --export: a small folder in the format, for notebook 12 and a first try
# --------------------------------------------------------------------------------------------------
def export_toyworld(root, task_name: str, n: int, size: int = 64, seed: int = 0) -> Path:
    """``n`` toy-world scenes of the task's training domains written as a folder in the format (segmentation:
    the toy classes and their colours in classes.csv); refuses a folder that already has images."""
    task = tasks.get(task_name)
    key = task.label_key
    folders.label_folder(key)
    root = Path(root).expanduser()
    if n < 2 or size < 16:
        raise ValueError(f"--n {n}, --size {size}: expected at least 2 scenes of at least 16 px")
    if (root / "rgb").is_dir() and any((root / "rgb").iterdir()):
        raise ValueError(f"{root}: already holds images in rgb/; expected a new or empty folder")
    keys = tuple(dict.fromkeys(("rgb", "valid", key)))
    data = pool.render_pool(task.toy_mix(), n, size, split="train", seed=seed, keys=keys,
                            subject=task.subject_framing)
    for i in tqdm(range(n), desc=f"export {root.name}", unit="img", leave=False):
        folders.write_sample(root, f"scene_{i:04d}", {k: data[k][i] for k in keys}, key)
    if key == "semantic":
        folders.write_classes(root, toyworld.CLASSES, toyworld.SEMANTIC_COLORS)
    return root
