"""Is the DIS / matting target the scene's subject? ``python scripts/subject_check.py [--n 240] [--size 96]
[--out data/subject_check.csv]``.

Renders the held-out evaluation scenes (those of the DIS and matting eval pools: ``pool.domain_draws`` over
``toyworld.EVAL_DOMAINS``, indices from ``pool.OFFSETS["eval"]``) twice, plain and with ``subject=True`` (the framing
the DIS and matting tasks use, ``toyworld.scene._subject``), and writes one row per framing and foreground class
(``all`` first):

* ``largest``: share of scenes whose target (mask = alpha > 0.5) is the largest object of its semantic class in
  view. Other people are told apart by the instance map; other objects of the class are the connected regions
  (8-connected) of that class outside the matte (alpha < 0.01), so two touching look-alikes count as one (which
  only makes the check harder). A scene with an empty mask counts as a miss.
* ``largest_box``: the same with bounding-box areas instead of pixel counts (a chair's or a lamp's mask is mostly
  thin legs and poles: few pixels for the space it takes in the picture).
* ``look_alike``: share of scenes where the class covers at least half the target's area outside the matte
  (``tasks.matting.look_alike_elsewhere``).
* ``area_median``: the target's share of the image (median over scenes with a target).
* ``centre_median``: distance of the target's centroid from the image centre, as a fraction of the image size
  (median over scenes with a target).
* ``ipq_median``: the target mask's isoperimetric quotient (``tasks.dis``; large for thin, branching shapes).
* ``soft_median``: pixels of fractional alpha (0.02 < alpha < 0.98) per mask pixel (hair, wires, shades).
* ``empty``: share of scenes whose mask is empty.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy import ndimage

from genpercept_lib.data import pool, toyworld
from genpercept_lib.tasks.dis import isoperimetric_quotient
from genpercept_lib.tasks.matting import look_alike_elsewhere

PERSON = toyworld.CLASSES.index("person")
COLUMNS = ("framing", "group", "n", "largest", "largest_box", "look_alike", "area_median", "centre_median",
           "ipq_median", "soft_median", "empty")


def box_area(sl) -> int:
    """Pixels of the bounding box given as a pair of slices (``ndimage.find_objects``)."""
    return (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)


def measure(sample: dict) -> dict:
    """The check's numbers for one rendered scene (rgb, alpha, semantic, instance)."""
    alpha, sem, inst = sample["alpha"], sample["semantic"], sample["instance"]
    target = alpha > 0.5  # [H, W]
    size = alpha.shape[0]
    if not target.any():
        return dict(group="none", empty=True, largest=False, largest_box=False, look_alike=False)
    cls = int(np.bincount(sem[target]).argmax())
    area = int(target.sum())
    others = (sem == cls) & (alpha < 0.01)  # [H, W] the class outside the matte
    if cls == PERSON:  # other people: the instance map (less the matted person's own stray pixels)
        inside = inst[target & (inst >= 0)]
        me = np.bincount(inside).argmax() if inside.size else -1
        labels = np.where(others & (inst >= 0) & (inst != me), inst + 1, 0)
    else:  # other objects of the class: its connected regions outside the matte
        labels, _ = ndimage.label(others, structure=np.ones((3, 3)))
    regions = [(int((labels[sl] == k + 1).sum()), box_area(sl))
               for k, sl in enumerate(ndimage.find_objects(labels)) if sl is not None]
    rows, cols = np.nonzero(target)
    c = (size - 1) / 2
    return dict(group=toyworld.CLASSES[cls], empty=False, largest=area > max([a for a, _ in regions], default=0),
                largest_box=box_area(ndimage.find_objects(target.astype(int))[0])
                > max([b for _, b in regions], default=0),
                look_alike=look_alike_elsewhere(alpha, sem), area=area / target.size,
                centre=float(np.hypot(rows.mean() - c, cols.mean() - c)) / size,
                ipq=isoperimetric_quotient(target),
                soft=float(((alpha > 0.02) & (alpha < 0.98)).sum()) / area)


def summarise(framing: str, group: str, found: list[dict]) -> dict:
    hit = [m for m in found if not m["empty"]]
    med = lambda k: float(np.median([m[k] for m in hit])) if hit else float("nan")  # noqa: E731
    return dict(framing=framing, group=group, n=len(found), largest=np.mean([m["largest"] for m in found]),
                largest_box=np.mean([m["largest_box"] for m in found]),
                look_alike=np.mean([m["look_alike"] for m in found]), area_median=med("area"),
                centre_median=med("centre"), ipq_median=med("ipq"), soft_median=med("soft"),
                empty=np.mean([m["empty"] for m in found]))


def check(n: int, size: int, seed: int = 0) -> list[dict]:
    """Rows of the check over the first ``n`` held-out evaluation scenes (the eval pools' scenes, seed ``seed``)."""
    domains = pool.domain_draws({d: 1.0 for d in toyworld.EVAL_DOMAINS}, n, seed)
    rows = []
    for framing, subject in (("plain", False), ("subject", True)):
        found = [measure(toyworld.render(d, pool.OFFSETS["eval"] + i, size, subject=subject))
                 for i, d in enumerate(domains)]
        rows.append(summarise(framing, "all", found))
        for group in sorted({m["group"] for m in found} - {"none"}):
            rows.append(summarise(framing, group, [m for m in found if m["group"] == group]))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240, help="held-out scenes (default 240)")
    parser.add_argument("--size", type=int, default=96, help="render size in pixels (default 96, as DIS / matting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "subject_check.csv")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < toyworld.MIN_SIZE:
        parser.error(f"--n {args.n}, --size {args.size}: expected at least 1 scene of at least {toyworld.MIN_SIZE} px")
    rows = check(args.n, args.size, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    for row in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
