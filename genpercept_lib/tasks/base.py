"""What a perception task is: everything that differs between depth, normals, DIS, matting, segmentation.

GenPercept treats every dense task the same way (supplementary section 8): the label becomes a 3-channel
image in [-1, 1], the frozen VAE encodes it, the U-Net learns ``-z_y`` from ``z_x`` in one step, and the VAE
decodes the prediction. A ``Task`` owns only what differs:

* the label <-> VAE image mapping (``label_to_image``, ``decode``) and how predictions are merged across
  ensemble members (``ensemble``);
* how labels and predictions are resized (bilinear for continuous maps, nearest for class maps) and flipped;
* its pixel-space loss through the frozen decoder (``pixel_loss``; None: latent loss only);
* its metrics (``metrics``, ``scores``), the reference guess that never looks at the image (``image_blind``),
  its evaluation sets (toy domains, real benchmarks) and real training mix;
* how ``genpercept predict`` writes a prediction (``to_output``, ``prediction_png``, ``colored``).

Everything else (the trainer, ``perceive``, evaluation, ``genpercept predict``, the CLI, the notebooks)
asks the task and never branches on its name. These attributes and methods are the dense-task protocol:
``finetune``, ``evaluate`` and ``experiment`` call nothing else and never probe a task for more (a test checks).
A new task is a subclass in ``tasks/<name>.py`` registered with ``tasks.register``. Pose is not a dense task:
``genpercept_lib/pose/`` registers a ``Task`` for its name, metrics and evaluation sets and brings its own
training and prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..domains import POOL_KEYS, REALLIKE_DOMAINS, TRAIN_DOMAINS, TRAIN_MIX
from ..images import Processing
from ..profiles import PerProfile, TaskSettings, settings_of


@dataclass(frozen=True)
class EvalSet:
    """A real evaluation set of the paper profile: which reader and split, and the authors' settings for it
    (``script/eval_sd21/*``: processing resolution, 0 = native; the least-squares alignment grid)."""

    reader: str
    split: str | None = None
    processing_res: int = 768
    align_max_res: int | None = None
    title: str = ""


class Task:
    """One dense perception task. Subclasses set the class attributes and override what differs."""

    name: str = ""
    description: str = ""
    channels: int = 1                  # channels of a prediction: 1 ([H, W]) or 3 ([3, H, W])
    label_key: str = ""                # the sample key holding the label (toy world and readers alike)
    label_resize: str = "nearest"      # labels when a training sample is resized
    pred_resize: str = "bilinear"      # predictions when brought back to the input size
    metrics: tuple[str, ...] = ()      # the columns ``scores`` returns, in order
    lower_is_better: tuple[str, ...] = ()
    headline: str = ""                 # the metric verdicts and plots read
    pool_keys: tuple[str, ...] = POOL_KEYS  # what the toy world renders for it (rgb, depth, valid, normal)
    subject_framing: bool = False      # toy pools frame the foreground object as the subject (DIS, matting)
    png_bits: int = 8                  # genpercept predict's ``_pred.png``
    in_prior: bool = False             # the toy VAE sees this task's label images while pretraining
    real_train_mix: dict[str, float] = {}     # paper profile: reader -> sampling weight
    real_eval: dict[str, EvalSet] = {}        # paper profile: evaluation set name -> EvalSet
    toy_eval: tuple[str, ...] | None = None   # toy evaluation sets (None: toyworld.EVAL_DOMAINS)
    toy_train_mix: dict[str, float] | None = None  # toy training domains -> weight (None: toyworld.TRAIN_MIX)
    ceiling_kind: str = "vae-ceiling"         # what the representation ceiling row is called
    formulations: tuple[str, ...] = ()        # the pipelines it may run (empty: every one; spec.py checks)
    train_subsets: dict = {}                  # name -> f(pool) -> bool [N]: scenes a model may train on
    mirrors_scenes = True                     # toy training mirrors scenes with cfg.lr_flip_p (sources.py); a task
                                              # with its own augmentation (pose) sets False
    own_settings: PerProfile[TaskSettings] = PerProfile.same(TaskSettings())  # render size, steps, lr per profile
                                              # where they differ from the profile's (None: the profile's)

    def toy_mix(self, labels: str = "clean") -> dict[str, float]:
        """Toy training domains -> weight: the task's mix (default 90% toy Hypersim / 10% toy Virtual KITTI,
        supplementary section 7); with ``labels="reallike"`` the same scenes with defective labels."""
        mix = dict(self.toy_train_mix or TRAIN_MIX)
        if labels == "clean":
            return mix
        by_clean = {d.replace("_reallike", ""): d for d in REALLIKE_DOMAINS}
        return {by_clean[d]: w for d, w in mix.items()}

    def indomain_sets(self) -> tuple[str, ...]:
        """Toy world: the in-domain evaluation sets, unseen scenes of each training domain (``eval`` split), in the
        toy world's order."""
        mix = self.toy_mix()
        return tuple(d for d in TRAIN_DOMAINS if mix.get(d, 0) > 0)

    def settings(self, cfg) -> TaskSettings:
        """This task's render size, fine-tuning steps and learning rate in profile ``cfg`` (``own_settings``, the
        profile's where the task has none, changed by ``{"tasks": {name: {...}}}`` overrides)."""
        return settings_of(self.name, self.own_settings, cfg)

    def toy_size(self, cfg) -> int:
        """The toy world's render size for this task (``settings(cfg).size``; default ``image_size``)."""
        return int(self.settings(cfg).size)

    def label_fingerprint(self):
        """What else defines this task's label images beyond its name (JSON-able, or None): part of the prior's
        cache key when the toy VAE learns them (``in_prior``); segmentation: its palette."""
        return None

    def model_tag(self, cfg) -> str:
        """Settings outside the spec and the training config that change what a fine-tuned model is, as a suffix
        of the model's cache key: the toy render size when the task has its own (``settings``); pose adds its
        crop size and augmentation; ``/subject`` for a task whose toy scenes frame their subject
        (``subject_framing``); the left-right flip when the task's toy training uses it (``lr_flip_p``)."""
        if cfg.source != "toyworld":
            return ""
        size = self.toy_size(cfg)
        tag = f"/{size}px" if size != cfg.image_size else ""
        if self.subject_framing:  # its training scenes are framed otherwise than the plain ones
            tag += "/subject"
        if self.mirrors_scenes and cfg.lr_flip_p:
            tag += f"/flip{cfg.lr_flip_p:g}"
        return tag

    def eval_pool(self, cfg, name: str, render) -> dict:
        """Toy world: the rendered evaluation set ``name`` (default: the held-out domain of that name).
        ``render(mix, n, size, **options)`` renders a pool (``data.pool.render_pool``, passed in by
        ``evaluate.eval_pool``: a task describes its sets, the data floor renders them)."""
        return render(name, cfg.n_eval, self.toy_size(cfg), split="eval", seed=cfg.seed, keys=self.pool_keys,
                      subject=self.subject_framing)

    def real_item(self, cfg, item: dict) -> dict:
        """Real data: a reader's sample as this task evaluates it (default: as read)."""
        return item

    def __repr__(self) -> str:
        return f"<task {self.name}: {self.channels} channel(s), metrics {', '.join(self.metrics)}>"

    # -- labels -> VAE images ------------------------------------------------------------------------------
    def label_to_image(self, label: torch.Tensor, valid: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of labels (``[B, H, W]`` or ``[B, 3, H, W]``) -> ([B, 3, H, W] in [-1, 1], [B, H, W] valid)."""
        raise NotImplementedError

    def flip(self, label: torch.Tensor) -> torch.Tensor:
        """The label of the left-right mirrored image (``[..., H, W]``)."""
        return label.flip(-1)

    # -- decoded VAE images -> predictions -----------------------------------------------------------------
    def decode(self, decoded: torch.Tensor, processing: Processing) -> torch.Tensor:
        """The decoded image [B, 3, H, W] (about [-1, 1]) -> the prediction: [B, H, W] in [0, 1] for
        one-channel tasks (the channel mean, as the authors' ``decode_pred``)."""
        decoded = decoded.float()
        if processing.mean_then_clip:  # authors: mean of the channels, then clip
            return (decoded.mean(dim=1).clamp(-1.0, 1.0) + 1.0) / 2.0  # [B, H, W]
        return (decoded.clamp(-1.0, 1.0).mean(dim=1) + 1.0) / 2.0  # [B, H, W]

    def finish(self, pred: torch.Tensor, processing: Processing) -> torch.Tensor:
        """A prediction [B, C, H, W] after it was resized back to the input's size (normals: renormalised
        there when ``processing.unit_normals``). Default: unchanged."""
        return pred

    def ensemble(self, members: np.ndarray, processing: Processing) -> np.ndarray:
        """E predictions of one image [E, ...] -> one; default: the per-pixel median."""
        return np.median(members, axis=0)

    def pixel_loss(self, decoded: torch.Tensor, label_img: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """The task's weighted loss terms on the decoded prediction [B, 3, H, W] vs the label image, on valid
        pixels (the trainer adds them to the latent loss one by one, in this order)."""
        raise NotImplementedError(f"the {self.name} task has no pixel-space loss")

    has_pixel_loss: bool = False

    # -- evaluation ----------------------------------------------------------------------------------------
    def protocol(self, domain: str, real: bool, eval_set: EvalSet | None = None) -> dict:
        """Keyword arguments of ``scores`` for one evaluation set (e.g. a depth range); ``eval_set`` is the real
        set's ``EvalSet`` (None for toy domains)."""
        return {}

    def scores(self, pairs, **protocol) -> dict[str, float]:
        """Dataset scores from (item, prediction) pairs: item a numpy sample dict, prediction in task layout."""
        raise NotImplementedError

    def image_blind(self, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The guess that never looks at the image, from the training labels [N, ...] and masks [N, H, W]:
        one prediction (task layout) used for every image. Default: the mean label over valid pixels."""
        w = valid.astype(np.float64)
        lab = labels.astype(np.float64)
        if lab.ndim == 4:  # [N, C, H, W]
            w = w[:, None]
        return (lab * w).sum(0) / np.maximum(w.sum(0), 1.0)

    # -- genpercept predict --------------------------------------------------------------------------------
    def to_output(self, pred: torch.Tensor, processing: Processing) -> np.ndarray:
        """A prediction at the input size ([1, H, W] or [3, H, W]) -> numpy [H, W] or [H, W, 3] in [0, 1]."""
        out = pred.float().clamp(0.0, 1.0).cpu().numpy()
        return out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)

    def npy_array(self, out: np.ndarray) -> np.ndarray:
        """``_pred.npy``: the prediction as float32 (a task with classes writes its class map)."""
        return np.asarray(out, dtype=np.float32)

    def prediction_png(self, out: np.ndarray) -> Image.Image:
        """``_pred.png``: 16-bit grey (png_bits 16), else 8-bit grey or RGB. Values are truncated to integer
        levels as the authors' ``run.py`` writes them (``(pred * 65535).astype(np.uint16)``); the ``.npy`` keeps
        the exact values."""
        out = np.clip(out, 0.0, 1.0)
        if self.png_bits == 16:
            return Image.fromarray((out * 65535.0).astype(np.uint16))  # mode I;16
        return Image.fromarray((out * 255.0).astype(np.uint8))  # L or RGB

    def colored(self, out: np.ndarray, rgb: np.ndarray | None = None) -> Image.Image:
        """``_colored.png``: a picture of the prediction (grey maps, RGB as is)."""
        out = np.clip(out, 0.0, 1.0)
        pic = np.repeat(out[..., None], 3, axis=-1) if out.ndim == 2 else out  # [H, W, 3]
        return Image.fromarray(np.round(pic * 255.0).astype(np.uint8))

    def extra_outputs(self, out: np.ndarray, rgb: np.ndarray | None = None) -> dict[str, object]:
        """More files ``predict`` writes beside the three standard ones: suffix -> PIL image or array."""
        return {}


# ---------------------------------------------------------------------------------------------------------
# The registry (re-exported by ``tasks``)
# ---------------------------------------------------------------------------------------------------------

REGISTRY: dict[str, Task] = {}


def register(task: Task, replace: bool = False) -> Task:
    """Add ``task`` under ``task.name``; registering a name twice is an error unless ``replace``."""
    if not task.name or not task.name.isidentifier():
        raise ValueError(f"task name {task.name!r}: expected a non-empty identifier")
    if task.name in REGISTRY and not replace and REGISTRY[task.name] is not task:
        raise ValueError(f"task {task.name!r} is registered already (pass replace=True to redefine it)")
    if task.channels not in (1, 3):
        raise ValueError(f"task {task.name!r}: channels={task.channels}, expected 1 or 3")
    REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def get(name: str | Task) -> Task:
    """The registered task called ``name`` (a Task passes through); a one-line error lists the known ones."""
    if isinstance(name, Task):
        return name
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)
