"""The toy world's pretrained diffusion prior: a tiny VAE and a tiny text-free generator U-Net.

GenPercept repurposes a *pretrained* Stable Diffusion. The toy-world stand-in is built the same way, in two
stages, before any perception experiment runs:

1. ``train_vae``: a tiny ``AutoencoderKL`` (8x downsampling like SD's) learns to reconstruct toy images.
   SD's VAE reconstructs depth and normal maps well because it saw billions of varied images; our tiny one
   has seen only toy scenes, so we show it label-like images (depth, normals, segmentation palette colours
   and alpha mattes, encoded as 3-channel images; ``prior_label_share`` of each batch) as well as RGB - a
   codec, frozen afterwards, exactly as GenPercept freezes SD's VAE.
   After training, ``scaling_factor`` is set to 1 / std of the latents (how SD's 0.18215 was chosen).
2. ``train_generator``: a tiny ``UNet2DConditionModel`` trained as an ordinary unconditional image
   generator on toy RGB latents: v-prediction, SD2.1's scaled_linear (0.00085, 0.012) schedule, 1000 steps,
   a constant (zero) text embedding standing in for the empty prompt.

Both are saved with ``save_pretrained`` under ``data/cache/prior/<profile>-<fingerprint>/`` and reused when
present and loadable; anything missing or broken is rebuilt. The prior's scenes come from their own index
range (``pool.OFFSETS["prior"]``), so no evaluation image is ever seen in pretraining.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import formulations, models, schedule, tasks
from .data import pool
from .profiles import Profile, env_path
from .results import atomic_write_text
from .train import TrainConfig, step_generator, train

PRIOR_VERSION = 1


@dataclass
class Prior:
    vae: object
    unet: object
    folder: Path
    history: dict = field(default_factory=dict)  # {"vae": [...], "unet": [...]}
    trained_now: bool = False
    train_seconds: float | None = None  # how long pretraining took when it ran (also when loaded from cache)
    text_embedding: torch.Tensor | None = None  # SD2.1: CLIP embedding of "" [1, 2, D]; toy prior: None (zeros)

    @property
    def content_hash(self) -> str:
        """What the prior's weights are, for the cache key of every model trained from it: a hash of the
        weights files' bytes (the toy prior: a few MB), or of their configs and sizes (a multi-GB SD2.1 folder)."""
        if not hasattr(self, "_content_hash"):
            h = hashlib.sha1()
            for sub in ("vae", "unet"):
                folder = self.folder / sub
                for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
                    big = f.stat().st_size > 256 * 2**20
                    h.update(f.name.encode() + (str(f.stat().st_size).encode() if big else f.read_bytes()))
            self._content_hash = h.hexdigest()[:8]
        return self._content_hash


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's CPU threads set to ``n`` inside the block (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def training_threads(cfg: Profile) -> int:
    """The torch CPU threads the toy prior trains with: ``prior_threads``, else ``threads``, else torch's current
    count. Part of the prior's key: the same settings trained with one and with two threads give other weights
    (measured on the Intel Xeon of the committed results: the default prior's held-out VAE ceiling 0.1538 trained
    with one, 0.1521 with two; scripts/levers.py)."""
    return cfg.prior_threads or cfg.threads or torch.get_num_threads()


def prior_settings(cfg: Profile) -> dict:
    """Everything that defines the prior (its fingerprint keys the cache folder)."""
    settings = {"version": PRIOR_VERSION, "image_size": cfg.image_size, "threads": training_threads(cfg),
                "n_images": cfg.prior_images or max(64, cfg.n_train),
                "vae_steps": cfg.prior_vae_steps, "unet_steps": cfg.prior_unet_steps, "seed": cfg.seed,
                "batch_size": cfg.batch_size, "betas": list(schedule.SD21_BETAS),
                "label_tasks": [t.name for t in label_tasks()], "label_share": cfg.prior_label_share,
                "palettes": {t.name: t.label_fingerprint() for t in label_tasks() if t.label_fingerprint() is not None}}
    # "palettes": every label task's label_fingerprint() (segmentation's palette is the only one so far)
    if cfg.model_overrides:  # the architecture lever (notebook 00): only then part of the key
        settings["model_overrides"] = cfg.model_overrides
    return settings


