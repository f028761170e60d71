"""Experiments as tidy rows: train (cached) + evaluate, and the honest reference rows beside every model.

Every accuracy table holds, in a ``kind`` column:

* ``model``: a fine-tuned U-Net (``run``);
* ``untrained``: the repurposed prior before fine-tuning (``run(..., trained=False)``);
* ``image-blind``: the guess that never looks at the image - the mean training label (``Task.image_blind``),
  the same for every image and scored like a prediction (``image_blind``);
* ``vae-ceiling``: the ground truth encoded and decoded by the frozen VAE, scored like a prediction: the best
  any U-Net can do through this VAE (``vae_ceiling``).

and, in a ``split`` column, where it was scored: ``heldout`` (domains fine-tuning never saw) or ``indomain``
(unseen scenes of the training domains; ``evaluate.eval_domains(cfg, split="both")``).

Verdicts read these columns (``kind``, ``pipeline``, ``split``), never free text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import evaluate, images, models, tasks
from .finetune import device, finetune, initial_unet
from .profiles import Profile
from .sources import real_stream, training_pool, with_mirrored
from .spec import FinetuneSpec
from .tasks.normal import DSINE_TITLES

KINDS = ("model", "untrained", "image-blind", "vae-ceiling", "heatmap-ceiling")  # the ``kind`` column (pose: heatmaps)

# the paper's dataset keys for our held-out toy analogues (tables put both side by side on these keys)
PAPER_DATASET = {"toy_kitti": "KITTI", "toy_nyu": "NYU", "toy_scannet": "ScanNet", "toy_diode": "DIODE",
                 "toy_eth3d": "ETH3D", "kitti": "KITTI", "nyu": "NYU", "scannet": "ScanNet", "diode": "DIODE",
                 "eth3d": "ETH3D", "hypersim_test": "Hypersim (test)", **DSINE_TITLES}


def spec_columns(spec: FinetuneSpec) -> dict:
    return {"task": spec.task, "pipeline": spec.formulation, "beta_start": spec.betas[0], "beta_end": spec.betas[1],
            "data_fraction": spec.fraction, "labels": spec.labels, "init": spec.init, "pixel_loss": spec.pixel_loss,
            "seed": spec.seed}


def tidy(out: pd.DataFrame, spec: FinetuneSpec, setting: str, kind: str, columns: dict | None = None) -> pd.DataFrame:
    """The row format of every accuracy table: scores per ``domain`` (with ``denoise_steps``, ``ensemble`` and
    ``training`` columns) -> common columns in a fixed order: setting, kind, training, the spec, steps/ensemble,
    dataset, domain, then the metrics. Pose writes its rows through it too."""
    out = out.copy()
    out["dataset"] = out["domain"].map(lambda d: PAPER_DATASET.get(d, d))  # the paper's key for the same role
    out["split"] = out["domain"].map(evaluate.split_of)  # heldout | indomain
    for k, v in {**spec_columns(spec), **(columns or {})}.items():
        out[k] = v
    out["setting"], out["kind"] = setting, kind
    front = ["setting", "kind", "training", *spec_columns(spec), "denoise_steps", "ensemble", "split", "dataset",
             "domain"]
    metrics = [c for c in out.columns if c not in front]
    return out[front + metrics]


def run(cfg: Profile, prior, spec: FinetuneSpec, domains, settings=((1, 1),), trained: bool = True) -> pd.DataFrame:
    """Fine-tune ``spec`` (or, with ``trained=False``, take the untrained initial U-Net) and evaluate it on
    ``domains`` for each (denoise steps, ensemble size) in ``settings``. One row per (setting, domain)."""
    if trained:
        unet, history = finetune(cfg, spec, prior)
        training = training_note(spec, history)
    else:
        unet, training = initial_unet(spec, prior.unet).eval(), "untrained"
    dev = device()
    unet, vae = unet.to(dev), prior.vae.to(dev)
    text = getattr(prior, "text_embedding", None)
    frames = []
    for n_steps, ensemble in settings:
        df = evaluate.evaluate(cfg, unet, vae, spec, domains, n_steps, ensemble, desc=f"eval {spec.label()}",
                               text_embedding=None if text is None else text.to(dev))
        frames.append(df.assign(denoise_steps=n_steps, ensemble=ensemble, training=training))
    return tidy(pd.concat(frames, ignore_index=True), spec, spec.label(), "model" if trained else "untrained")


def training_note(spec: FinetuneSpec, history: list) -> str:
    """The ``training`` column of a model row: from the prior or from scratch, and how many steps."""
    return f"fine-tuned {len(history)} steps" if spec.init == "prior" else f"from scratch {len(history)} steps"


def run_seeds(cfg: Profile, prior, spec: FinetuneSpec, domains, seeds, settings=((1, 1),)) -> pd.DataFrame:
    """``run`` for each seed (the spec's ``seed`` replaced): the rows a headline claim compares, so that a
    difference can be held against the seed-to-seed spread (``claims.compare``)."""
    import dataclasses

    return pd.concat([run(cfg, prior, dataclasses.replace(spec, seed=int(s)), domains, settings) for s in seeds],
                     ignore_index=True)


def seeds(cfg: Profile, first: int = 0) -> list[int]:
    """The seeds a headline comparison trains: ``cfg.seeds`` of them, starting at ``first``."""
    return list(range(first, first + cfg.seeds))


# ---------------------------------------------------------------------------------------------------------
# Reference rows
# ---------------------------------------------------------------------------------------------------------


def training_labels(cfg: Profile, spec: FinetuneSpec, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N, ...], valid [N, H, W]) of the training data of ``spec``: the whole toy training pool, or
    ``n`` samples of the real training stream (at the training resolution). As training sees them: with the
    left-right mirrored scenes when the task's toy training mirrors them (``cfg.lr_flip_p``; the real stream
    flips its samples itself), so the image-blind guess is the mean of what the model was trained on."""
    task = tasks.get(spec.task)
    if cfg.source == "toyworld":
        data = training_pool(cfg, spec)
        labels = data[task.label_key]
        valid = data["valid"] if "valid" in data else np.ones((len(labels), *labels.shape[-2:]), bool)
        if task.mirrors_scenes and cfg.lr_flip_p > 0:  # training sees the mirrored scenes too
            both, both_valid = with_mirrored(task, torch.from_numpy(labels), torch.from_numpy(valid))  # [2N, ...]
            # equally weighted: the training distribution exactly at the authors' p = 0.5; p = 1 draws mirrors only
            keep = slice(None) if cfg.lr_flip_p < 1 else slice(len(labels), None)
            return both[keep].numpy(), both_valid[keep].numpy()
        return labels, valid
    batch = real_stream(cfg, spec).batch(torch.Generator().manual_seed(cfg.seed), n)
    return batch["label"].numpy(), batch["valid"].numpy()


def fit_guess(pred: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """A [H, W] or [C, H, W] map resized to ``size`` (the image-blind guess on images of another size)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    t = torch.from_numpy(np.asarray(pred, np.float32))
    t = t[None, None] if t.ndim == 2 else t[None]
    out = images.resize(t, tuple(size), mode)[0]
    return out[0].numpy() if pred.ndim == 2 else out.numpy()


def image_blind_guesser(cfg: Profile, spec: FinetuneSpec):
    """item -> the image-blind guess for it (task layout, the item's size): the task's mean training label."""
    task = tasks.get(spec.task)
    labels, valid = training_labels(cfg, spec)
    guess = task.image_blind(labels, valid)  # task layout

    def guess_for(item):
        return fit_guess(guess, item["rgb"].shape[-2:], task.pred_resize)
    return guess_for


def reference_rows(cfg: Profile, spec: FinetuneSpec, domains, predict, setting: str, kind: str) -> pd.DataFrame:
    """Rows of a reference that needs no trained model: ``predict(item, domain)`` for every evaluation item, scored
    like a prediction, with kind ``kind`` and no pipeline or training (the image-blind and ceiling rows; pose's)."""
    task = tasks.get(spec.task)
    out = evaluate.score_sets(cfg, spec, domains,
                              lambda d: ((item, predict(item, d)) for item in evaluate.items(cfg, d, task)), kind)
    out = out.assign(denoise_steps=0, ensemble=0, training="none")
    return tidy(out, spec, setting, kind, {"pipeline": "none"})


def image_blind(cfg: Profile, spec: FinetuneSpec, domains) -> pd.DataFrame:
    """The ``image-blind`` rows: the task's mean training label, the same for every image, scored like a
    prediction on each domain."""
    guess_for = image_blind_guesser(cfg, spec)
    return reference_rows(cfg, spec, domains, lambda item, domain: guess_for(item),
                          "image-blind (the mean training label)", "image-blind")


@torch.no_grad()
def ceiling_prediction(task, vae, item: dict, processing_res: int, processing) -> np.ndarray:
    """The ground truth of one item through the frozen VAE and back, decoded like a prediction (task layout),
    at the item's resolution (real images: at the processing resolution, then resized back)."""
    task = tasks.get(task)
    valid = item.get("valid")
    img, _ = task.label_to_image(torch.from_numpy(np.asarray(item[task.label_key], np.float32))[None],
                                 None if valid is None else torch.from_numpy(np.asarray(valid, bool))[None])
    h, w = img.shape[-2:]
    size = images.processing_size(h, w, processing_res, "round")
    x, padding = images.pad_to_multiple(images.resize(img, size, task.label_resize), models.vae_scale_factor(vae))
    p = next(vae.parameters())
    decoded = models.decode(vae, models.encode(vae, x.to(p.device, p.dtype))).float().cpu()  # [1, 3, h', w']
    pred = task.decode(decoded, images.get_processing(processing))  # [1, h', w'] or [1, 3, h', w']
    pred = pred[:, None] if pred.dim() == 3 else pred
    pred = images.resize(images.unpad(pred, padding), (h, w), task.pred_resize)[0]  # [C, H, W]
    return pred[0].numpy() if task.channels == 1 else pred.numpy()


def vae_ceiling(cfg: Profile, prior, spec: FinetuneSpec, domains) -> pd.DataFrame:
    """The ``vae-ceiling`` rows: every evaluation label encoded and decoded by the frozen VAE, scored like a
    prediction, at the resolution the models are evaluated at (``evaluate.eval_res``: toy images at their size, real
    ones at the benchmark's processing resolution, native where that is 0)."""
    task = tasks.get(spec.task)
    vae = prior.vae.to(device())

    def predict(item, domain):
        res = evaluate.eval_res(cfg, domain, task.name)  # where the model is evaluated (0 = native size)
        return ceiling_prediction(task, vae, item, res, cfg.processing)

    return reference_rows(cfg, spec, domains, predict, "VAE round trip of the ground truth", task.ceiling_kind)


def references(cfg: Profile, prior, spec: FinetuneSpec, domains, kinds=("untrained", "image-blind", "vae-ceiling"),
               settings=((1, 1),)) -> pd.DataFrame:
    """The reference rows of an accuracy table for the models of ``spec``'s task, in ``kind`` order."""
    make = {"untrained": lambda: run(cfg, prior, spec, domains, settings, trained=False),
            "image-blind": lambda: image_blind(cfg, spec, domains),
            "vae-ceiling": lambda: vae_ceiling(cfg, prior, spec, domains)}
    unknown = set(kinds) - set(make)
    if unknown:
        raise ValueError(f"reference kinds {sorted(unknown)}: expected some of {', '.join(make)}")
    return pd.concat([make[k]() for k in kinds], ignore_index=True)
