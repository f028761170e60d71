"""Repurposing the prior for perception: one fine-tuning recipe and one evaluation for every experiment.

A ``FinetuneSpec`` names everything an experiment varies (task, pipeline, beta schedule, data fraction,
label quality, initialisation, losses). ``finetune`` trains the U-Net with the shared loop
(``train.train``) on VAE latents of a rendered toy-world pool, and caches the result by the spec's
fingerprint, so notebooks that ask for the same model (say, the one-step depth model of 01 and the 1/1 row
of 04) train it once. ``evaluate_depth`` and ``evaluate_normals`` run ``pipeline.perceive`` on the held-out
domains and score it with the Marigold / DSINE protocols.

The VAE stays frozen throughout (as in the paper); only the U-Net learns.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import formulations, labels, losses, models, pipeline, schedule
from .data import pool, readers, stream
from .metrics import depth as depth_metrics
from .metrics import normals as normal_metrics
from .profiles import Profile
from .train import TrainConfig, step_generator, train

TASKS = ("depth", "normal")
LABEL_SOURCES = ("clean", "reallike")
INITS = ("prior", "scratch")


@dataclass(frozen=True)
class FinetuneSpec:
    task: str = "depth"
    formulation: str = "one_step"
    betas: tuple[float, float] = schedule.SD21_BETAS  # ignored by one_step (alpha_bar = 0 by definition)
    fraction: float = 1.0          # share of the training pool (Table 2: 1, 1/2, ..., 1/16)
    labels: str = "clean"          # "clean" synthetic labels or "reallike" defective ones (Fig. 3)
    init: str = "prior"            # "prior" (pretrained generator) or "scratch" (random U-Net)
    multires_noise: bool = True    # Marigold's pyramid noise; used only with Gaussian noise (stochastic)
    pixel_loss: bool = False       # add SSI + gradient losses through the frozen VAE decoder
    steps: int | None = None       # None: the profile's train_steps
    seed: int = 0

    def __post_init__(self):
        checks = {"task": (self.task, TASKS), "formulation": (self.formulation, formulations.FORMULATIONS),
                  "labels": (self.labels, LABEL_SOURCES), "init": (self.init, INITS)}
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction!r}: expected a number in (0, 1]")

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def label(self) -> str:
        parts = [self.task, self.formulation]
        if self.formulation != "one_step":
            parts.append(f"betas=({self.betas[0]:g},{self.betas[1]:g})")
        if self.fraction != 1:
            parts.append(f"data={self.fraction:g}")
        if self.labels != "clean":
            parts.append(self.labels)
        if self.init != "prior":
            parts.append(self.init)
        if self.pixel_loss:
            parts.append("pixel-loss")
        return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def training_mix(spec: FinetuneSpec) -> dict[str, float]:
    """90% toy Hypersim / 10% toy Virtual KITTI (supplementary section 7), clean or real-like labels."""
    from .data import toyworld

    if spec.labels == "clean":
        return dict(toyworld.TRAIN_MIX)
    by_clean = {d.replace("_reallike", ""): d for d in toyworld.REALLIKE_DOMAINS}
    return {by_clean[d]: w for d, w in toyworld.TRAIN_MIX.items()}


@torch.no_grad()
def training_latents(cfg: Profile, spec: FinetuneSpec, vae) -> dict[str, torch.Tensor]:
    """Toy world: z_x, z_y and masks of the (fraction of the) training pool, encoded once with the frozen VAE."""
    data = pool.render_pool(training_mix(spec), cfg.n_train, cfg.image_size, split="train", seed=cfg.seed)
    n = max(cfg.batch_size, int(round(cfg.n_train * spec.fraction)))
    rgb = torch.from_numpy(data["rgb"][:n]).float() * 2 - 1  # [N, 3, H, W]
    sample = {k: torch.from_numpy(data[k][:n]) for k in ("depth", "normal", "valid")}
    label_img, valid = labels.label_to_image(spec.task, sample)  # [N, 3, H, W], [N, H, W]
    factor = models.vae_scale_factor(vae)
    z_x, z_y = models.encode_batched(vae, rgb), models.encode_batched(vae, label_img)  # [N, 4, h, w] each
    return {"z_x": z_x, "z_y": z_y, "mask": losses.latent_valid_mask(valid, factor),
            "label_img": label_img, "valid": valid}


class LatentSource:
    """Toy world: batches drawn from latents encoded once (``training_latents``)."""

    KEYS = ("z_x", "z_y", "mask", "label_img", "valid")

    def __init__(self, data: dict):
        self.data, self.n = data, len(data["z_x"])

    def batch(self, generator: torch.Generator, size: int) -> dict:
        idx = torch.randint(0, self.n, (size,), generator=generator)
        return {k: self.data[k][idx] for k in self.KEYS}

    def latent_shape(self, size: int) -> tuple[int, ...]:
        return (size, *self.data["z_y"].shape[1:])


class PixelSource:
    """Real data (paper profile): RGB and label images read and resized per step; the loss encodes them."""

    def __init__(self, real: stream.RealStream, task: str, vae):
        self.real, self.task = real, task
        factor = models.vae_scale_factor(vae)
        self.latent = (vae.config.latent_channels, real.size[0] // factor, real.size[1] // factor)

    def batch(self, generator: torch.Generator, size: int) -> dict:
        b = self.real.batch(generator, size)
        label = b["label"][:, 0] if self.task == "depth" else b["label"]  # [B, H, W] or [B, 3, H, W]
        label_img, valid = labels.label_to_image(self.task, {self.task: label, "valid": b["valid"]})
        return {"rgb": b["rgb"] * 2 - 1, "label_img": label_img, "valid": valid}  # [B, 3, H, W] x2, [B, H, W]

    def latent_shape(self, size: int) -> tuple[int, ...]:
        return (size, *self.latent)


def real_training_mix(cfg: Profile, spec: FinetuneSpec) -> dict[str, float]:
    """Reader name -> weight. Clean (synthetic) labels: the profile's mix (90% Hypersim / 10% VKITTI), Hypersim
    alone for normals. Real labels (Fig. 3): Taskonomy + Cityscapes, indoor / outdoor in the same 9 : 1."""
    if spec.labels == "reallike":
        if spec.task != "depth":
            raise NotImplementedError(f"labels='reallike' with task={spec.task!r}: the real-label sets are read "
                                      "for depth only (Taskonomy depth_zbuffer, Cityscapes disparity)")
        return dict(cfg.extra.get("real_label_mix", {"taskonomy": 0.9, "cityscapes": 0.1}))
    mix = dict(cfg.extra.get("train_mix", {"hypersim": 0.9, "vkitti": 0.1}))
    if spec.task == "normal":  # only Hypersim has normals (the paper trains its normal model on Hypersim alone)
        mix = {k: w for k, w in mix.items() if k.startswith("hypersim")} or {"hypersim": 1.0}
    return mix


class Lazy:
    """An object built on first attribute access."""

    def __init__(self, build):
        self._build, self._obj = build, None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._build()
        return getattr(self._obj, name)


def training_source(cfg: Profile, spec: FinetuneSpec, vae):
    """Where fine-tuning batches come from: encoded toy latents, or real images streamed from disk."""
    if cfg.source == "toyworld":
        return LatentSource(training_latents(cfg, spec, vae))
    if cfg.source != "real":
        raise ValueError(f"profile {cfg.name!r}: source={cfg.source!r}, expected toyworld or real")
    size = tuple(cfg.extra.get("train_resolution", (cfg.image_size, cfg.image_size)))
    real = stream.RealStream(real_training_mix(cfg, spec), spec.task, size, spec.fraction, seed=cfg.seed,
                             roots=cfg.extra.get("roots"))
    return PixelSource(real, spec.task, vae)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------------------


def initial_unet(spec: FinetuneSpec, prior_unet) -> torch.nn.Module:
    """The prior's U-Net (or a random one), with conv_in widened to 8 channels for the stochastic pipeline."""
    if spec.init == "prior":
        unet = models.build_unet(dict(prior_unet.config), seed=None)
        unet.load_state_dict(prior_unet.state_dict())
    else:
        unet = models.build_unet(dict(prior_unet.config), seed=spec.seed + 1)
    if formulations.unet_in_channels(spec.formulation) != unet.config.in_channels:
        models.expand_conv_in(unet)
    return unet


