"""The three run profiles in one place: ``smoke`` (tests, CI), ``default`` (toy world on a laptop CPU),
``paper`` (SD2.1 and the real datasets on GPUs, at the paper's settings).

One code path serves all three: a notebook asks ``get_profile(profile)`` for its sizes and never
branches on the profile name for anything but where the data and weights come from.

Every setting has one typed home, and a notebook's ``overrides`` reach each one (checked, one-line errors):

* ``Profile``: the run sizes (``{"train_steps": 1200}``);
* ``RealData`` (``Profile.real``): where real data comes from and how it is used (``{"real": {"roots": ...}}``);
* ``TaskSettings``: a task's own render size, steps and learning rate, held by the task per profile
  (``Task.own_settings``; pose's ``PoseSettings`` adds its crops and augmentation) and changed with
  ``{"tasks": {"pose": {"steps": 4000}}}``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from . import runs

PROFILE_NAMES = ("smoke", "default", "paper")


class ConfigError(ValueError):
    """A setting the user must provide or fix (a missing environment variable, a bad override): one line."""


class DatasetError(ValueError):
    """A dataset folder or file that is missing or not in the expected layout (one-line message)."""


# -- checks: what a setting may hold, as (type(s), a test, the expected values in words) ---------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_mix(v) -> bool:
    return (isinstance(v, Mapping) and len(v) > 0 and all(isinstance(k, str) and _is_number(w) and w >= 0
                                                           for k, w in v.items()) and sum(v.values()) > 0)


_POSITIVE_INT = ((int,), lambda v: v >= 1, "an integer >= 1")
_OPTIONAL_POSITIVE_INT = ((int, type(None)), lambda v: v is None or v >= 1, "an integer >= 1 or null")
_LR = ((int, float), lambda v: 0 < v < 1, "a learning rate in (0, 1)")
_ANY = ((object,), lambda v: True, "any value")


def check(name: str, value, rule: tuple, prefix: str = "overrides: ") -> None:
    """A one-line ConfigError unless ``value`` fits ``rule`` (types, test, expected values in words)."""
    types, ok, expected = rule
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, not to a user
        raise ConfigError(f"{prefix}{name}={value!r}: expected {expected}")
    if not isinstance(value, types) or not ok(value):
        raise ConfigError(f"{prefix}{name}={value!r}: expected {expected}")


class Settings:
    """What every typed settings dataclass shares: ``CHECKS`` (field -> rule, checked when one is built) and
    ``changed``, which applies a notebook's overrides to it with a one-line error for a wrong name or value."""

    CHECKS: ClassVar[dict[str, tuple]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check(f"{type(self).__name__}.{f.name}", getattr(self, f.name), self.CHECKS.get(f.name, _ANY), prefix="")

    def changed(self, changes, where: str):
        """A copy with ``changes`` (a dict of field -> value; lists become tuples, a dict for a nested settings
        object changes that object's fields); ``where`` names this object in errors (e.g. ``real``)."""
        if not isinstance(changes, Mapping):
            raise ConfigError(f"overrides: {where}={changes!r}: expected a dict of its settings")
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(f"overrides: unknown {where} setting {unknown[0]!r}: expected one of {', '.join(names)}")
        return dataclasses.replace(self, **{k: self._changed_value(k, v, where) for k, v in changes.items()})

    def _changed_value(self, key: str, value, where: str):
        name = f"{where}.{key}" if where else key
        current = getattr(self, key)
        if isinstance(current, Settings):  # e.g. pose's augment: the given fields change, the others stay
            return current.changed(value, name)
        value = tuple(value) if isinstance(value, list) else value  # papermill passes JSON
        check(name, value, self.CHECKS.get(key, _ANY))
        return value


S = TypeVar("S")


@dataclass(frozen=True)
class PerProfile(Generic[S]):
    """One value for each profile, as data: a task's own settings (``tasks/base.py``). Every profile has one, so a
    new profile must say what each task does in it."""

    smoke: S
    default: S
    paper: S

    @classmethod
    def same(cls, value: S) -> PerProfile[S]:
        return cls(smoke=value, default=value, paper=value)

    def of(self, cfg) -> S:
        """The value of ``cfg``'s profile."""
        if cfg.name not in PROFILE_NAMES:
            raise ConfigError(f"profile {cfg.name!r}: expected one of {', '.join(PROFILE_NAMES)}")
        return getattr(self, cfg.name)


@dataclass(frozen=True)
class TaskSettings(Settings):
    """A task's own training settings where they differ from the profile's (None: the profile's). Each task holds
    its values per profile (``Task.own_settings``); ``Task.settings(cfg)`` fills in the profile's and applies the
    overrides ``{"tasks": {"<task>": {"steps": 1200}}}``."""

    size: int | None = None    # toy world render size (thin structures need more pixels); None: image_size
    steps: int | None = None   # fine-tuning steps (a task whose notebook trains few models trains longer)
    lr: float | None = None    # learning rate (a head trained from scratch)

    CHECKS: ClassVar[dict[str, tuple]] = {
        "size": ((int, type(None)), lambda v: v is None or v >= 16, "an integer >= 16 or null (image_size)"),
        "steps": _OPTIONAL_POSITIVE_INT,
        "lr": ((int, float, type(None)), lambda v: v is None or 0 < v < 1, "a learning rate in (0, 1) or null"),
    }

    def resolved(self, cfg) -> TaskSettings:
        """A copy with the profile's value wherever this one has None."""
        return dataclasses.replace(self, size=self.size or cfg.image_size, steps=self.steps or cfg.train_steps,
                                   lr=self.lr or cfg.lr)


def settings_of(task: str, own: PerProfile, cfg) -> TaskSettings:
    """Task ``task``'s settings in ``cfg``: its own value for the profile, changed by the overrides
    ``cfg.tasks[task]`` (a wrong name or value: one line), the profile's values where it has none."""
    return own.of(cfg).changed(cfg.tasks.get(task, {}), f"tasks.{task}").resolved(cfg)


@dataclass(frozen=True)
class RealData(Settings):
    """Where real data comes from and how it is used (paper profile; the toy world ignores it). Override one with
    ``{"real": {"roots": {"vkitti": "/mnt/vkitti"}}}``; a dict replaces the setting whole."""

    train_resolution: tuple[int, int] | None = None  # (h, w) of the training crops; None: image_size square
    train_mix: Mapping[str, float] | None = None     # depth's training readers -> weight; None: the task's own
    real_label_mix: Mapping[str, float] = field(
        default_factory=lambda: {"taskonomy": 0.9, "cityscapes": 0.1})  # Fig. 3's real-label depth model
    eval_seed: int | None = None                     # seed of evaluation's noise; None: the profile's seed
    roots: Mapping[str, Any] = field(default_factory=dict)  # reader -> folder, for sets outside $GENPERCEPT_DATA
    processing_res: int | None = None  # one evaluation resolution for every benchmark (0 = native), a quick
                                       # look instead of each one's own (the authors'); None: each one's own

    CHECKS: ClassVar[dict[str, tuple]] = {
        "train_resolution": ((tuple, type(None)), lambda v: v is None or (len(v) == 2 and all(
            _is_int(x) and x >= 8 for x in v)), "a (height, width) pair of integers >= 8, or null (image_size)"),
        "train_mix": ((Mapping, type(None)), lambda v: v is None or _is_mix(v),
                      "a dict of reader -> weight >= 0 (positive sum), or null (the task's own)"),
        "real_label_mix": ((Mapping,), _is_mix, "a dict of reader -> weight >= 0 (positive sum)"),
        "eval_seed": ((int, type(None)), lambda v: v is None or v >= 0, "an integer >= 0 or null (the seed)"),
        "roots": ((Mapping,), lambda v: all(isinstance(k, str) and isinstance(p, (str, os.PathLike))
                                            for k, p in v.items()), "a dict of reader name -> folder"),
        "processing_res": ((int, type(None)), lambda v: v is None or v >= 0,
                           "an integer >= 0 (0 = native size), or null (each benchmark's own)"),
    }


@dataclass(frozen=True)
class Profile(Settings):
    """The run sizes of one profile (data, models, fine-tuning, inference, runtime). A task's own settings live
    with the task (``TaskSettings``), the real data's in ``real`` (``RealData``)."""

    name: str
    # --- data ---------------------------------------------------------------------------------------
    source: str = "toyworld"          # "toyworld" or "real" (datasets under GENPERCEPT_DATA)
    image_size: int = 64              # training / evaluation resolution (square for the toy world)
    n_train: int = 2048               # size of the training pool
    n_eval: int = 64                  # images per held-out evaluation domain
    real: RealData = RealData()       # real data: training resolution and mix, roots, evaluation resolution, seed
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
    study_steps: int | None = None    # steps of the sweeps that train many models to compare with each other (02's
                                      # presets, 04's data fractions; ``for_study``); None: train_steps
    batch_size: int = 8               # per micro-batch (one forward/backward of one process)
    grad_accum: int = 1               # micro-batches per optimizer step, over all processes (train.py)
    lr: float = 3e-4
    mixed_precision: str = "no"       # "no" | "fp16" | "bf16" (accelerate)
    lr_flip_p: float = 0.5            # each training sample mirrored left-right with this probability (the authors'
                                      # augmentation.lr_flip_p in every config); 0 trains on the scenes as rendered
    tasks: dict = field(default_factory=dict)  # overrides of tasks' own settings (``TaskSettings``): task name ->
                                               # {setting: value}; the values themselves live with each task
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
    threads: int | None = 1           # torch CPU threads (None: torch's default); tiny models gain little from more,
                                      # and two threads on two shared cores thrash (docs/measurements.md)
    prior_threads: int | None = None  # torch threads while the toy prior trains (None: ``threads``); notebook 00
                                      # trains it alone, and the VAE's 64 px convolutions gain from a second one
    jobs: int = 1                     # notebooks ``reproduce`` runs at once (each one process with ``threads``
                                      # threads); a notebook marked runs_alone (00: the prior, 03: timings) runs alone

    def __post_init__(self):  # checked where a notebook's overrides change it (``with_overrides``), not when code
        pass                  # builds one

    def replace(self, **changes) -> Profile:
        return dataclasses.replace(self, **changes)

    def _changed_value(self, key: str, value, where: str):
        if key == "tasks":  # per task, the given settings change and the others stay
            check_tasks(value)
            return {**self.tasks, **{t: {**self.tasks.get(t, {}), **_tuples(v)} for t, v in value.items()}}
        if key == "model_overrides" and isinstance(value, dict):  # merges into the profile's
            check(key, value, _CHECKS[key])
            return {**self.model_overrides, **value}
        return super()._changed_value(key, value, where)


# Why each value is what it is (timings, lever studies): docs/measurements.md. A task's own render size, steps and
# learning rate per profile: its module (``own_settings``; pose: pose/settings.py).
PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", image_size=32, n_train=64, n_eval=4, prior_vae_steps=20, prior_unet_steps=20,
        train_steps=10, batch_size=4, denoise_steps=(1, 2), ensemble_sizes=(1, 2), seeds=2,
        runtime_model="tiny", runtime_resolution=64, runtime_images=1, runtime_ensemble=2, runtime_steps=2, jobs=2,
    ),
    # the shipped toy Stable Diffusion (data/toy_sd); two notebooks at once, one torch thread each; 400 fine-tuning
    # steps (150 in the sweeps), lr 1e-3, 24 images per evaluation domain, ensembles of up to 5 and SD2.1 timed at
    # 128 px keep every notebook within the budget (docs/measurements.md)
    "default": Profile(name="default", model="toy_sd", train_steps=400, study_steps=150, lr=1e-3, n_eval=24,
                       ensemble_sizes=(1, 5), runtime_resolution=128, threads=1, jobs=2),
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
        real=RealData(train_resolution=(480, 640), train_mix={"hypersim": 0.9, "vkitti": 0.1},
                      real_label_mix={"taskonomy": 0.9, "cityscapes": 0.1}, eval_seed=1234),
    ),
}


