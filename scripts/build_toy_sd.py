"""Build the toy world's Stable Diffusion once and ship it in data/toy_sd/ (what `make prior` runs).

    python scripts/build_toy_sd.py [--out data/toy_sd] [--work DIR] [--recipe smoke]

Renders the pretraining scenes (toy RGB of every domain, plus label images for the VAE), trains the VAE and
then the generator U-Net with checkpoints in --work (default: $GENPERCEPT_CACHE/toy_sd_build, else
~/.cache/genpercept/toy_sd_build, outside the checkout): a killed build continues from its last checkpoint when the
same command runs again, also from a fresh clone on the same machine.
The result is written whole at the end, with provenance.json (commit, command, recipe, host CPU, minutes, final
losses, sha256 of every file). The default profile loads it; nothing else writes there.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from genpercept_lib import prior

RECIPES = {
    "toy_sd": prior.TOY_SD_RECIPE,
    # seconds: the tests build one this size to cover the builder and its resume
    "smoke": dataclasses.replace(prior.TOY_SD_RECIPE, image_size=32, n_images=32, vae_steps=6, vae_batch=4,
                                 unet_steps=6, unet_batch=4, threads=1, checkpoint_every=2,
                                 unet={**prior.TOY_SD_RECIPE.unet, "sample_size": 8}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=prior.SHIPPED, help="where the toy SD is written (data/toy_sd)")
    p.add_argument("--work", type=Path, default=None, help="checkpoint folder (resumable)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="toy_sd")
    args = p.parse_args(argv)
    command = "python scripts/build_toy_sd.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = prior.build_toy_sd(RECIPES[args.recipe], out=args.out, work=args.work, command=command.strip())
    meta = prior.verify_shipped(out)
    print(f"toy SD written to {out}: {meta['minutes']} min, final losses {meta['final_losses']}, "
          f"latents {meta['latent_grid'][0]} x {meta['latent_grid'][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
