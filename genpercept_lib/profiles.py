"""The three run profiles in one place: ``smoke`` (tests, CI), ``default`` (toy world on a laptop CPU),
``paper`` (SD2.1 and the real datasets on GPUs, at the paper's settings).

One code path serves all three: a notebook asks ``get_profile(profile)`` for its sizes and never
branches on the profile name for anything but where the data and weights come from.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

PROFILE_NAMES = ("smoke", "default", "paper")


class ConfigError(ValueError):
    """A setting the user must provide or fix (a missing environment variable, a bad override): one line."""


@dataclass(frozen=True)
class Profile:
    name: str
    # --- data ---------------------------------------------------------------------------------------
    source: str = "toyworld"          # "toyworld" or "real" (datasets under GENPERCEPT_DATA)
    image_size: int = 64              # training / evaluation resolution (square for the toy world)
    task_sizes: dict = field(default_factory=dict)  # toy world: task -> its own render size (thin structures)
    n_train: int = 2048               # size of the training pool
    n_eval: int = 64                  # images per held-out evaluation domain
    # --- models -------------------------------------------------------------------------------------
    model: str = "tiny"               # "tiny" (a prior the profile trains), "toy_sd" (the shipped toy Stable Diffusion,
                                      # data/toy_sd) or "sd21" (GENPERCEPT_SD21 weights)
    prior_vae_steps: int = 1500       # toy-world prior: VAE training iterations
    prior_unet_steps: int = 3000      # toy-world prior: generator training iterations
    prior_images: int = 0             # toy-world prior: images it pretrains on (0: max(64, n_train))
    prior_label_share: float = 0.5    # toy-world prior: share of each VAE batch that is label images (prior.py)
    model_overrides: dict = field(default_factory=dict)  # toy models: {"vae": {...}, "unet": {...}} config changes
    # --- fine-tuning (supplementary section 7 for the paper profile) ---------------------------------
    train_steps: int = 600
    task_steps: dict = field(default_factory=dict)  # task -> its own fine-tuning steps (cheap tasks train longer)
    batch_size: int = 8               # per micro-batch (one forward/backward of one process)
    grad_accum: int = 1               # micro-batches per optimizer step, over all processes (train.py)
    lr: float = 3e-4
    task_lr: dict = field(default_factory=dict)     # task -> its own learning rate (a head trained from scratch)
    mixed_precision: str = "no"       # "no" | "fp16" | "bf16" (accelerate)
    lr_flip_p: float = 0.5            # each training sample mirrored left-right with this probability (the authors'
                                      # augmentation.lr_flip_p in every config); 0 trains on the scenes as rendered
    # --- inference ----------------------------------------------------------------------------------
    processing: str = "authors"       # image processing and decode details (images.PROCESSINGS): the authors'
                                      # release by default, "marigold" for ours
    denoise_steps: tuple[int, ...] = (1, 2, 5, 10)
    ensemble_sizes: tuple[int, ...] = (1, 5, 10)
    # --- runtime (Table 1) --------------------------------------------------------------------------
    runtime_model: str = "sd21"
    runtime_resolution: int = 256
    runtime_images: int = 2
    runtime_ensemble: int = 2
    runtime_steps: int = 10
    # --- misc ---------------------------------------------------------------------------------------
    seed: int = 0
    seeds: int = 3                    # seeds of the models a headline claim compares (their spread judges it)
    threads: int | None = 1           # torch CPU threads (None: torch's default). Tiny models gain little from
                                      # more, and 2 threads on 2 shared cores thrash (measured: up to 7x slower)
    prior_threads: int | None = None  # torch threads while the toy prior trains (None: ``threads``); notebook 00
                                      # trains it alone, and the VAE's 64 px convolutions gain from a second one
    jobs: int = 1                     # notebooks ``reproduce`` runs at once (each one process with ``threads``
                                      # threads); a notebook marked runs_alone (00: the prior, 03: timings) runs alone
    extra: dict = field(default_factory=dict)  # paper: train_resolution, train_mix; optional "roots": reader name ->
                                               # folder, for datasets outside $GENPERCEPT_DATA; optional
                                               # "processing_res": one evaluation resolution for every benchmark
                                               # (0 = native) instead of each one's own, for a quick look

    def replace(self, **changes) -> Profile:
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", image_size=32, n_train=64, n_eval=4, prior_vae_steps=20, prior_unet_steps=20,
        train_steps=10, batch_size=4, denoise_steps=(1, 2), ensemble_sizes=(1, 2), seeds=2,
        runtime_model="tiny", runtime_resolution=64, runtime_images=1, runtime_ensemble=2, runtime_steps=2, jobs=2,
    ),
    # smoke runs two notebooks at once, as the default does (one torch thread each): a notebook's smoke run is
    # mostly its kernel starting and importing torch and diffusers (~15 s of the 17-53 s each took one at a time),
    # so two at a time halve the wall time on 2 cores (measured on a slow 2-core AMD EPYC: 6.2 min serially)
    # DIS and matting render at 96 px (wires, fence mesh and hair strands are sub-pixel at 64, one to two
    # pixels wide at 96); pose renders its scenes at 128 px and crops each person at 96 x 128 (pose/settings.py)
    # segmentation, matting and pose train longer (task_steps): their notebooks train two or three models, not the
    # dozens of the depth notebooks, so longer fine-tuning fits the budget; measured, 400 -> 1200 steps take
    # matting SAD 0.47 -> 0.40 and segmentation indoor mIoU 0.115 -> 0.137; pose AP 0.05 at 2000 steps, 0.11 at 5000
    # 400 fine-tuning steps and 48 images per held-out domain keep all twelve notebooks near the 45-minute budget
    # with the seeds the headline claims need (notebook 00's lever table: 5x longer fine-tuning buys ~0.01
    # AbsRel)
    # fine-tuning at lr 1e-3 (3e-4 before): measured with one seed on the default prior, one-step depth held-out
    # AbsRel 0.335 -> 0.320 (data/levers.csv, row lr_1e-3), normals 29.1 -> 28.1 deg, DIS max F 0.254 -> 0.288,
    # matting SAD 0.499 -> 0.469, segmentation indoor mIoU 0.220 -> 0.230, at the same cost
    # pose: its own learning rate and 6000 steps, and box-jittered training copies (pose/settings.py, notebook 06;
    # scripts/pose_levers.py measured AP 0.085 -> 0.137 with ground-truth boxes and 0.019 -> 0.103 with jittered ones)
    # two notebooks at once, one torch thread each: the tiny models' steps are mostly per-operation overhead, so
    # a second thread made one fine-tuning step only 1.11 x faster (pose's larger crops 1.22 x), while two
    # one-thread processes on the 2 cores each kept their speed (1.8 x the work per minute); the prior's VAE
    # gains 1.65 x from two threads and trains alone (notebook 00)
    "default": Profile(name="default", train_steps=400, lr=1e-3, n_eval=48, threads=1, prior_threads=2, jobs=2,
                       task_sizes={"dis": 96, "matting": 96, "pose": 128},
                       task_steps={"seg_toy": 1200, "matting": 1200, "pose": 6000}, task_lr={"pose": 1.5e-3},
                       extra={"pose_augment_copies": 4,
                              "pose_augment": {"shift": 0.10, "shift_prob": 1.0, "scale": 0.15, "rotate_prob": 0.0}}),
    "paper": Profile(
        name="paper", source="real", image_size=768, n_train=90_000, n_eval=-1, model="sd21",
        prior_vae_steps=0, prior_unet_steps=0, train_steps=30_000, batch_size=2, grad_accum=16,
        lr=3e-5, mixed_precision="fp16", runtime_resolution=768, runtime_images=100,
        runtime_ensemble=10, runtime_steps=10, threads=None,
        # supplementary section 7: Marigold's recipe, 30K iterations, (480, 640), batch 32 (2 per micro-batch x 16
        # accumulated, split over the GPUs of `accelerate launch`), lr 3e-5, 90% Hypersim / 10% Virtual KITTI,
        # ensemble 1 and 10 denoising steps for the exploration experiments; evaluation at processing
        # resolution 768 (image_size; each benchmark's own, see below) on every image of the five benchmarks (n_eval=-1)
        # Fig. 3's real-label model: 50K Taskonomy + 40K Cityscapes; the paper gives no sampling ratio, so we
        # mirror the synthetic recipe's 9 : 1 indoor / outdoor split (an assumption, stated in notebook 05)
        # evaluation follows the authors' scripts (script/eval_sd21/eval_ensemble1_step1/*): each benchmark at its
        # own processing resolution (tasks/depth.py), seed 1234
        extra={"train_resolution": (480, 640), "train_mix": {"hypersim": 0.9, "vkitti": 0.1},
               "real_label_mix": {"taskonomy": 0.9, "cityscapes": 0.1}, "eval_seed": 1234},
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile; a one-line error lists the accepted names."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def with_overrides(cfg: Profile, overrides: dict | None) -> Profile:
    """``cfg`` with some fields changed (a notebook's ``overrides`` parameter, e.g. {"train_steps": 1200}).

    Lists become tuples (papermill passes JSON); a dict merges into the field's dict (``{"extra": {"roots":
    ...}}`` keeps the paper's train_resolution); an unknown field is a one-line error naming the valid ones.
    """
    if not overrides:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides={overrides!r}: expected a dict of profile fields, e.g. {{\"train_steps\": 1200}}")
    names = [f.name for f in dataclasses.fields(Profile) if f.name != "name"]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"overrides: unknown profile field {unknown[0]!r}: expected one of {', '.join(names)}")

    def merged(key, value):
        check_field(key, value)
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, dict) and isinstance(getattr(cfg, key), dict):
            return {**getattr(cfg, key), **value}
        return value

    return cfg.replace(**{k: merged(k, v) for k, v in overrides.items()})


# what each field may hold: (type(s), a test, the expected values in words)
_POSITIVE_INT = ((int,), lambda v: v >= 1, "an integer >= 1")
_CHECKS = {
    "source": ((str,), lambda v: v in ("toyworld", "real"), "'toyworld' or 'real'"),
    "model": ((str,), lambda v: v in ("tiny", "toy_sd", "sd21"), "'tiny', 'toy_sd' or 'sd21'"),
    "image_size": ((int,), lambda v: v >= 16, "an integer >= 16"),
    "n_train": _POSITIVE_INT, "train_steps": _POSITIVE_INT, "batch_size": _POSITIVE_INT,
    "grad_accum": _POSITIVE_INT, "seeds": _POSITIVE_INT, "runtime_resolution": _POSITIVE_INT,
    "runtime_images": _POSITIVE_INT, "runtime_ensemble": _POSITIVE_INT, "runtime_steps": _POSITIVE_INT,
    "n_eval": ((int,), lambda v: v >= 1 or v == -1, "an integer >= 1, or -1 for every image"),
    "prior_vae_steps": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "prior_unet_steps": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "prior_images": ((int,), lambda v: v >= 0, "an integer >= 0 (0: n_train)"),
    "prior_label_share": ((float, int), lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)"),
    "model_overrides": ((dict,), lambda v: set(v) <= {"vae", "unet"} and all(isinstance(x, dict) for x in v.values()),
                        "a dict with 'vae' and/or 'unet' config changes"),
    "lr": ((int, float), lambda v: 0 < v < 1, "a learning rate in (0, 1)"),
    "mixed_precision": ((str,), lambda v: v in ("no", "fp16", "bf16"), "'no', 'fp16' or 'bf16'"),
    "processing": ((str,), lambda v: v in ("authors", "marigold"), "'authors' or 'marigold'"),
    "denoise_steps": ((list, tuple), lambda v: len(v) > 0 and all(isinstance(x, int) and x >= 1 for x in v),
                      "a non-empty list of integers >= 1"),
    "ensemble_sizes": ((list, tuple), lambda v: len(v) > 0 and all(isinstance(x, int) and x >= 1 for x in v),
                       "a non-empty list of integers >= 1"),
    "runtime_model": ((str,), lambda v: v in ("tiny", "sd21"), "'tiny' or 'sd21'"),
    "seed": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "threads": ((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "prior_threads": ((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "jobs": _POSITIVE_INT,
    "task_sizes": ((dict,), lambda v: all(isinstance(x, int) and x >= 16 for x in v.values()),
                   "a dict of task -> render size (integers >= 16)"),
    "task_steps": ((dict,), lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                          for x in v.values()),
                   "a dict of task -> fine-tuning steps (integers >= 1)"),
    "task_lr": ((dict,), lambda v: all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1
                                       for x in v.values()),
                "a dict of task -> learning rate (numbers in (0, 1))"),
    "lr_flip_p": ((int, float), lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "extra": ((dict,), lambda v: True, "a dict"),
}


def check_field(name: str, value) -> None:
    """A one-line ConfigError unless ``value`` fits profile field ``name`` (type and range); of ``extra``, the
    keys with a known meaning are checked too (``processing_res``), so a bad one stops a run before it starts."""
    if name == "extra" and isinstance(value, dict) and "processing_res" in value:
        res = value["processing_res"]
        if not isinstance(res, int) or isinstance(res, bool) or res < 0:
            raise ConfigError(f"overrides: extra.processing_res={res!r}: expected an integer >= 0 (0 = native size)")
    types, ok, expected = _CHECKS.get(name, ((object,), lambda v: True, "any value"))
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, not to a user
        raise ConfigError(f"overrides: {name}={value!r}: expected {expected}")
    if not isinstance(value, types) or not ok(value):
        raise ConfigError(f"overrides: {name}={value!r}: expected {expected}")


def setup(name: str, seed: int | None = None, overrides: dict | None = None, announce: bool = True) -> Profile:
    """What every notebook does first: validate the profile, apply ``overrides``, seed torch/numpy/random,
    set CPU threads."""
    import random

    import numpy as np
    import torch

    cfg = with_overrides(get_profile(name), overrides)
    if seed is not None:
        check_field("seed", seed)
        cfg = cfg.replace(seed=seed)
    from . import results

    where = results.set_run(name, {"seed": seed or None, "overrides": overrides or None})
    if announce and where.resolve() != (results.REPO_ROOT / "results").resolve() and \
            not os.environ.get("GENPERCEPT_RESULTS"):
        print(f"results of this run go to {where} (results/ holds the default profile's canonical outputs)")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return cfg


def env_path(var: str, what: str) -> str:
    """A path from an environment variable the paper profile needs, or a one-line error naming it."""
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"the paper profile needs {var} set to {what} (see data/README.md)")
    return value