def for_study(cfg: Profile) -> Profile:
    """``cfg`` for a sweep that trains many models to compare with each other (notebooks 02 and 04): its models
    train ``study_steps`` (when the profile sets them), all of them the same."""
    return cfg.replace(train_steps=cfg.study_steps) if cfg.study_steps else cfg


def get_profile(name: str) -> Profile:
    """The named profile; a one-line error lists the accepted names."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


# spellings of settings that moved, and where they live now (a one-line hint instead of "unknown field")
MOVED = {
    "extra": '{"real": {...}} (train_resolution, train_mix, real_label_mix, eval_seed, roots, processing_res) or '
             '{"tasks": {"pose": {...}}} (crop, feature_stride, augment_copies, augment, train_samples, detections)',
    "task_sizes": '{"tasks": {"<task>": {"size": ...}}}',
    "task_steps": '{"tasks": {"<task>": {"steps": ...}}}',
    "task_lr": '{"tasks": {"<task>": {"lr": ...}}}',
}


def with_overrides(cfg: Profile, overrides: dict | None) -> Profile:
    """``cfg`` with some fields changed (a notebook's ``overrides`` parameter, e.g. {"train_steps": 1200}).

    Lists become tuples (papermill passes JSON); ``real`` changes the given real-data settings
    (``{"real": {"roots": {...}}}`` keeps the paper's train_resolution); ``tasks`` a task's own settings
    (``{"tasks": {"pose": {"steps": 4000}}}``); a wrong name or value is a one-line error saying what is expected.
    """
    if not overrides:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides={overrides!r}: expected a dict of profile fields, e.g. {{\"train_steps\": 1200}}")
    moved = sorted(set(overrides) & set(MOVED))
    if moved:
        raise ConfigError(f"overrides: {moved[0]!r} is no profile field any more: use {MOVED[moved[0]]}")
    names = [f.name for f in dataclasses.fields(Profile) if f.name != "name"]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"overrides: unknown profile field {unknown[0]!r}: expected one of {', '.join(names)}")
    return dataclasses.replace(cfg, **{k: cfg._changed_value(k, v, "") for k, v in overrides.items()})


def _tuples(changes: dict) -> dict:
    """A task's setting changes with JSON lists as tuples (a crop size)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}


def check_tasks(value) -> None:
    """``tasks`` overrides: task name -> {setting: value}; the settings every task has (size, steps, lr) are
    checked here, a task's own (pose's crop ...) when the task reads them (``Task.settings``)."""
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ConfigError(f"overrides: tasks={value!r}: expected a dict of task name -> {{setting: value}}, "
                          "e.g. {\"pose\": {\"steps\": 4000}}")
    for task, changes in value.items():
        for key, v in _tuples(changes).items():
            if key in TaskSettings.CHECKS:
                check(f"tasks.{task}.{key}", v, TaskSettings.CHECKS[key])


_CHECKS = {
    "source": ((str,), lambda v: v in ("toyworld", "real"), "'toyworld' or 'real'"),
    "model": ((str,), lambda v: v in ("tiny", "toy_sd", "sd21"), "'tiny', 'toy_sd' or 'sd21'"),
    "image_size": ((int,), lambda v: v >= 16, "an integer >= 16"),
    "n_train": _POSITIVE_INT, "train_steps": _POSITIVE_INT, "study_steps": _OPTIONAL_POSITIVE_INT,
    "batch_size": _POSITIVE_INT,
    "grad_accum": _POSITIVE_INT, "seeds": _POSITIVE_INT, "runtime_resolution": _POSITIVE_INT,
    "runtime_images": _POSITIVE_INT, "runtime_ensemble": _POSITIVE_INT, "runtime_steps": _POSITIVE_INT,
    "n_eval": ((int,), lambda v: v >= 1 or v == -1, "an integer >= 1, or -1 for every image"),
    "prior_vae_steps": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "prior_unet_steps": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "prior_images": ((int,), lambda v: v >= 0, "an integer >= 0 (0: n_train)"),
    "prior_label_share": ((float, int), lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)"),
    "model_overrides": ((dict,), lambda v: set(v) <= {"vae", "unet"} and all(isinstance(x, dict) for x in v.values()),
                        "a dict with 'vae' and/or 'unet' config changes"),
    "lr": _LR,
    "mixed_precision": ((str,), lambda v: v in ("no", "fp16", "bf16"), "'no', 'fp16' or 'bf16'"),
    "processing": ((str,), lambda v: v in ("authors", "marigold"), "'authors' or 'marigold'"),
    "denoise_steps": ((list, tuple), lambda v: len(v) > 0 and all(isinstance(x, int) and x >= 1 for x in v),
                      "a non-empty list of integers >= 1"),
    "ensemble_sizes": ((list, tuple), lambda v: len(v) > 0 and all(isinstance(x, int) and x >= 1 for x in v),
                       "a non-empty list of integers >= 1"),
    "runtime_model": ((str,), lambda v: v in ("tiny", "sd21"), "'tiny' or 'sd21'"),
    "seed": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "threads": _OPTIONAL_POSITIVE_INT,
    "prior_threads": _OPTIONAL_POSITIVE_INT,
    "jobs": _POSITIVE_INT,
    "lr_flip_p": ((int, float), lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
}
Profile.CHECKS = _CHECKS


def check_field(name: str, value) -> None:
    """A one-line ConfigError unless ``value`` fits profile field ``name`` (type and range); ``real`` and ``tasks``
    are checked setting by setting, so a bad one stops a run before it starts."""
    if name == "real":
        RealData().changed(value, "real")
    elif name == "tasks":
        check_tasks(value)
    else:
        check(name, value, _CHECKS.get(name, _ANY))


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
    where = runs.set_run(name, {"seed": seed or None, "overrides": overrides or None})
    if announce and where.resolve() != (runs.REPO_ROOT / "results").resolve() and \
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
