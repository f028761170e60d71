"""What makes the toy pose model find keypoints? One pose model per lever, scored on notebook 06's two evaluation sets.

    python scripts/pose_levers.py                      # every lever (about 40 min on 2 cores)
    python scripts/pose_levers.py mmpose_1_16 default  # some of them

Each lever is a set of profile overrides on the default profile (``LEVERS``); for each it trains (or loads) the
one-step pose model of seed 0 and prints its AP with the ground-truth and with the jittered boxes, beside the
minutes it took. ``mmpose_1_16`` is the configuration before the default changed: ViTPose's head on the U-Net's
1/16 level, the shared learning rate, 4000 steps, no box augmentation. The pose section of notebook 06 and
docs/measurements.md quote what this printed.
"""

from __future__ import annotations

import sys
import time

from levers import chosen_levers  # scripts/levers.py (this script's folder is on sys.path when it runs)

from genpercept_lib import evaluate, pose, profiles
from genpercept_lib import prior as prior_lib
from genpercept_lib.spec import FinetuneSpec

BEFORE = {"feature_stride": 16, "augment_copies": 0, "lr": 3e-4, "steps": 4000}  # pose's settings (PoseSettings)


def pose_lever(**changes) -> dict:
    """The profile overrides that change pose's own settings (``{"tasks": {"pose": ...}}``)."""
    return {"tasks": {"pose": changes}}


LEVERS = {
    "mmpose_1_16": pose_lever(**BEFORE),
    "lr_1e-3": pose_lever(**{**BEFORE, "lr": 1e-3}),
    "lr_1e-3_8000_steps": pose_lever(**{**BEFORE, "lr": 1e-3, "steps": 8000}),
    "lr_1e-3_features_1_8": pose_lever(**{**BEFORE, "lr": 1e-3, "feature_stride": 8}),
    "two_copies": pose_lever(augment_copies=2),
    "default": {},  # 1/8 features, lr 1.5e-3, 6000 steps, four box-jittered copies (pose/settings.py)
}


def measure(name: str) -> dict:
    cfg = profiles.setup("default", 0, LEVERS[name], announce=False)
    prior = prior_lib.load_or_train_prior(cfg)
    sets = evaluate.eval_domains(cfg, "pose")
    t0 = time.perf_counter()
    df = pose.run(cfg, prior, FinetuneSpec(task="pose", seed=0), sets)
    row = {"lever": name, "minutes": round((time.perf_counter() - t0) / 60, 1)}
    row.update({f"AP_{s}": round(float(df[df.domain == s].AP.mean()), 3) for s in sets})
    return row


def main(argv=None) -> int:
    args = chosen_levers(argv, LEVERS, __doc__, "pose_levers.py")
    if args is None:
        return 2
    for name in args.levers:
        print(measure(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