def batch_latents(vae, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_x, z_y, latent mask) of a batch: given (toy latents) or encoded now with the frozen VAE (real data)."""
    if "z_x" in batch:
        return batch["z_x"], batch["z_y"], batch["mask"]
    with torch.no_grad():
        z_x = models.encode(vae, batch["rgb"])        # [B, 4, h, w]
        z_y = models.encode(vae, batch["label_img"])  # [B, 4, h, w]
    return z_x, z_y, losses.latent_valid_mask(batch["valid"], models.vae_scale_factor(vae))


def make_loss(spec: FinetuneSpec, vae, acp: torch.Tensor, source, cond: torch.Tensor, seed: int):
    """(batch_fn, loss_fn) for the shared loop: the v-target MSE of section 1 (+ pixel losses).

    ``batch_fn`` draws on the CPU everything random about a batch (samples, timesteps, noise) from one
    generator per index; ``loss_fn`` runs wherever the loop put the batch (the accelerator).
    """
    bs = cond.shape[0]

    def batch_fn(index):
        g = step_generator(seed, index, salt=11)
        batch = source.batch(g, bs)
        t = noise = None
        if spec.formulation != "one_step":
            t = formulations.sample_timesteps(bs, len(acp), generator=g)  # [B]
        if spec.formulation == "stochastic":
            shape = source.latent_shape(bs)
            noise = (losses.multi_res_noise(shape, 0.9 * t.float() / len(acp), generator=g)
                     if spec.multires_noise else torch.randn(shape, generator=g))  # [B, 4, h, w]
        return {**batch, "timesteps": t, "noise": noise}

    def loss_fn(unet, batch, step):
        z_x, z_y, mask = batch_latents(vae, batch)  # [B, 4, h, w] x2, [B, h, w]
        pair = formulations.training_pair(spec.formulation, z_x, z_y, acp, noise=batch["noise"],
                                          timesteps=batch["timesteps"])
        v = unet(pair.unet_input, pair.timesteps, encoder_hidden_states=cond.to(z_x.device)).sample  # [B, 4, h, w]
        loss = losses.masked_mse(v, pair.target, mask)
        if spec.pixel_loss:
            sample = pair.unet_input[:, :4]
            a = 0.0 if spec.formulation == "one_step" else acp.to(z_x.device)[pair.timesteps].view(-1, 1, 1, 1)
            z0 = formulations.predicted_x0(sample, v, a)  # [B, 4, h, w]
            pred = models.decode(vae, z0).mean(dim=1)  # [B, H, W] in ~[-1, 1]
            gt, valid = batch["label_img"].mean(dim=1), batch["valid"]
            loss = loss + losses.ssi_loss(pred, gt, valid) + 0.5 * losses.gradient_loss(pred, gt, valid)
        return loss

    return batch_fn, loss_fn


def training_cond(prior, unet, batch_size: int) -> torch.Tensor:
    """The constant text condition: SD2.1's encoded empty prompt when the prior has one, else zeros."""
    if getattr(prior, "text_embedding", None) is not None:
        return prior.text_embedding.expand(batch_size, -1, -1).contiguous()  # [B, L, D]
    return models.empty_text_embedding(unet, batch_size)  # [B, 1, D]


