"""Does the prior know geometry? Linear probes of the frozen toy SD's U-Net (genpercept_lib/probe.py).

    python scripts/probe_prior.py [--prior data/toy_sd] [--fits 3] [--n-fit 2048] [--n-eval 48] [-o data/probe.csv]

For each of ``--fits`` probe fits (scenes of every domain, a different sample each), fits a ridge probe from the
features of (a) the shipped toy SD's U-Net, (b) a randomly initialised U-Net of the same architecture and (c)
position alone (the image-blind guess), and scores them on held-out scenes of the five unseen domains
(split = heldout) and of the two training domains (split = indomain). Writes one row per (kind, fit, domain).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from genpercept_lib import models, probe
from genpercept_lib import prior as prior_lib
from genpercept_lib.data import pool, toyworld
from genpercept_lib.progress import tqdm


def scenes(mix, n: int, size: int, split: str, seed: int) -> dict:
    data = pool.render_pool(mix, n, size, split=split, seed=seed, keys=("rgb", "depth", "valid"))
    return {"rgb": torch.from_numpy(data["rgb"]).float(), "depth": data["depth"].astype(np.float64),
            "valid": data["valid"].astype(bool)}


def at_grid(part: dict, unet, vae, grid: int, t: int) -> dict:
    d, m = probe.depth_grid(part["depth"], part["valid"], grid)
    x = None if unet is None else probe.unet_features(unet, vae, part["rgb"], t=t).double().numpy()
    return {"x": x, "depth": d, "valid": m}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", type=Path, default=prior_lib.SHIPPED)
    p.add_argument("--fits", type=int, default=3)
    p.add_argument("--n-fit", type=int, default=2048)
    p.add_argument("--n-eval", type=int, default=48)
    p.add_argument("--t", type=int, default=100, help="timestep of the probe's input noise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--out", type=Path, default=Path("data/probe.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    shipped = prior_lib.load_shipped(args.prior)
    vae, grid = shipped.vae, shipped.unet.config.sample_size
    size = grid * models.vae_scale_factor(vae)  # the resolution the prior was trained at
    unets = {"toy_sd": shipped.unet,
             "random_unet": models.build_unet(dict(shipped.unet.config), seed=1).eval(),
             "image_blind": None}
    evals = {d: scenes(d, args.n_eval, size, "eval", 0) for d in toyworld.EVAL_DOMAINS + toyworld.TRAIN_DOMAINS}
    every = {d: 1.0 for d in toyworld.TRAIN_DOMAINS + toyworld.EVAL_DOMAINS}
    rows = []
    for kind, unet in unets.items():
        ev = {d: at_grid(s, unet, vae, grid, args.t) for d, s in evals.items()}
        for fit in tqdm(range(args.fits), desc=f"probe {kind}"):
            fitted = at_grid(scenes(every, args.n_fit, size, "train", fit), unet, vae, grid, args.t)
            for domain, absrel in probe.probe(fitted, ev).items():
                split = "indomain" if domain in toyworld.TRAIN_DOMAINS else "heldout"
                rows.append({"kind": kind, "fit": fit, "domain": domain, "split": split, "abs_rel": round(absrel, 4),
                             "grid": grid, "t": args.t, "n_fit": args.n_fit, "n_eval": args.n_eval})
    table = pd.DataFrame(rows)
    table["prior"] = str(args.prior)
    table["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    table.to_csv(args.out, index=False)
    per_fit = table.groupby(["kind", "split", "fit"]).abs_rel.mean()  # mean over the split's domains
    summary = per_fit.groupby(["kind", "split"]).agg(["mean", "min", "max"])
    print(summary.round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
