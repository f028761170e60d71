"""Why does the toy prior not beat a random initialisation? Pretraining length against the fine-tuned score.

    python scripts/prior_length.py                 # every prior length (about 20 min on one core), writes
                                                   # data/prior_length.csv
    python scripts/prior_length.py 0 300           # some of them (0: no pretraining, i.e. from scratch)

The paper's premise is that what the generator learned in pretraining transfers to perception. Here the default
prior's frozen VAE is kept and only its generator U-Net is pretrained for ``prior_unet_steps`` in
``PRIOR_STEPS`` (0 = the random initialisation, the ``scratch`` rows of notebook 01; 3000 = the default prior
itself). From each, one-step depth is fine-tuned with the lever table's recipe
(``levers.RECIPE``: the default at lr 3e-4) for ``FINETUNE_STEPS`` and three seeds,
and scored on the five held-out toy domains and on held-out scenes of the two training domains (in-domain).
If pretraining mattered, the fine-tuned AbsRel would fall as the prior trains longer, most at the short
fine-tuning budget, where a head start counts. Notebook 01 shows the table and the figure.
"""

from __future__ import annotations

import os
import sys

import torch
from levers import RECIPE, merge_rows  # scripts/levers.py (this script's folder is on sys.path when it runs)

from genpercept_lib import evaluate, experiment, models, profiles, results
from genpercept_lib import prior as prior_lib
from genpercept_lib.apps.reproduce import git_commit
from genpercept_lib.data import toyworld
from genpercept_lib.spec import FinetuneSpec

PRIOR_STEPS = (0, 300, 1000, 3000, 10000)
FINETUNE_STEPS = (100, 400)
SEEDS = (0, 1, 2)
OUT = results.REPO_ROOT / "data" / "prior_length.csv"
COLUMNS = ("prior_unet_steps", "prior_final_loss", "finetune_steps", "seed", "heldout_model",
           "indomain_model", *(f"absrel_{d}" for d in toyworld.EVAL_DOMAINS + toyworld.TRAIN_DOMAINS), "commit")


def prior_of_length(cfg, base, steps: int):
    """The default prior with its generator pretrained ``steps`` on the default's VAE (the default prior itself
    at its own length), cached beside it so that the models fine-tuned from it are cached like any other."""
    if steps == cfg.prior_unet_steps:
        return base
    # its generator trains with this process's threads (THREADS), not the base prior's: the key says so
    cfg = cfg.replace(prior_unet_steps=steps, prior_threads=torch.get_num_threads())
    folder = base.folder.with_name(f"{base.folder.name}-unet{steps}")
    cached = prior_lib.load_cached(folder, cfg)
    if cached is not None:
        return cached
    latents = models.encode_batched(base.vae, prior_lib.prior_images(cfg)["rgb"])  # [N, 4, h, w]
    unet, history = prior_lib.train_generator(latents, prior_lib.Recipe.from_profile(cfg))
    meta = {"settings": prior_lib.prior_settings(cfg), "history": {"unet": history}}
    prior_lib.save_prior(folder, base.vae, unet, meta)
    return prior_lib.Prior(base.vae, unet.eval(), folder, history=meta["history"])


def measure(cfg, base, steps: int) -> list[dict]:
    """Three seeds x each fine-tuning length from the prior of ``steps`` (0: from scratch), scored."""
    prior = prior_of_length(cfg, base, steps) if steps else base
    final_loss = round(float(prior.history["unet"][-1]["loss"]), 4) if steps else ""
    domains = list(evaluate.eval_domains(cfg)) + list(toyworld.TRAIN_DOMAINS)
    rows = []
    for ft_steps in FINETUNE_STEPS:
        for seed in SEEDS:
            spec = FinetuneSpec(init="scratch" if steps == 0 else "prior", seed=seed, steps=ft_steps)
            absrel = experiment.run(cfg, prior, spec, domains).set_index("domain").AbsRel
            rows.append({"prior_unet_steps": steps, "prior_final_loss": final_loss,
                         "finetune_steps": ft_steps, "seed": seed,
                         "heldout_model": round(float(absrel[toyworld.EVAL_DOMAINS].mean()), 4),
                         "indomain_model": round(float(absrel[toyworld.TRAIN_DOMAINS].mean()), 4),
                         **{f"absrel_{d}": round(float(absrel[d]), 4) for d in domains},
                         "commit": git_commit()})
            print({k: rows[-1][k] for k in ("prior_unet_steps", "finetune_steps", "seed", "heldout_model",
                                            "indomain_model")}, flush=True)
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        chosen = [int(a) for a in argv] or list(PRIOR_STEPS)
    except ValueError:
        print(f"prior_length.py: expected prior lengths (integers >= 0), got {' '.join(argv)!r}", file=sys.stderr)
        return 2
    cfg = profiles.setup("default", 0, RECIPE)  # the lever table's recipe (fine-tuning lr 3e-4)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    base = prior_lib.load_or_train_prior(cfg)
    for steps in chosen:
        merge_rows(OUT, COLUMNS, measure(cfg, base, steps),
                   key=lambda r: (int(r["prior_unet_steps"]), int(r["finetune_steps"]), int(r["seed"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