def device() -> torch.device:
    """The accelerator of this process (cuda:<local rank> under ``accelerate launch``, else cuda or cpu)."""
    from accelerate import PartialState

    return PartialState().device


def train_config(cfg: Profile, spec: FinetuneSpec, prior) -> TrainConfig:
    steps = spec.steps or cfg.train_steps
    return TrainConfig(steps=steps, lr=cfg.lr, warmup_steps=min(50, steps // 10 + 1), seed=spec.seed,
                       grad_accum=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                       checkpoint_every=max(5, steps // 4), tag=f"{prior.folder.name}/{spec.fingerprint()}")


def finetune_folder(cfg: Profile, spec: FinetuneSpec, prior) -> Path:
    """Cache folder of a run: the prior, the spec and the training config all key it."""
    config = train_config(cfg, spec, prior)
    return pool.cache_root() / "finetune" / f"{prior.folder.name}-{spec.fingerprint()}-{config.fingerprint()}"


def finetune(cfg: Profile, spec: FinetuneSpec, prior, desc: str | None = None, stop_after: int | None = None):
    """Train (or resume, or load from cache) the U-Net for ``spec``; returns (unet, history).

    ``stop_after`` ends the call early as if the process were killed (the next call resumes).
    """
    for p in prior.vae.parameters():
        p.requires_grad_(False)
    acp = schedule.alphas_cumprod(*spec.betas)
    unet = initial_unet(spec, prior.unet)
    prior.vae.to(device())  # the frozen VAE encodes (real data) and decodes (pixel losses) beside the U-Net
    source = Lazy(lambda: training_source(cfg, spec, prior.vae))  # built on the first batch: a cached model
                                                                    # needs no training data on disk
    cond = training_cond(prior, unet, cfg.batch_size)
    batch_fn, loss_fn = make_loss(spec, prior.vae, acp, source, cond, spec.seed)
    history = train(unet, batch_fn, loss_fn, train_config(cfg, spec, prior), out_dir=finetune_folder(cfg, spec, prior),
                    desc=desc or spec.label(), stop_after=stop_after,
                    prefetch=2 if cfg.source == "real" else 0)  # real images are read from disk while the GPU works
    return unet.eval(), history


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


# The paper's evaluation sets (paper profile): our name -> (reader, split; None = the reader's default)
REAL_EVAL_SETS = {"kitti": ("kitti", None), "nyu": ("nyu", None), "scannet": ("scannet", None),
                  "diode": ("diode", None), "eth3d": ("eth3d", None), "hypersim_test": ("hypersim", "test")}
# Depth: the five zero-shot benchmarks of Marigold and GenPercept. Normals: DSINE's benchmarks have no reader
# here, so the paper profile scores normals on Hypersim's test split (in-domain, and labelled as such).
REAL_EVAL = {"depth": ("kitti", "nyu", "scannet", "diode", "eth3d"), "normal": ("hypersim_test",)}


def eval_domains(cfg: Profile, task: str = "depth") -> tuple[str, ...]:
    """The held-out evaluation sets of a profile: five toy domains, or the paper's real benchmarks."""
    from .data import toyworld

    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
    return REAL_EVAL[task] if cfg.source == "real" else tuple(toyworld.EVAL_DOMAINS)


def eval_where(cfg: Profile, short: bool = False) -> str:
    """What the evaluation sets are, for table notes and axis labels."""
    if cfg.source == "real":
        return ("5 benchmarks" if short else "the five real benchmarks (KITTI Eigen test, NYUv2 test, ScanNet, DIODE "
                f"val, ETH3D; Marigold's protocol) at processing resolution {cfg.image_size}")
    return ("5 toy domains" if short else
            "the five held-out toy domains (toy analogues of KITTI, NYU, ScanNet, DIODE, ETH3D)")


def eval_pool(cfg: Profile, domain: str) -> dict:
    """Toy world: the rendered evaluation pool of ``domain`` (arrays stacked per key)."""
    if cfg.source != "toyworld":
        raise ValueError(f"eval_pool renders toy domains; profile {cfg.name!r} reads real sets: use eval_dataset")
    return pool.render_pool(domain, cfg.n_eval, cfg.image_size, split="eval", seed=cfg.seed)


@functools.lru_cache(maxsize=16)
def _open_eval_set(name: str, root: str | None, split: str | None):
    """A benchmark's file list, listed once per process (every model and setting evaluates on it)."""
    return readers.open_dataset(name, root=root, split=split)


def eval_dataset(cfg: Profile, domain: str):
    """Real data: (reader dataset, indices): every image (``n_eval`` < 0) or ``n_eval`` evenly spaced ones."""
    if domain not in REAL_EVAL_SETS:
        raise ValueError(f"evaluation set {domain!r}: expected one of {', '.join(REAL_EVAL_SETS)}")
    name, split = REAL_EVAL_SETS[domain]
    root = cfg.extra.get("roots", {}).get(name)
    ds = _open_eval_set(name, None if root is None else str(root), split)
    if cfg.n_eval < 0 or cfg.n_eval >= len(ds):
        return ds, list(range(len(ds)))
    return ds, sorted({int(i) for i in np.linspace(0, len(ds) - 1, cfg.n_eval).round()})


def example(cfg: Profile, domain: str, index: int = 0) -> dict:
    """One evaluation sample as numpy arrays (rgb [3, H, W], depth, valid, normal where known) for figures."""
    if cfg.source == "real":
        ds, idx = eval_dataset(cfg, domain)
        return ds[idx[index]]
    data = eval_pool(cfg, domain)
    return {k: v[index] for k, v in data.items()}


@torch.no_grad()
def predict_example(cfg: Profile, unet, vae, spec: FinetuneSpec, item: dict, steps: int = 1, ensemble: int = 1,
                    text_embedding: torch.Tensor | None = None, generator: torch.Generator | None = None) -> np.ndarray:
    """One image at its own resolution: [H, W] (depth in [0, 1], affine-invariant) or [3, H, W] unit normals.

    Real images are processed as Marigold and the released pipeline do (``pipeline.processing_size``,
    ``resize``, ``pad_to_multiple``): longer side ``cfg.image_size`` (768), aspect kept, replicate-padded to the
    VAE's multiple, then cropped and resized back to the ground truth's resolution. Toy images run as they are.
    """
    acp = schedule.alphas_cumprod(*spec.betas)
    rgb = torch.from_numpy(np.asarray(item["rgb"], np.float32))[None]  # [1, 3, H, W]
    h, w = rgb.shape[-2:]
    size = pipeline.processing_size(h, w, cfg.image_size if cfg.source == "real" else 0)
    x, padding = pipeline.pad_to_multiple(pipeline.resize(rgb, size), models.vae_scale_factor(vae))  # [1, 3, h', w']
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    pred = pipeline.perceive(unet, vae, x, spec.formulation, acp, steps, ensemble, task=spec.task,
                             text_embedding=text_embedding, generator=g).float().cpu()  # [1, h', w'] | [1, 3, h', w']
    pred = pipeline.resize(pipeline.unpad(pred[:, None] if pred.ndim == 3 else pred, padding), (h, w))  # [1, C, H, W]
    if spec.task == "normal":
        return torch.nn.functional.normalize(pred, dim=1)[0].numpy()  # [3, H, W]
    return pred[0, 0].numpy()  # [H, W]


@torch.no_grad()
def predict_pool(unet, vae, data: dict, spec: FinetuneSpec, steps: int = 1, ensemble: int = 1,
                 batch: int = 32, seed: int = 0, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
    """``perceive`` over a rendered pool in batches: [N, H, W] (depth) or [N, 3, H, W] (normal), on the CPU."""
    acp = schedule.alphas_cumprod(*spec.betas)
    rgb = torch.from_numpy(data["rgb"]).float()  # [N, 3, H, W]
    g = torch.Generator().manual_seed(seed)
    outs = [pipeline.perceive(unet, vae, rgb[k:k + batch], spec.formulation, acp, steps, ensemble,
                              task=spec.task, text_embedding=text_embedding, generator=g).cpu()
            for k in range(0, len(rgb), batch)]
    return torch.cat(outs)


def predictions(cfg: Profile, unet, vae, spec: FinetuneSpec, domain: str, steps: int = 1, ensemble: int = 1,
                text_embedding: torch.Tensor | None = None):
    """(item, prediction) for every evaluation image of ``domain``, items as numpy dicts (rgb, depth, valid,
    normal) and predictions at the item's resolution: the toy pool in batches, real images one by one."""
    if cfg.source == "real":
        ds, indices = eval_dataset(cfg, domain)
        g = torch.Generator().manual_seed(cfg.seed)
        for i in tqdm(indices, desc=domain, leave=False):
            item = ds[i]
            yield item, predict_example(cfg, unet, vae, spec, item, steps, ensemble, text_embedding, generator=g)
        return
    data = eval_pool(cfg, domain)
    pred = predict_pool(unet, vae, data, spec, steps, ensemble, seed=cfg.seed, text_embedding=text_embedding)
    for k in range(len(pred)):
        yield {key: v[k] for key, v in data.items()}, pred[k].numpy()


def depth_protocol(cfg: Profile, domain: str) -> dict:
    """Keyword arguments of ``metrics.depth.evaluate_depth`` for a domain: the real dataset's range and crop
    (Marigold), or the toy domain's depth range."""
    if cfg.source == "real":
        return {"dataset": REAL_EVAL_SETS[domain][0]}
    from .data import toyworld

    lo, hi = toyworld.DOMAIN_INFO[domain]["depth_range"]
    return {"min_depth": lo, "max_depth": hi}


def scores(cfg: Profile, spec: FinetuneSpec, domain: str, pairs) -> dict:
    """Dataset scores from (item, prediction) pairs: Marigold's depth protocol (per-image least squares in
    depth space, mean AbsRel / delta1 over images) or DSINE's normal metrics pooled over all valid pixels."""
    if spec.task == "depth":
        protocol = depth_protocol(cfg, domain)
        per_image = [depth_metrics.evaluate_depth(pred, item["depth"], item["valid"], space="depth", **protocol)
                     for item, pred in pairs]
        m = depth_metrics.mean_metrics(per_image)
        return {"AbsRel": m["abs_rel"], "delta1": m["delta1"]}
    errors = []
    for item, pred in pairs:
        if "normal" not in item:
            raise readers.DatasetError(f"{item.get('path', domain)}: no normal label to evaluate against")
        errors.append(normal_metrics.angular_error(pred, item["normal"], item["valid"]))
    return normal_metrics.pool_normal_metrics(errors)


def evaluate(cfg: Profile, unet, vae, spec: FinetuneSpec, domains, steps: int = 1, ensemble: int = 1,
             desc: str = "evaluate", text_embedding: torch.Tensor | None = None) -> pd.DataFrame:
    """One row per held-out domain (``domain``) with the task's metrics."""
    rows = []
    for domain in tqdm(list(domains), desc=desc, leave=False):
        pairs = predictions(cfg, unet, vae, spec, domain, steps, ensemble, text_embedding)
        rows.append({"domain": domain, **scores(cfg, spec, domain, pairs)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Experiments: train (cached) + evaluate, as tidy rows
# ---------------------------------------------------------------------------------------------------------

# the paper's dataset keys for our held-out toy analogues (tables put both side by side on these keys)
PAPER_DATASET = {"toy_kitti": "KITTI", "toy_nyu": "NYU", "toy_scannet": "ScanNet", "toy_diode": "DIODE",
                 "toy_eth3d": "ETH3D", "kitti": "KITTI", "nyu": "NYU", "scannet": "ScanNet", "diode": "DIODE",
                 "eth3d": "ETH3D", "hypersim_test": "Hypersim (test)"}


def spec_columns(spec: FinetuneSpec) -> dict:
    return {"task": spec.task, "pipeline": spec.formulation, "beta_start": spec.betas[0], "beta_end": spec.betas[1],
            "data_fraction": spec.fraction, "labels": spec.labels, "init": spec.init, "pixel_loss": spec.pixel_loss}


def run(cfg: Profile, prior, spec: FinetuneSpec, domains, settings=((1, 1),), trained: bool = True,
        steps: int | None = None) -> pd.DataFrame:
    """Fine-tune ``spec`` (or, with ``trained=False``, take the untrained initial U-Net) and evaluate it on
    ``domains`` for each (denoise steps, ensemble size) in ``settings``. One row per (setting, domain)."""
    if trained:
        unet, history = finetune(cfg, spec, prior)
        training = f"fine-tuned {len(history)} steps" if spec.init == "prior" else f"from scratch {len(history)} steps"
    else:
        unet, training = initial_unet(spec, prior.unet).eval(), "untrained"
    dev = device()
    unet, vae = unet.to(dev), prior.vae.to(dev)
    text = getattr(prior, "text_embedding", None)
    frames = []
    for n_steps, ensemble in settings:
        df = evaluate(cfg, unet, vae, spec, domains, n_steps, ensemble, desc=f"eval {spec.label()}",
                      text_embedding=None if text is None else text.to(dev))
        frames.append(df.assign(denoise_steps=n_steps, ensemble=ensemble, training=training))
    out = pd.concat(frames, ignore_index=True)
    out["dataset"] = out["domain"].map(lambda d: PAPER_DATASET.get(d, d))  # the paper's key for the same role
    for k, v in spec_columns(spec).items():
        out[k] = v
    out["setting"] = spec.label()
    metrics = [c for c in out.columns if c not in ("domain", "dataset", "denoise_steps", "ensemble", "training")
               and c not in spec_columns(spec) and c != "setting"]
    front = ["setting", "training", *spec_columns(spec), "denoise_steps", "ensemble", "dataset", "domain"]
    return out[front + metrics]
