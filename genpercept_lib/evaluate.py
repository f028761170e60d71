"""Evaluation: run ``pipeline.perceive`` on the held-out sets and score it with the task's protocol.

* toy world: the rendered pool of each held-out domain, predicted in batches at its native size (the toy
  renders float images, so nothing is quantised or resized);
* real data (paper profile): every image of each benchmark, one by one, processed as the authors' evaluation
  scripts do (``script/eval_sd21/*``: the benchmark's own processing resolution, the authors' image processing,
  seed 1234), the prediction brought back to the ground truth's resolution (``images.restore``).

The task (``tasks/``) names the evaluation sets and scores the (item, prediction) pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import images, models, pipeline, schedule, tasks
from .data import pool, readers, toyworld
from .profiles import Profile
from .progress import tqdm
from .spec import FinetuneSpec

SPLITS = ("heldout", "indomain")  # the ``split`` column: unseen domains / unseen scenes of the training domains


def eval_domains(cfg: Profile, task: str = "depth", split: str = "heldout") -> tuple[str, ...]:
    """The evaluation sets of a profile for ``task``.

    ``split="heldout"``: the held-out sets (toy domains the model never trained on, or the paper's real
    benchmarks); ``"indomain"``: unseen scenes of the task's toy training domains (can it learn at all? none for
    real data); ``"both"``: held-out, then in-domain."""
    if split == "both":
        return eval_domains(cfg, task, "heldout") + eval_domains(cfg, task, "indomain")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)} or 'both'")
    task = tasks.get(task)
    if cfg.source == "real":
        if split == "indomain":
            return ()
        if not task.real_eval:
            raise NotImplementedError(f"task {task.name!r} has no real evaluation set in the paper profile")
        return tuple(task.real_eval)
    if split == "indomain":
        return task.indomain_sets()
    return tuple(task.toy_eval or toyworld.EVAL_DOMAINS)


def split_of(domain: str) -> str:
    """The ``split`` of an evaluation set: ``indomain`` for a toy training domain's unseen scenes, else
    ``heldout``."""
    return "indomain" if domain in toyworld.TRAIN_DOMAINS else "heldout"


def eval_where(cfg: Profile, short: bool = False, task: str = "depth") -> str:
    """What the evaluation sets are, for table notes and axis labels."""
    task = tasks.get(task)
    sets = eval_domains(cfg, task)
    if cfg.source == "real":
        titles = ", ".join(task.real_eval[s].title or s for s in sets)
        if cfg.real.processing_res is not None:
            where = f"processing resolution {cfg.real.processing_res} for every set, not the authors' settings"
        else:
            where = "the authors' evaluation settings"
        return f"{len(sets)} benchmarks" if short else f"{titles} ({where})"
    if task.toy_eval is None:
        return ("5 toy domains" if short else
                "the five held-out toy domains (toy analogues of KITTI, NYU, ScanNet, DIODE, ETH3D)")
    return f"{len(sets)} toy sets" if short else "the toy sets " + ", ".join(sets)


def eval_pool(cfg: Profile, domain: str, task: str = "depth") -> dict:
    """Toy world: the rendered evaluation pool of ``domain`` (arrays stacked per key)."""
    if cfg.source != "toyworld":
        raise ValueError(f"eval_pool renders toy domains; profile {cfg.name!r} reads real sets: use eval_dataset")
    return tasks.get(task).eval_pool(cfg, domain, pool.render_pool)


def eval_set(domain: str, task: str = "depth") -> tasks.EvalSet:
    """The task's real evaluation set called ``domain`` (reader, split, the authors' settings)."""
    task = tasks.get(task)
    if domain not in task.real_eval:
        raise ValueError(f"evaluation set {domain!r} of task {task.name!r}: expected one of "
                         f"{', '.join(task.real_eval)}")
    return task.real_eval[domain]


def processing_res(cfg: Profile, es: tasks.EvalSet) -> int:
    """The processing resolution of a real evaluation set: the benchmark's own (the authors' setting; 0 = native),
    unless ``cfg.real.processing_res`` replaces it for every set (a quick look; not the paper's numbers)."""
    return es.processing_res if cfg.real.processing_res is None else cfg.real.processing_res


def eval_res(cfg: Profile, domain: str, task: str = "depth") -> int:
    """The processing resolution ``domain`` is evaluated at (0 = as it is): a real benchmark's own (``processing_res``),
    toy images as rendered. Predictions, the VAE ceiling and the figures all use it."""
    return processing_res(cfg, eval_set(domain, task)) if cfg.source == "real" else 0


def eval_dataset(cfg: Profile, domain: str, task: str = "depth"):
    """Real data: (reader dataset, indices): every image (``n_eval`` < 0) or ``n_eval`` evenly spaced ones."""
    es = eval_set(domain, task)
    root = cfg.real.roots.get(es.reader)
    ds = readers.open_listed(es.reader, None if root is None else str(root), es.split)
    if cfg.n_eval < 0 or cfg.n_eval >= len(ds):
        return ds, list(range(len(ds)))
    return ds, sorted({int(i) for i in np.linspace(0, len(ds) - 1, cfg.n_eval).round()})


def example(cfg: Profile, domain: str, index: int = 0, task: str = "depth") -> dict:
    """One evaluation sample as numpy arrays (rgb [3, H, W], the task's label, valid, ...) for figures."""
    if cfg.source == "real":
        ds, idx = eval_dataset(cfg, domain, task)
        return ds[idx[index]]
    data = eval_pool(cfg, domain, task)
    return {k: v[index] for k, v in data.items()}


def items(cfg: Profile, domain: str, task: str | tasks.Task = "depth", progress: bool = False):
    """Every evaluation item of ``domain`` as a numpy dict: the toy pool's samples, or each real image as the task
    reads it (``Task.real_item``; a bar over them with ``progress``)."""
    task = tasks.get(task)
    if cfg.source == "real":
        ds, indices = eval_dataset(cfg, domain, task)
        yield from (task.real_item(cfg, ds[i]) for i in (tqdm(indices, desc=domain, leave=False) if progress
                                                          else indices))
        return
    data = eval_pool(cfg, domain, task)
    yield from ({k: v[i] for k, v in data.items()} for i in range(len(data["rgb"])))


def eval_seed(cfg: Profile) -> int:
    """The seed of evaluation's noise (stochastic pipeline): the authors' 1234 in the paper profile."""
    return int(cfg.seed if cfg.real.eval_seed is None else cfg.real.eval_seed)


@torch.no_grad()
def predict_example(cfg: Profile, unet, vae, spec: FinetuneSpec, item: dict, steps: int = 1, ensemble: int = 1,
                    text_embedding: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    processing_res: int | None = None) -> np.ndarray:
    """One image at its own resolution, in the task's layout ([H, W] or [3, H, W]).

    Toy images run as they are. Real images are prepared by the image processor with the profile's
    processing (the authors' by default) at ``processing_res`` (default: ``cfg.image_size``; ``predictions``
    passes each benchmark's own), and the prediction is brought back to the ground truth's resolution.
    """
    task = tasks.get(spec.task)
    acp = schedule.alphas_cumprod(*spec.betas)
    rgb = torch.from_numpy(np.asarray(item["rgb"], np.float32))  # [3, H, W]
    g = generator if generator is not None else torch.Generator().manual_seed(eval_seed(cfg))
    if cfg.source != "real":
        pred = pipeline.perceive(unet, vae, rgb[None], spec.formulation, acp, steps, ensemble, task=task,
                                 text_embedding=text_embedding, generator=g, processing=cfg.processing)
        return pred[0].float().cpu().numpy()
    res = cfg.image_size if processing_res is None else processing_res
    return predict_image(unet, vae, task, rgb, res, spec.formulation, acp, steps, ensemble, text_embedding, g,
                         cfg.processing)


@torch.no_grad()
def predict_image(unet, vae, task, rgb: torch.Tensor, processing_res: int, formulation: str = "one_step",
                  alphas_cumprod: torch.Tensor | None = None, steps: int = 1, ensemble: int = 1,
                  text_embedding: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  processing: str | images.Processing | None = None) -> np.ndarray:
    """One real image [3, H, W] in [0, 1] -> the task's prediction at its own resolution ([H, W] or [3, H, W]):
    prepared by the image processor at ``processing_res`` (0 = native), predicted, brought back to H x W."""
    task = tasks.get(task)
    acp = schedule.alphas_cumprod(*schedule.SD21_BETAS) if alphas_cumprod is None else alphas_cumprod
    prepared = images.prepare(rgb, processing_res, models.vae_scale_factor(vae), processing)
    pred = pipeline.perceive(unet, vae, prepared.x, formulation, acp, steps, ensemble, task=task,
                             text_embedding=text_embedding, generator=generator,
                             processing=processing).float().cpu()  # [1, h', w'] | [1, 3, h', w']
    pred = images.restore(pred[:, None] if pred.ndim == 3 else pred, prepared, prepared.input_size,
                          task.pred_resize)  # [1, C, H, W]
    pred = task.finish(pred, images.get_processing(processing))
    return pred[0, 0].numpy() if task.channels == 1 else pred[0].numpy()


@torch.no_grad()
def predict_pool(unet, vae, data: dict, spec: FinetuneSpec, steps: int = 1, ensemble: int = 1,
                 batch: int = 32, seed: int = 0, text_embedding: torch.Tensor | None = None,
                 processing: str | images.Processing | None = None) -> torch.Tensor:
    """``perceive`` over a rendered pool in batches: [N, H, W] or [N, 3, H, W], on the CPU."""
    acp = schedule.alphas_cumprod(*spec.betas)
    rgb = torch.from_numpy(data["rgb"]).float()  # [N, 3, H, W]
    if len(rgb) == 0:  # an empty evaluation set (a toy subset with no scene of its kind)
        return torch.empty(0)
    g = torch.Generator().manual_seed(seed)
    outs = [pipeline.perceive(unet, vae, rgb[k:k + batch], spec.formulation, acp, steps, ensemble,
                              task=spec.task, text_embedding=text_embedding, generator=g,
                              processing=processing).cpu()
            for k in range(0, len(rgb), batch)]
    return torch.cat(outs)


def predictions(cfg: Profile, unet, vae, spec: FinetuneSpec, domain: str, steps: int = 1, ensemble: int = 1,
                text_embedding: torch.Tensor | None = None):
    """(item, prediction) for every evaluation image of ``domain``, items as numpy dicts and predictions at the
    item's resolution: the toy pool in batches, real images one by one at the benchmark's own settings."""
    if cfg.source == "real":
        res = eval_res(cfg, domain, spec.task)
        ds, indices = eval_dataset(cfg, domain, spec.task)
        g = torch.Generator().manual_seed(eval_seed(cfg))
        for i in tqdm(indices, desc=domain, leave=False):
            item = ds[i]
            yield item, predict_example(cfg, unet, vae, spec, item, steps, ensemble, text_embedding, generator=g,
                                        processing_res=res)
        return
    data = eval_pool(cfg, domain, spec.task)
    pred = predict_pool(unet, vae, data, spec, steps, ensemble, seed=cfg.seed, text_embedding=text_embedding,
                        processing=cfg.processing)
    for k in range(len(pred)):
        yield {key: v[k] for key, v in data.items()}, pred[k].numpy()


def protocol(cfg: Profile, domain: str, task: str = "depth") -> dict:
    """The scoring arguments of one evaluation set (``Task.protocol``: a depth range, a crop, ...)."""
    task = tasks.get(task)
    real = cfg.source == "real"
    if real:
        return task.protocol(domain, True, eval_set(domain, task))
    return task.protocol(domain, False)


def scores(cfg: Profile, spec: FinetuneSpec, domain: str, pairs) -> dict:
    """The task's dataset scores of (item, prediction) pairs of one evaluation set."""
    return tasks.get(spec.task).scores(pairs, **protocol(cfg, domain, spec.task))


def score_sets(cfg: Profile, spec: FinetuneSpec, domains, pairs_for, desc: str = "evaluate") -> pd.DataFrame:
    """One row per evaluation set (``domain``) with the task's metrics of the (item, prediction) pairs
    ``pairs_for(domain)`` yields: the loop behind every accuracy row (models, reference rows, pose)."""
    rows = []
    for domain in tqdm(list(domains), desc=desc, leave=False):
        rows.append({"domain": domain, **scores(cfg, spec, domain, pairs_for(domain))})
    return pd.DataFrame(rows)


def evaluate(cfg: Profile, unet, vae, spec: FinetuneSpec, domains, steps: int = 1, ensemble: int = 1,
             desc: str = "evaluate", text_embedding: torch.Tensor | None = None) -> pd.DataFrame:
    """One row per held-out domain (``domain``) with the task's metrics."""
    return score_sets(cfg, spec, domains,
                      lambda d: predictions(cfg, unet, vae, spec, d, steps, ensemble, text_embedding), desc)
