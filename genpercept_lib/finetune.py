"""Repurposing the prior for perception: one fine-tuning recipe for every experiment.

``finetune(cfg, spec, prior)`` trains the U-Net of a ``FinetuneSpec`` with the shared loop (``train.train``)
on batches from ``sources.training_source``, and caches it under ``data/cache/finetune/`` keyed by the prior,
the spec and the training config. The VAE stays frozen throughout (as in the paper); only the U-Net learns.
The loss is the latent v-target MSE of supplementary section 1 (eq. (3), (6), (9)), plus the task's
pixel-space loss through the frozen decoder when ``spec.pixel_loss`` (``Task.pixel_loss``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import cache, formulations, losses, models, schedule, tasks
from .profiles import Profile
from .sources import Lazy, training_source
from .spec import FinetuneSpec
from .train import TrainConfig, step_generator, train

BATCH_SALT = 11  # step_generator(seed, step, BATCH_SALT) draws a step's batch (pose draws its batches the same way)


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
    """(batch_fn, loss_fn) for the shared loop: the v-target MSE of section 1 (+ the task's pixel loss).

    ``batch_fn`` draws on the CPU everything random about a batch (samples, timesteps, noise) from one
    generator per index; ``loss_fn`` runs wherever the loop put the batch (the accelerator).
    """
    bs = cond.shape[0]
    task = tasks.get(spec.task)

    def batch_fn(index):
        g = step_generator(seed, index, salt=BATCH_SALT)
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
            decoded = models.decode(vae, z0)  # [B, 3, H, W] in ~[-1, 1]
            for term in task.pixel_loss(decoded, batch["label_img"], batch["valid"]):
                loss = loss + term
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
    own = tasks.get(spec.task).settings(cfg)  # the task's own steps and lr, if it has them, else the profile's
    steps = spec.steps or own.steps
    tag = f"{prior.folder.name}/{spec.fingerprint()}"
    tag += tasks.get(spec.task).model_tag(cfg)  # e.g. a task rendered at its own size trains another model
    if device().type == "cpu":  # a CPU's sums depend on how many threads split them: 1 and 2 train other weights
        tag += f"/threads-{torch.get_num_threads()}"
    return TrainConfig(steps=steps, lr=own.lr, warmup_steps=min(50, steps // 10 + 1), seed=spec.seed,
                       grad_accum=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                       checkpoint_every=max(5, steps // 4), tag=tag)


def finetune_folder(cfg: Profile, spec: FinetuneSpec, prior) -> Path:
    """Cache folder of a run: the prior (its settings and its weights' content hash: a retrained prior never
    serves models trained on the old one), the spec and the training config all key it."""
    config = train_config(cfg, spec, prior)
    return (cache.root() / "finetune" /
            f"{prior.folder.name}-{prior.content_hash}-{spec.fingerprint()}-{config.fingerprint()}")


def frozen_vae(prior):
    """The prior's VAE, frozen (only the U-Net learns, as in the paper) and on this process's device: it encodes
    real images and decodes for the pixel losses beside the U-Net."""
    for p in prior.vae.parameters():
        p.requires_grad_(False)
    return prior.vae.to(device())


def fit(cfg: Profile, spec: FinetuneSpec, prior, model, batch_fn, loss_fn, desc: str | None = None,
        stop_after: int | None = None):
    """Train ``model`` with the one loop (``train.train``) into its cache folder (``finetune_folder``), or resume,
    or load it: one process trains it, the others wait and load it. Returns (model in eval mode, history).
    The step every model shares, the dense tasks' U-Nets (``finetune``) and pose's U-Net + head (``pose``)."""
    folder = finetune_folder(cfg, spec, prior)
    with cache.entry_lock(folder, f"the model {desc or spec.label()}"):  # one process trains it, others load it
        history = train(model, batch_fn, loss_fn, train_config(cfg, spec, prior), out_dir=folder,
                        desc=desc or spec.label(), stop_after=stop_after,
                        prefetch=2 if cfg.source == "real" else 0)  # real images are read from disk while the GPU works
    return model.eval(), history


def finetune(cfg: Profile, spec: FinetuneSpec, prior, desc: str | None = None, stop_after: int | None = None):
    """Train (or resume, or load from cache) the U-Net for ``spec``; returns (U-Net, history).

    ``stop_after`` ends the call early as if the process were killed (the next call resumes).
    """
    acp = schedule.alphas_cumprod(*spec.betas)
    unet = initial_unet(spec, prior.unet)
    vae = frozen_vae(prior)
    source = Lazy(lambda: training_source(cfg, spec, vae))  # built on the first batch: a cached model needs no data
    cond = training_cond(prior, unet, cfg.batch_size)
    batch_fn, loss_fn = make_loss(spec, vae, acp, source, cond, spec.seed)
    return fit(cfg, spec, prior, unet, batch_fn, loss_fn, desc, stop_after)