def label_tasks() -> list:
    """The tasks whose label images the toy VAE also learns to reconstruct (``Task.in_prior``), in registry order.
    Part of the prior's fingerprint: a task joining the list makes a new prior, never a stale cached one."""
    return [t for t in tasks.REGISTRY.values() if t.in_prior]


def prior_folder(cfg: Profile, root: Path | None = None) -> Path:
    settings = prior_settings(cfg)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return (root or pool.cache_root()) / "prior" / f"{cfg.name}-{key}"


def prior_images(cfg: Profile) -> dict:
    """Pretraining data: RGB of every toy domain (the toy "LAION"), plus the label images of every task that
    asks for them (``Task.in_prior``: depth, normals, toy segmentation colours and alpha mattes) for the VAE."""
    from .data import toyworld

    mix = {d: 1.0 for d in toyworld.TRAIN_DOMAINS + toyworld.EVAL_DOMAINS}
    prior_tasks = label_tasks()
    keys = tuple(dict.fromkeys(k for t in prior_tasks for k in t.pool_keys))
    data = pool.render_pool(mix, prior_settings(cfg)["n_images"], cfg.image_size, split="prior", seed=cfg.seed,
                            keys=keys)
    rgb = torch.from_numpy(data["rgb"]).float() * 2 - 1  # [N, 3, H, W] in [-1, 1]
    valid = torch.from_numpy(data["valid"])
    label_imgs = [t.label_to_image(torch.from_numpy(data[t.label_key]), valid)[0] for t in prior_tasks]
    return {"rgb": rgb.contiguous(), "labels": torch.cat(label_imgs).contiguous()}  # [N, 3, H, W], [T * N, 3, H, W]


def train_vae(images: dict, cfg: Profile, out_dir: Path | None = None, kl_weight: float = 1e-6):
    """Stage 1: reconstruct RGB and label images (``cfg.prior_label_share`` of each batch, at least one image of
    each kind); MSE + tiny KL."""
    vae = models.build_vae("tiny", seed=cfg.seed, **cfg.model_overrides.get("vae", {}))
    rgb, lab = images["rgb"], images["labels"]
    bs = cfg.batch_size

    def batch_fn(step):
        g = step_generator(cfg.seed, step, salt=1)
        n_lab = min(bs - 1, max(1, int(round(bs * cfg.prior_label_share))))
        i = torch.randint(0, len(rgb), (bs - n_lab,), generator=g)
        j = torch.randint(0, len(lab), (n_lab,), generator=g)
        return torch.cat([rgb[i], lab[j]])  # [B, 3, H, W]

    def loss_fn(model, x, step):
        posterior = model.encode(x).latent_dist
        z = posterior.sample(generator=step_generator(cfg.seed, step, salt=2))  # [B, 4, h, w]
        recon = model.decode(z).sample  # [B, 3, H, W]
        return torch.nn.functional.mse_loss(recon, x) + kl_weight * posterior.kl().mean()

    config = TrainConfig(steps=cfg.prior_vae_steps, lr=1e-3, warmup_steps=min(50, cfg.prior_vae_steps),
                         seed=cfg.seed, tag="prior-vae")
    history = train(vae, batch_fn, loss_fn, config, out_dir=out_dir, desc="prior: VAE")
    with torch.no_grad():
        z = torch.cat([vae.encode(rgb[k:k + 64]).latent_dist.mean for k in range(0, len(rgb), 64)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))  # like SD's 0.18215
    return vae.eval(), history


