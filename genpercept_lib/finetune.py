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
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import formulations, labels, losses, models, pipeline, schedule
from .data import pool
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


def _require_toyworld(cfg: Profile) -> None:
    if cfg.source != "toyworld":
        raise NotImplementedError(
            f"profile {cfg.name!r} asks for the real datasets: fine-tuning and evaluation on them "
            "(data/readers.py + SD2.1 at 480x640) are not wired into finetune.py yet; run the default profile"
        )


@torch.no_grad()
def training_latents(cfg: Profile, spec: FinetuneSpec, vae) -> dict[str, torch.Tensor]:
    """z_x, z_y and masks of the (fraction of the) training pool, encoded once with the frozen VAE."""
    _require_toyworld(cfg)
    data = pool.render_pool(training_mix(spec), cfg.n_train, cfg.image_size, split="train", seed=cfg.seed)
    n = max(cfg.batch_size, int(round(cfg.n_train * spec.fraction)))
    rgb = torch.from_numpy(data["rgb"][:n]).float() * 2 - 1  # [N, 3, H, W]
    sample = {k: torch.from_numpy(data[k][:n]) for k in ("depth", "normal", "valid")}
    label_img, valid = labels.label_to_image(spec.task, sample)  # [N, 3, H, W], [N, H, W]
    factor = models.vae_scale_factor(vae)
    z_x, z_y = models.encode_batched(vae, rgb), models.encode_batched(vae, label_img)  # [N, 4, h, w] each
    return {"z_x": z_x, "z_y": z_y, "mask": losses.latent_valid_mask(valid, factor),
            "label_img": label_img, "valid": valid}


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


def make_loss(spec: FinetuneSpec, vae, acp: torch.Tensor, data: dict, cond: torch.Tensor, seed: int):
    """(batch_fn, loss_fn) for the shared loop: the v-target MSE of section 1 (+ pixel losses)."""
    n, bs = len(data["z_x"]), cond.shape[0]

    def batch_fn(step):
        g = step_generator(seed, step, salt=11)
        idx = torch.randint(0, n, (bs,), generator=g)
        z_x, z_y = data["z_x"][idx], data["z_y"][idx]  # [B, 4, h, w]
        noise = None
        if spec.formulation == "stochastic":
            t = formulations.sample_timesteps(bs, len(acp), generator=g)
            noise = (losses.multi_res_noise(z_y.shape, 0.9 * t.float() / len(acp), generator=g)
                     if spec.multires_noise else torch.randn(z_y.shape, generator=g))
        else:
            t = None if spec.formulation == "one_step" else formulations.sample_timesteps(bs, len(acp), generator=g)
        pair = formulations.training_pair(spec.formulation, z_x, z_y, acp, noise=noise, timesteps=t)
        return pair, idx

    def loss_fn(unet, batch, step):
        pair, idx = batch
        v = unet(pair.unet_input, pair.timesteps, encoder_hidden_states=cond).sample  # [B, 4, h, w]
        loss = losses.masked_mse(v, pair.target, data["mask"][idx])
        if spec.pixel_loss:
            sample = pair.unet_input[:, :4]
            a = 0.0 if spec.formulation == "one_step" else acp[pair.timesteps].view(-1, 1, 1, 1)
            z0 = formulations.predicted_x0(sample, v, a)  # [B, 4, h, w]
            pred = models.decode(vae, z0).mean(dim=1)  # [B, H, W] in ~[-1, 1]
            gt, valid = data["label_img"][idx].mean(dim=1), data["valid"][idx]
            loss = loss + losses.ssi_loss(pred, gt, valid) + 0.5 * losses.gradient_loss(pred, gt, valid)
        return loss

    return batch_fn, loss_fn


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
    data = training_latents(cfg, spec, prior.vae)
    cond = models.empty_text_embedding(unet, cfg.batch_size)
    batch_fn, loss_fn = make_loss(spec, prior.vae, acp, data, cond, spec.seed)
    history = train(unet, batch_fn, loss_fn, train_config(cfg, spec, prior), out_dir=finetune_folder(cfg, spec, prior),
                    desc=desc or spec.label(), stop_after=stop_after)
    return unet.eval(), history


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


def eval_pool(cfg: Profile, domain: str) -> dict:
    _require_toyworld(cfg)
    return pool.render_pool(domain, cfg.n_eval, cfg.image_size, split="eval", seed=cfg.seed)


@torch.no_grad()
def predict_pool(unet, vae, data: dict, spec: FinetuneSpec, steps: int = 1, ensemble: int = 1,
                 batch: int = 32, seed: int = 0) -> torch.Tensor:
    """``perceive`` over a rendered pool in batches: [N, H, W] (depth) or [N, 3, H, W] (normal)."""
    acp = schedule.alphas_cumprod(*spec.betas)
    rgb = torch.from_numpy(data["rgb"]).float()  # [N, 3, H, W]
    g = torch.Generator().manual_seed(seed)
    outs = [pipeline.perceive(unet, vae, rgb[k:k + batch], spec.formulation, acp, steps, ensemble,
                              task=spec.task, generator=g) for k in range(0, len(rgb), batch)]
    return torch.cat(outs)


def depth_scores(pred: torch.Tensor, data: dict, domain: str) -> dict:
    """Mean AbsRel / delta1 over a pool, per image LS-aligned in depth space (Marigold protocol)."""
    from .data import toyworld

    lo, hi = toyworld.DOMAIN_INFO[domain]["depth_range"]
    per_image = [depth_metrics.evaluate_depth(p.numpy(), gt, v, space="depth", min_depth=lo, max_depth=hi)
                 for p, gt, v in zip(pred, data["depth"], data["valid"])]
    m = depth_metrics.mean_metrics(per_image)
    return {"AbsRel": m["abs_rel"], "delta1": m["delta1"]}


def normal_scores(pred: torch.Tensor, data: dict) -> dict:
    errors = [normal_metrics.angular_error(p.numpy(), gt, v) for p, gt, v in zip(pred, data["normal"], data["valid"])]
    return normal_metrics.pool_normal_metrics(errors)


def evaluate(cfg: Profile, unet, vae, spec: FinetuneSpec, domains, steps: int = 1, ensemble: int = 1,
             desc: str = "evaluate") -> pd.DataFrame:
    """One row per held-out domain (``domain``) with the task's metrics."""
    rows = []
    for domain in tqdm(list(domains), desc=desc, leave=False):
        data = eval_pool(cfg, domain)
        pred = predict_pool(unet, vae, data, spec, steps, ensemble, seed=cfg.seed)
        scores = depth_scores(pred, data, domain) if spec.task == "depth" else normal_scores(pred, data)
        rows.append({"domain": domain, **scores})
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, metrics=("AbsRel", "delta1")) -> dict:
    """Mean of each metric over domains (the paper reports per dataset; we add the mean)."""
    return {m: float(np.nanmean(df[m])) for m in metrics if m in df}


# ---------------------------------------------------------------------------------------------------------
# Experiments: train (cached) + evaluate, as tidy rows
# ---------------------------------------------------------------------------------------------------------

# the paper's dataset keys for our held-out toy analogues (tables put both side by side on these keys)
PAPER_DATASET = {"toy_kitti": "KITTI", "toy_nyu": "NYU", "toy_scannet": "ScanNet", "toy_diode": "DIODE",
                 "toy_eth3d": "ETH3D"}


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
    frames = []
    for n_steps, ensemble in settings:
        df = evaluate(cfg, unet, prior.vae, spec, domains, n_steps, ensemble, desc=f"eval {spec.label()}")
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
