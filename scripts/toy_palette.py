"""Where the toy segmentation palette's colours sit (``toyworld.SEMANTIC_COLORS``): a seeded search.

    python scripts/toy_palette.py            # about 3 minutes on 2 cores; prints the palette and its scores

The rule: the classes of the indoor training domain (``toyworld.INDOOR_CLASSES``) take colours whose red channel
is 0 or 0.5, the outdoor-only classes red 1, every channel on the 0 / 0.5 / 1 grid (black stays "unlabelled"), so
no blend of two indoor classes lies nearer an outdoor colour. Inside each half, a local search (random swaps and
moves, seeded) maximises ``segmentation.blend_miou`` (8x block blur, as the toy VAE's latent grid, then Gaussian
colour noise of 0.15, as a model's colour error) of the training
domains' label maps at 64 px: the first 96 of segmentation's training pool (toy Hypersim), plus half the weight on
toy Virtual KITTI's held-out scenes (the outdoor training domain). No evaluation domain is looked at; the last
lines score the result on them beside the grid palette used before (``toyworld.GRID_COLORS_V1``).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from tqdm.auto import tqdm

from genpercept_lib import evaluate, profiles, tasks
from genpercept_lib.data import toyworld
from genpercept_lib.sources import training_pool
from genpercept_lib.spec import FinetuneSpec
from genpercept_lib.tasks.segmentation import COLOUR_NOISE as NOISE
from genpercept_lib.tasks.segmentation import blend_miou


def labels(cfg, domain: str, n: int | None = None) -> np.ndarray:
    """[N, H, W] class maps: segmentation's training pool (``domain=None``) or a domain's evaluation pool."""
    if domain is None:
        return np.asarray(training_pool(cfg, FinetuneSpec(task="seg_toy"))["semantic"][:n], np.int64)
    return np.asarray(evaluate.eval_pool(cfg, domain, tasks.get("seg_toy"))["semantic"], np.int64)


def search(indoor: np.ndarray, outdoor: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    grid = np.array(list(itertools.product([0, 0.5, 1], repeat=3)), float)  # [27, 3]
    half_a = grid[(grid[:, 0] <= 0.5) & grid.any(1)]  # indoor classes: red 0 or 0.5, not black
    half_b = grid[grid[:, 0] == 1]  # outdoor-only classes: red 1
    seen = [toyworld.CLASSES.index(c) for c in toyworld.INDOOR_CLASSES]
    unseen = [i for i in range(len(toyworld.CLASSES)) if i not in seen]

    def palette(a, b):
        out = np.zeros((len(toyworld.CLASSES), 3))
        out[seen], out[unseen] = half_a[a], half_b[b]
        return out

    def score(pal):
        return blend_miou(pal, indoor, noise=NOISE) + 0.5 * blend_miou(pal, outdoor, noise=NOISE)

    rng = np.random.default_rng(seed)
    a, b = list(range(len(seen))), list(range(len(unseen)))
    best = score(palette(a, b))
    for _ in tqdm(range(iterations), desc="palette search"):
        ca, cb = list(a), list(b)
        lst, n = (ca, len(half_a)) if rng.random() < 0.75 else (cb, len(half_b))
        i = rng.integers(len(lst))
        free = [g for g in range(n) if g not in lst]
        if rng.random() < 0.5 or not free:
            j = rng.integers(len(lst))
            lst[i], lst[j] = lst[j], lst[i]
        else:
            lst[i] = int(rng.choice(free))
        s = score(palette(ca, cb))
        if s >= best:
            best, a, b = s, ca, cb
    return palette(a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=96, help="label maps per training domain")
    args = parser.parse_args()
    cfg = profiles.setup("default", 0, {})
    indoor, outdoor = labels(cfg, None, args.images), labels(cfg, "toy_vkitti")
    pal = search(indoor, outdoor, args.iterations, args.seed)
    print("SEMANTIC_COLORS = [")
    for name, c in zip(toyworld.CLASSES, pal):
        print(f"    {c.tolist()},  # {name}")
    print("]")
    for title, p in (("grid palette (before)", toyworld.GRID_COLORS_V1), ("searched palette", pal)):
        held = {d: round(blend_miou(p, labels(cfg, d), noise=NOISE), 3) for d in toyworld.EVAL_DOMAINS}
        print(f"{title}: training {blend_miou(p, indoor, noise=NOISE):.3f} indoor, "
              f"{blend_miou(p, outdoor, noise=NOISE):.3f} outdoor; held-out {held}")


if __name__ == "__main__":
    main()