def train_generator(latents: torch.Tensor, cfg: Profile, out_dir: Path | None = None):
    """Stage 2: an unconditional v-prediction generator on image latents (eq. (1)/(3) with no z_x)."""
    unet = models.build_unet("tiny", seed=cfg.seed, **cfg.model_overrides.get("unet", {}))
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS)
    cond = models.empty_text_embedding(unet, cfg.batch_size)  # [B, 1, D]

    def batch_fn(step):
        g = step_generator(cfg.seed, step, salt=3)
        z0 = latents[torch.randint(0, len(latents), (cfg.batch_size,), generator=g)]  # [B, 4, h, w]
        noise = torch.randn(z0.shape, generator=g)
        t = formulations.sample_timesteps(cfg.batch_size, len(acp), generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        return formulations.noisy_sample(z0, noise, a), t, formulations.v_target(z0, noise, a)

    def loss_fn(model, batch, step):
        z_t, t, v = batch
        return torch.nn.functional.mse_loss(model(z_t, t, encoder_hidden_states=cond).sample, v)

    config = TrainConfig(steps=cfg.prior_unet_steps, lr=1e-3, warmup_steps=min(100, cfg.prior_unet_steps),
                         seed=cfg.seed, tag="prior-unet")
    history = train(unet, batch_fn, loss_fn, config, out_dir=out_dir, desc="prior: U-Net")
    return unet.eval(), history


@torch.no_grad()
def sample_images(unet, vae, n: int = 8, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Generate ``n`` images from the prior with DDIM (v-prediction): [n, 3, H, W] in [0, 1]."""
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS)
    size = unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, unet.config.in_channels, size, size, generator=g)  # [n, 4, h, w]
    denoise = formulations.unet_denoiser(unet, models.empty_text_embedding(unet))
    for t in schedule.inference_timesteps(steps).tolist():
        v = denoise(z, torch.full((n,), t, dtype=torch.int64))
        x0 = formulations.predicted_x0(z, v, acp[t])
        z = formulations.ddim_step(z, v, acp[t], schedule.previous_alpha_bar(acp, t, steps))
    return ((models.decode(vae, x0) + 1) / 2).clamp(0, 1)


def load_cached(folder: Path, cfg: Profile) -> Prior | None:
    """The prior saved in ``folder`` if it was built with ``cfg``'s settings, else None (a damaged one: a notice)."""
    meta_path = folder / "prior.json"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") != prior_settings(cfg):
            return None
        vae = models.load_vae(folder / "vae").eval()
        unet = models.load_unet(folder / "unet").eval()
        return Prior(vae, unet, folder, history=meta.get("history", {}), train_seconds=meta.get("train_seconds"))
    except FileNotFoundError:  # not trained yet
        return None
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # a damaged cache entry: say so, retrain
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"notice: the cached prior {folder} is unreadable ({reason}); training it again", flush=True)
        return None


def load_sd21(path: str | Path) -> Prior:
    """The real prior of the ``paper`` profile: SD2.1's VAE and U-Net from a local diffusers checkout, and the
    CLIP embedding of the empty prompt (unpadded, as the authors condition every image)."""
    from .pipeline import load_empty_prompt_embedding

    vae = models.load_vae(path, subfolder="vae").eval()
    unet = models.load_unet(path, subfolder="unet").eval()
    return Prior(vae, unet, Path(path), text_embedding=load_empty_prompt_embedding(path))


def load_or_train_prior(cfg: Profile, root: Path | None = None, retrain: bool = False) -> Prior:
    """The prior for this profile: SD2.1 from ``$GENPERCEPT_SD21`` when ``cfg.model == "sd21"`` (paper), else
    the cached toy-world prior, or a freshly trained one (saved for next time)."""
    if cfg.model == "sd21":
        return load_sd21(env_path("GENPERCEPT_SD21", "a local diffusers checkout of Stable Diffusion 2.1"))
    folder = prior_folder(cfg, root)
    with pool.cache_lock(folder, "the toy prior"):  # a parallel notebook waits for it, then loads it
        if not retrain:
            cached = load_cached(folder, cfg)
            if cached is not None:
                return cached
        return _train_prior(cfg, folder)


def _train_prior(cfg: Profile, folder: Path) -> Prior:
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    images = prior_images(cfg)
    with torch_threads(training_threads(cfg)):  # the count its key holds
        vae, vae_hist = train_vae(images, cfg)
        latents = models.encode_batched(vae, images["rgb"])  # [N, 4, h, w]
        unet, unet_hist = train_generator(latents, cfg)
    unet.register_to_config(sample_size=latents.shape[-1])
    history = {"vae": vae_hist, "unet": unet_hist}
    meta = {"settings": prior_settings(cfg), "history": history, "train_seconds": round(time.perf_counter() - t0, 1)}
    save_prior(folder, vae, unet, meta)
    return Prior(vae, unet, folder, history=history, trained_now=True, train_seconds=meta["train_seconds"])


def save_prior(folder: Path, vae, unet, meta: dict) -> None:
    """A prior's VAE, generator U-Net and ``prior.json`` (its settings, training history ...) into ``folder``,
    all at once: written beside it and renamed, so a killed run never leaves half a prior behind."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp / "vae")
    unet.save_pretrained(tmp / "unet")
    atomic_write_text(tmp / "prior.json", json.dumps(meta) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
