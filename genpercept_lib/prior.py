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

Two ways to get one, both from a typed ``Recipe``:

* **The shipped toy Stable Diffusion** (``model = "toy_sd"``, the default profile's): built once by
  ``scripts/build_toy_sd.py`` (``make prior``, ``TOY_SD_RECIPE``, resumable from its checkpoints) and committed in
  ``data/toy_sd/`` with a ``provenance.json`` holding the sha256 of every file; ``load_shipped`` checks them before
  loading, as a downloaded SD2.1 is used as it is. Nobody trains Stable Diffusion before fine-tuning it.
* **A profile's own prior** (``model = "tiny"``: the smoke profile): trained from
  ``Recipe.from_profile`` and cached with ``save_pretrained`` under ``data/cache/prior/<profile>-<fingerprint>/``,
  reused when present and loadable; anything missing or broken is rebuilt.

The prior's scenes come from their own index range (``pool.OFFSETS["prior"]``), so no evaluation image is ever
seen in pretraining.
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

from . import cache, formulations, models, schedule, tasks
from .cache import REPO_ROOT, atomic_write_text
from .data import pool, toyworld
from .pipeline import load_empty_prompt_embedding
from .profiles import Profile, env_path
from .runs import cpu_model_name, git_commit
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


@dataclass(frozen=True)
class Recipe:
    """How a toy prior is trained: the typed settings of ``train_vae`` and ``train_generator``.

    The smoke and default profiles derive theirs from the profile (``from_profile``: cached under
    ``data/cache/prior/``); the shipped toy Stable Diffusion (``data/toy_sd/``) is built once from
    ``TOY_SD_RECIPE`` by ``scripts/build_toy_sd.py``."""

    image_size: int = 64
    n_images: int = 2048
    vae: dict = field(default_factory=dict)   # config changes of the tiny VAE (configs/tiny_vae.json)
    unet: dict = field(default_factory=dict)  # config changes of the tiny U-Net (configs/tiny_unet.json)
    vae_steps: int = 1500
    vae_batch: int = 8
    unet_steps: int = 3000
    unet_batch: int = 8
    lr: float = 1e-3
    label_share: float = 0.5  # share of each VAE batch that is label images
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 0  # 0: no intermediate checkpoints (a cached prior is rebuilt whole)

    @classmethod
    def from_profile(cls, cfg: Profile) -> Recipe:
        settings = prior_settings(cfg)
        return cls(image_size=cfg.image_size, n_images=settings["n_images"],
                   vae=cfg.model_overrides.get("vae", {}), unet=cfg.model_overrides.get("unet", {}),
                   vae_steps=cfg.prior_vae_steps, vae_batch=cfg.batch_size, unet_steps=cfg.prior_unet_steps,
                   unet_batch=cfg.batch_size, label_share=cfg.prior_label_share, seed=cfg.seed,
                   threads=settings["threads"])


# The toy Stable Diffusion shipped in data/toy_sd/: 4x downsampling (16 x 16 latents of 64 px images, a grid
# that holds objects), self-attention at the 16 x 16 level of the U-Net as well, far more scenes and steps than a
# profile's own prior. Changing it means rebuilding data/toy_sd (`make prior`) and regenerating results/.
TOY_SD_RECIPE = Recipe(
    image_size=64, n_images=8192,
    vae={"block_out_channels": [32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
         "up_block_types": ["UpDecoderBlock2D"] * 3, "sample_size": 64},
    unet={"sample_size": 16,
          "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
          "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]},
    vae_steps=2000, vae_batch=8, unet_steps=6000, unet_batch=16, lr=1e-3, label_share=0.5, seed=0, threads=1,
    checkpoint_every=250,
)


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
    return (root or cache.root()) / "prior" / f"{cfg.name}-{cache.key(settings, 10)}"


def prior_images(cfg: Profile | Recipe) -> dict:
    """Pretraining data: RGB of every toy domain (the toy "LAION"), plus the label images of every task that
    asks for them (``Task.in_prior``: depth, normals, toy segmentation colours and alpha mattes) for the VAE."""
    recipe = cfg if isinstance(cfg, Recipe) else Recipe.from_profile(cfg)
    mix = {d: 1.0 for d in toyworld.TRAIN_DOMAINS + toyworld.EVAL_DOMAINS}
    prior_tasks = label_tasks()
    keys = tuple(dict.fromkeys(k for t in prior_tasks for k in t.pool_keys))
    data = pool.render_pool(mix, recipe.n_images, recipe.image_size, split="prior", seed=recipe.seed, keys=keys)
    rgb = torch.from_numpy(data["rgb"]).float() * 2 - 1  # [N, 3, H, W] in [-1, 1]
    valid = torch.from_numpy(data["valid"])
    label_imgs = [t.label_to_image(torch.from_numpy(data[t.label_key]), valid)[0] for t in prior_tasks]
    return {"rgb": rgb.contiguous(), "labels": torch.cat(label_imgs).contiguous()}  # [N, 3, H, W], [T * N, 3, H, W]


def train_vae(images: dict, recipe: Recipe, out_dir: Path | None = None, kl_weight: float = 1e-6):
    """Stage 1: reconstruct RGB and label images (``recipe.label_share`` of each batch, at least one image of
    each kind); MSE + tiny KL. ``out_dir``: checkpoints every ``recipe.checkpoint_every`` steps (a killed build
    resumes there)."""
    vae = models.build_vae("tiny", seed=recipe.seed, **recipe.vae)
    rgb, lab = images["rgb"], images["labels"]
    bs = recipe.vae_batch

    def batch_fn(step):
        g = step_generator(recipe.seed, step, salt=1)
        n_lab = min(bs - 1, max(1, int(round(bs * recipe.label_share))))
        i = torch.randint(0, len(rgb), (bs - n_lab,), generator=g)
        j = torch.randint(0, len(lab), (n_lab,), generator=g)
        return torch.cat([rgb[i], lab[j]])  # [B, 3, H, W]

    def loss_fn(model, x, step):
        posterior = model.encode(x).latent_dist
        z = posterior.sample(generator=step_generator(recipe.seed, step, salt=2))  # [B, 4, h, w]
        recon = model.decode(z).sample  # [B, 3, H, W]
        return torch.nn.functional.mse_loss(recon, x) + kl_weight * posterior.kl().mean()

    config = TrainConfig(steps=recipe.vae_steps, lr=recipe.lr, warmup_steps=min(50, recipe.vae_steps),
                         seed=recipe.seed, tag="prior-vae", checkpoint_every=recipe.checkpoint_every)
    history = train(vae, batch_fn, loss_fn, config, out_dir=out_dir, desc="prior: VAE")
    with torch.no_grad():
        z = torch.cat([vae.encode(rgb[k:k + 64]).latent_dist.mean for k in range(0, len(rgb), 64)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()), sample_size=rgb.shape[-1])  # like SD's 0.18215
    return vae.eval(), history


def train_generator(latents: torch.Tensor, recipe: Recipe, out_dir: Path | None = None):
    """Stage 2: an unconditional v-prediction generator on image latents (eq. (1)/(3) with no z_x)."""
    unet = models.build_unet("tiny", seed=recipe.seed, **recipe.unet)
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS)
    bs = recipe.unet_batch
    cond = models.empty_text_embedding(unet, bs)  # [B, 1, D]

    def batch_fn(step):
        g = step_generator(recipe.seed, step, salt=3)
        z0 = latents[torch.randint(0, len(latents), (bs,), generator=g)]  # [B, 4, h, w]
        noise = torch.randn(z0.shape, generator=g)
        t = formulations.sample_timesteps(bs, len(acp), generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        return formulations.noisy_sample(z0, noise, a), t, formulations.v_target(z0, noise, a)

    def loss_fn(model, batch, step):
        z_t, t, v = batch
        return torch.nn.functional.mse_loss(model(z_t, t, encoder_hidden_states=cond).sample, v)

    config = TrainConfig(steps=recipe.unet_steps, lr=recipe.lr, warmup_steps=min(100, recipe.unet_steps),
                         seed=recipe.seed, tag="prior-unet", checkpoint_every=recipe.checkpoint_every)
    history = train(unet, batch_fn, loss_fn, config, out_dir=out_dir, desc="prior: U-Net")
    unet.register_to_config(sample_size=latents.shape[-1])
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
    vae = models.load_vae(path, subfolder="vae").eval()
    unet = models.load_unet(path, subfolder="unet").eval()
    return Prior(vae, unet, Path(path), text_embedding=load_empty_prompt_embedding(path))


def load_or_train_prior(cfg: Profile, root: Path | None = None, retrain: bool = False) -> Prior:
    """The prior for this profile: SD2.1 from ``$GENPERCEPT_SD21`` when ``cfg.model == "sd21"`` (paper), else
    the shipped toy Stable Diffusion (``data/toy_sd/``) when ``cfg.model == "toy_sd"``, else the cached toy-world
    prior, or a freshly trained one (saved for next time)."""
    if cfg.model == "sd21":
        return load_sd21(env_path("GENPERCEPT_SD21", "a local diffusers checkout of Stable Diffusion 2.1"))
    if cfg.model == "toy_sd":
        return load_shipped()
    folder = prior_folder(cfg, root)
    with cache.entry_lock(folder, "the toy prior"):  # a parallel notebook waits for it, then loads it
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
        recipe = Recipe.from_profile(cfg)
        vae, vae_hist = train_vae(images, recipe)
        latents = models.encode_batched(vae, images["rgb"])  # [N, 4, h, w]
        unet, unet_hist = train_generator(latents, recipe)
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


# --- the shipped toy Stable Diffusion ----------------------------------------------------------------------------
SHIPPED = REPO_ROOT / "data" / "toy_sd"
REBUILD = "rebuild it with `make prior` (scripts/build_toy_sd.py) or restore it with `git checkout -- data/toy_sd`"


class PriorIntegrityError(ValueError):
    """A shipped toy-SD file that is missing, altered or unreadable (one line naming it and the fix)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_shipped(folder: Path = SHIPPED) -> dict:
    """``folder/provenance.json``, after checking every file it lists against its sha256; else one line."""
    meta_path = folder / "provenance.json"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except FileNotFoundError:
        raise PriorIntegrityError(f"{meta_path}: missing; the toy Stable Diffusion is not there: {REBUILD}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PriorIntegrityError(f"{meta_path}: unreadable ({type(err).__name__}); {REBUILD}") from None
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise PriorIntegrityError(f"{path}: missing (listed in {meta_path}); {REBUILD}")
        if sha256(path) != digest:
            raise PriorIntegrityError(f"{path}: its sha256 differs from {meta_path} (altered or truncated); {REBUILD}")
    return meta


def load_shipped(folder: Path = SHIPPED) -> Prior:
    """The toy world's Stable Diffusion from ``data/toy_sd/`` (checksums verified first): what the default
    profile repurposes, as the paper repurposes a downloaded SD2.1."""
    folder = Path(folder)
    meta = verify_shipped(folder)
    try:
        history = json.loads((folder / "history.json").read_text())
    except (OSError, ValueError):
        history = {}
    vae = models.load_vae(folder / "vae").eval()
    unet = models.load_unet(folder / "unet").eval()
    return Prior(vae, unet, folder, history=history, train_seconds=round(60 * meta.get("minutes", 0), 1))


class _Clock:
    """Seconds spent on a build across resumed runs: kept in ``work/elapsed.json``, written every 30 s, so a
    killed run counts up to its last half minute."""

    def __init__(self, path: Path):
        import threading

        self.path, self.start = path, time.perf_counter()
        try:
            self.before = float(json.loads(path.read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            self.before = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"seconds": round(self.seconds(), 1)}) + "\n")

    def _loop(self) -> None:
        while not self._stop.wait(30):
            self.save()

    def stop(self) -> None:
        self._stop.set()
        self.save()


def _thin(history: list[dict], keep: int = 2000) -> list[dict]:
    """At most ``keep`` evenly spaced entries of a training history (the shipped history.json stays small)."""
    every = max(1, len(history) // keep)
    return [h for i, h in enumerate(history) if i % every == 0 or i == len(history) - 1]


def default_build_dir() -> Path:
    """Where a build keeps its checkpoints: ``$GENPERCEPT_CACHE/toy_sd_build``, else outside the checkout
    (``~/.cache/genpercept/toy_sd_build``), so a fresh clone on the same machine continues a killed build."""
    import os

    if os.environ.get("GENPERCEPT_CACHE"):
        return Path(os.environ["GENPERCEPT_CACHE"]) / "toy_sd_build"
    return Path.home() / ".cache" / "genpercept" / "toy_sd_build"


def build_toy_sd(recipe: Recipe = TOY_SD_RECIPE, out: Path = SHIPPED, work: Path | None = None,
                 command: str = "") -> Path:
    """Train the toy Stable Diffusion from ``recipe`` and write it to ``out`` (diffusers layout, safetensors,
    ``history.json``, ``provenance.json`` with the sha256 of every file). Checkpoints go to ``work`` every
    ``recipe.checkpoint_every`` steps: the same call after a kill continues from the last one."""
    from dataclasses import asdict

    import diffusers

    work = Path(work) if work is not None else default_build_dir()
    work.mkdir(parents=True, exist_ok=True)
    clock = _Clock(work / "elapsed.json")
    try:
        images = prior_images(recipe)  # [N, 3, H, W] RGB and [T * N, 3, H, W] label images (cached renders)
        with torch_threads(recipe.threads):
            vae, vae_hist = train_vae(images, recipe, out_dir=work / "vae")
            latents = models.encode_batched(vae, images["rgb"])  # [N, 4, h, w]
            unet, unet_hist = train_generator(latents, recipe, out_dir=work / "unet")
    finally:
        clock.stop()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp / "vae")
    unet.save_pretrained(tmp / "unet")
    history = {"vae": _thin(vae_hist), "unet": _thin(unet_hist)}
    atomic_write_text(tmp / "history.json", json.dumps(history) + "\n")
    tail = {k: round(sum(h["loss"] for h in v[-200:]) / len(v[-200:]), 5) for k, v in
            (("vae", vae_hist), ("unet", unet_hist))}
    for f in tmp.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)  # safetensors writes 0600; shipped files are read by everyone
    files = {str(f.relative_to(tmp)): sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
    meta = {"what": "the toy world's Stable Diffusion: a VAE and a generator U-Net pretrained on toy RGB of every "
                    "domain (and label images, for the VAE)",
            "command": command or "scripts/build_toy_sd.py", "commit": git_commit(), "recipe": asdict(recipe),
            "toyworld_version": toyworld.VERSION, "label_tasks": [t.name for t in label_tasks()],
            "host_cpu": cpu_model_name(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "minutes": round(clock.seconds() / 60, 1), "final_losses": tail,
            "latent_grid": list(latents.shape[-2:]), "scaling_factor": vae.config.scaling_factor,
            "files": files}
    atomic_write_text(tmp / "provenance.json", json.dumps(meta, indent=1) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
