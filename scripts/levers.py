"""What makes the embedded default perceive? One prior + one-step depth model per lever, scored like every table.

    python scripts/levers.py                    # every lever (about 2 h on 2 cores), writes data/levers.csv
    python scripts/levers.py baseline wide_unet # some of them
    THREADS=2 python scripts/levers.py baseline # torch threads per fine-tuning run (default 1: two runs side by side)
    PRIOR_THREADS=1 python scripts/levers.py baseline  # the prior's threads (default: the row's, ``PRIOR_THREADS``)

Each lever is a set of profile overrides on the recipe ``RECIPE`` (the default profile at fine-tuning lr 3e-4, the
default before the ``lr_1e-3`` row made 1e-3 the default; ``LEVERS``); for each it trains (or loads) the
prior and the one-step depth model, and scores the model, the image-blind guess and the VAE ceiling on the five
held-out toy domains and on held-out scenes of the two training domains ("in-domain": can it learn at all, vs.
can it generalise). ``train_every_domain`` and ``half_outdoor`` are diagnostics, not levers: the same model trained
on scenes of all seven domains (which bounds what more diverse data could give), and on as many street scenes as
rooms (does the paper's 10 % of outdoor scenes starve the outdoor domains?). ``depth_missing_zero`` is the fill of
label pixels without a depth that we used before the authors' (mid-range 0 instead of far +1; tasks/depth.py); it
needs its own prior, since the toy VAE learns these label images. ``disparity_labels`` trains the authors' disparity
task instead (inverse depth, their min-max normaliser) and scores it, its image-blind guess and its ceiling after
alignment in disparity space, as the authors evaluate that release. Column ``depth_missing`` says which fill a row
was measured with. The rows ``vae_4x_lr_1e-3_steps_3000_*`` change the fine-tuned model's spec (``SPECS``: a random
U-Net instead of the prior's, another seed; three seeds each), so the paper's premise, the prior against scratch, is
measured at the best recipe on the paper's two training domains; the rows ``lr_1e-3_steps_3000_*`` make the same
comparison with the default's 8x VAE at the same length, which tells the VAE's part from the length's. Notebook 00
shows the table.

Column ``cpu`` names the processor a row was measured on: priors (and so every row) trained on another CPU differ
(``lr_1e-3_steps_3000`` on an Intel Xeon: held-out 0.308, VAE ceiling 0.1521; on an AMD EPYC 0.312 and 0.1535), so a
comparison takes its rows from one machine. Rows measured before the column existed and re-scored (or measured) on
the Intel Xeon that the committed results come from say so; for the six never re-scored it was not recorded.

Beside each row, ``data/levers_by_domain.csv`` keeps its per-domain AbsRel (long form: lever, split, domain, kind =
model / image-blind / vae-ceiling), so a reader sees which domains a lever moves; the row's means are the means of
these. ``--by-domain-only`` re-scores committed rows from the cache (or retrains them, deterministically) and writes
only that table, after checking that the row's held-out and in-domain means reproduce ``data/levers.csv``; the
minutes columns are left as they were measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import torch

from genpercept_lib import cache, evaluate, experiment, profiles, results, tasks
from genpercept_lib import prior as prior_lib
from genpercept_lib.data import toyworld
from genpercept_lib.spec import FinetuneSpec
from genpercept_lib.tasks.depth import Depth, Disparity

# a VAE that downsamples 4x (three encoder blocks, not four): 16 x 16 latents at 64 px
VAE_4X = {"vae": {"block_out_channels": [32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
                  "up_block_types": ["UpDecoderBlock2D"] * 3}, "unet": {"sample_size": 16}}
LEVERS = {
    "baseline": {},
    "train_steps_3000": {"train_steps": 3000},
    "batch_16_lr_6e-4": {"batch_size": 16, "lr": 6e-4},
    "lr_1e-3": {"lr": 1e-3},
    "lr_1e-3_steps_1200": {"lr": 1e-3, "train_steps": 1200},
    "lr_1e-3_steps_3000": {"lr": 1e-3, "train_steps": 3000},
    "no_lr_flip": {"lr_flip_p": 0.0},  # the scenes as rendered (before the authors' left-right flips were default)
    "wide_unet": {"model_overrides": {"unet": {"block_out_channels": [64, 128, 128], "norm_num_groups": 32,
                                               "attention_head_dim": 8}}},
    "vae_4x_downsampling": {"model_overrides": VAE_4X},
    "prior_4x_longer_on_4x_images": {"prior_unet_steps": 12000, "prior_images": 8192},
    "train_every_domain": {},  # diagnostic: training scenes of all seven domains
    "half_outdoor": {},  # diagnostic: toy Hypersim / toy Virtual KITTI 50 / 50 instead of the paper's 90 / 10
    "depth_missing_zero": {},  # pixels without a depth are 0 (mid-range) in the label image, as we had them
    "disparity_labels": {},  # the authors' disparity release: inverse depth, aligned in disparity space
    "vae_4x_lr_1e-3_steps_1200": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 1200},
    # diagnostic: can the model learn the held-out domains' kinds of scene at all, shown them and trained long?
    "train_every_domain_lr_1e-3_steps_3000": {"lr": 1e-3, "train_steps": 3000},
    "vae_4x_lr_1e-3_steps_3000": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    # diagnostic: the same with the 4x VAE: does the goal come within reach when both the scenes and the VAE allow?
    "train_every_domain_vae_4x_lr_1e-3_steps_3000": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    # the paper's premise at the best recipe on its training domains: the prior vs a random U-Net, three seeds each
    "vae_4x_lr_1e-3_steps_3000_seed_1": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    "vae_4x_lr_1e-3_steps_3000_seed_2": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    "vae_4x_lr_1e-3_steps_3000_scratch": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    "vae_4x_lr_1e-3_steps_3000_scratch_seed_1": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    "vae_4x_lr_1e-3_steps_3000_scratch_seed_2": {"model_overrides": VAE_4X, "lr": 1e-3, "train_steps": 3000},
    # the same comparison with the default's 8x VAE (and its prior), at the same length: is the prior's benefit
    # above the 4x VAE's, or the 3000 steps'?
    "lr_1e-3_steps_3000_seed_0": {"lr": 1e-3, "train_steps": 3000},  # lr_1e-3_steps_3000 on this set's machine
    "lr_1e-3_steps_3000_seed_1": {"lr": 1e-3, "train_steps": 3000},
    "lr_1e-3_steps_3000_seed_2": {"lr": 1e-3, "train_steps": 3000},
    "lr_1e-3_steps_3000_scratch": {"lr": 1e-3, "train_steps": 3000},
    "lr_1e-3_steps_3000_scratch_seed_1": {"lr": 1e-3, "train_steps": 3000},
    "lr_1e-3_steps_3000_scratch_seed_2": {"lr": 1e-3, "train_steps": 3000},
    # the shipped toy Stable Diffusion (data/toy_sd: a 4x VAE, self-attention at 16 x 16, pretrained far longer on
    # far more scenes) instead of a prior the run trains, at the default's lr: does a stronger prior pay, against
    # scratch, and does a lower lr (the paper fine-tunes SD2.1 at 3e-5) keep more of it?
    "toy_sd": {"model": "toy_sd", "lr": 1e-3},
    "toy_sd_scratch": {"model": "toy_sd", "lr": 1e-3},
    "toy_sd_steps_1200": {"model": "toy_sd", "lr": 1e-3, "train_steps": 1200},
    "toy_sd_steps_1200_scratch": {"model": "toy_sd", "lr": 1e-3, "train_steps": 1200},
    "toy_sd_lr_1e-4_steps_1200": {"model": "toy_sd", "lr": 1e-4, "train_steps": 1200},
}
# the recipe every row is measured on: the default profile as it was before row lr_1e-3 became its learning
# rate, so the rows stay comparable with each other and reproducible (scripts/prior_length.py shares it)
RECIPE = {"lr": 3e-4, "model": "tiny", "n_eval": 48, "prior_threads": 2}  # the default the table was measured on
OUT = results.REPO_ROOT / "data" / "levers.csv"
OUT_BY_DOMAIN = results.REPO_ROOT / "data" / "levers_by_domain.csv"
BY_DOMAIN_COLUMNS = ("lever", "split", "domain", "kind", "AbsRel", "commit")
COLUMNS = ("lever", "overrides", "depth_missing", "prior_minutes", "finetune_minutes", "heldout_model",
           "heldout_image_blind", "heldout_vae_ceiling", "indomain_model", "indomain_image_blind",
           "indomain_vae_ceiling", "commit", "cpu")


class DepthEveryDomain(Depth):
    """The diagnostic: depth trained on scenes of every toy domain (90/10 becomes uniform over seven)."""

    name = "depth_every_domain"
    in_prior = False
    toy_train_mix = {d: 1.0 for d in toyworld.TRAIN_DOMAINS + toyworld.EVAL_DOMAINS}


class DepthHalfOutdoor(Depth):
    """The diagnostic: depth trained on as many street scenes (toy Virtual KITTI) as rooms (toy Hypersim)."""

    name = "depth_half_outdoor"
    in_prior = False
    toy_train_mix = {"toy_hypersim": 0.5, "toy_vkitti": 0.5}


# rows that change the fine-tuned model's spec (its initialisation, its seed) rather than the profile
SPECS = {"vae_4x_lr_1e-3_steps_3000_seed_1": {"seed": 1}, "vae_4x_lr_1e-3_steps_3000_seed_2": {"seed": 2},
         "vae_4x_lr_1e-3_steps_3000_scratch": {"init": "scratch"},
         "vae_4x_lr_1e-3_steps_3000_scratch_seed_1": {"init": "scratch", "seed": 1},
         "vae_4x_lr_1e-3_steps_3000_scratch_seed_2": {"init": "scratch", "seed": 2},
         "lr_1e-3_steps_3000_seed_0": {"seed": 0}, "lr_1e-3_steps_3000_seed_1": {"seed": 1},
         "lr_1e-3_steps_3000_seed_2": {"seed": 2},
         "lr_1e-3_steps_3000_scratch": {"init": "scratch"},
         "lr_1e-3_steps_3000_scratch_seed_1": {"init": "scratch", "seed": 1},
         "lr_1e-3_steps_3000_scratch_seed_2": {"init": "scratch", "seed": 2},
         "toy_sd_scratch": {"init": "scratch"}, "toy_sd_steps_1200_scratch": {"init": "scratch"}}
# rows whose prior was trained with one thread (the default's trains with two; both are part of the prior's cache
# key, and they give other weights). The rows before these were measured (or re-scored: levers_by_domain.csv) on
# the default's two-thread prior, except the ones with a prior of their own, whose thread count was not recorded.
PRIOR_THREADS = {name: 1 for name in LEVERS if "vae_4x_lr_1e-3_steps" in name}
# levers and diagnostics that change the depth task rather than the profile: the task each one trains
TASKS = {"train_every_domain": DepthEveryDomain, "half_outdoor": DepthHalfOutdoor,
         "depth_missing_zero": lambda: Depth(missing="zero"),  # replaces "depth": its own prior (the VAE's labels)
         "disparity_labels": Disparity, "train_every_domain_lr_1e-3_steps_3000": DepthEveryDomain,
         "train_every_domain_vae_4x_lr_1e-3_steps_3000": DepthEveryDomain}


def measure(name: str) -> tuple[dict, list[dict]]:
    """The lever's row of ``data/levers.csv`` and its per-domain rows (``data/levers_by_domain.csv``)."""
    before = dict(tasks.REGISTRY)
    try:
        return _measure(name)
    finally:  # a lever's task (depth_missing_zero replaces "depth") never outlives its row
        tasks.REGISTRY.clear()
        tasks.REGISTRY.update(before)


def _measure(name: str) -> tuple[dict, list[dict]]:
    cfg = profiles.setup("default", 0, {**RECIPE, **LEVERS[name]})
    threads = int(os.environ.get("THREADS", "1"))  # 1: two of these can share the 2 cores without thrashing
    prior_threads = int(os.environ.get("PRIOR_THREADS", PRIOR_THREADS.get(name, cfg.prior_threads)))
    cfg = cfg.replace(threads=threads, prior_threads=prior_threads)
    torch.set_num_threads(cfg.threads)
    task = "depth"
    if name in TASKS:  # before the prior: a task the toy VAE learns keys the prior
        task = tasks.register(TASKS[name](), replace=True).name
    t0 = time.perf_counter()
    prior = prior_lib.load_or_train_prior(cfg)
    prior_minutes = prior.train_seconds / 60 if prior.train_seconds else (time.perf_counter() - t0) / 60
    spec = FinetuneSpec(task=task, **SPECS.get(name, {}))
    row = {"lever": name, "overrides": json.dumps({**LEVERS[name], **SPECS.get(name, {})}, sort_keys=True),
           "depth_missing": tasks.get(task).missing, "prior_minutes": round(prior_minutes, 1)}
    by_domain = []
    for where, domains in (("heldout", evaluate.eval_domains(cfg)), ("indomain", toyworld.TRAIN_DOMAINS)):
        t0 = time.perf_counter()
        model = experiment.run(cfg, prior, spec, list(domains))
        if where == "heldout":
            row["finetune_minutes"] = round((time.perf_counter() - t0) / 60, 1)
        # the references of the depth task, or of the lever's own where it aligns elsewhere (disparity)
        ref_task = task if tasks.get(task).space != "depth" else "depth"
        refs = experiment.references(cfg, prior, FinetuneSpec(task=ref_task), list(domains),
                                     kinds=("image-blind", "vae-ceiling"))
        row[f"{where}_model"] = round(float(model.AbsRel.mean()), 4)
        row[f"{where}_image_blind"] = round(float(refs[refs.kind == "image-blind"].AbsRel.mean()), 4)
        row[f"{where}_vae_ceiling"] = round(float(refs[refs.kind == "vae-ceiling"].AbsRel.mean()), 4)
        for frame in (model, refs):  # one row per (setting, domain) and kind: one setting here
            by_domain += [{"lever": name, "split": where, "domain": r.domain, "kind": r.kind,
                           "AbsRel": round(float(r.AbsRel), 4)} for r in frame.itertuples()]
    from genpercept_lib.apps.reproduce import git_commit

    row["commit"] = git_commit()
    row["cpu"] = results.cpu_model_name()  # another CPU sums in another order: its priors, so its rows, differ
    for r in by_domain:
        r["commit"] = row["commit"]
    return row, by_domain


class NotReproduced(RuntimeError):
    """A re-scored lever whose means differ from its committed row (the message is one line)."""


def check_reproduces(row: dict, committed: dict | None) -> None:
    """Raise ``NotReproduced`` unless ``row``'s held-out and in-domain scores equal the committed row's."""
    if committed is None:
        raise NotReproduced(f"lever {row['lever']!r} has no row in {OUT.name}: measure it first (without "
                            "--by-domain-only)")
    cols = [c for c in COLUMNS if c.startswith(("heldout_", "indomain_"))]
    diff = {c: (committed[c], row[c]) for c in cols if abs(float(committed[c]) - float(row[c])) > 1e-4}
    if diff:
        where = ""
        if committed.get("cpu") and committed["cpu"] != row.get("cpu"):
            where = (f" (the row was measured on {committed['cpu']}, this is {row.get('cpu')}: another CPU trains "
                     "another prior)")
        raise NotReproduced(f"lever {row['lever']!r} does not reproduce its row in {OUT.name}: "
                            + ", ".join(f"{c} {a} committed vs {b} now" for c, (a, b) in diff.items()) + where)


def chosen_levers(argv, levers: dict, doc: str, prog: str, flags: dict[str, str] | None = None):
    """The command line: ``.levers``, the lever names on it (all of ``levers`` without any), and one boolean per
    entry of ``flags`` (flag -> help); or None after a one-line error naming an unknown lever (scripts/pose_levers.py
    shares this)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("levers", nargs="*", default=list(levers), help=f"some of {', '.join(levers)}")
    for flag, help_text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=help_text)
    args = parser.parse_args(argv)
    unknown = [n for n in args.levers if n not in levers]
    if unknown:
        print(f"{prog}: unknown lever {unknown[0]!r}: expected one of {', '.join(levers)}", file=sys.stderr)
        return None
    return args


def merge_rows(out, columns, new: list[dict], key) -> None:
    """Write ``new`` into the table ``out``, replacing the rows with the same ``key(row)`` and keeping the others,
    sorted by key. The file is read again under a lock, so two of these scripts may run side by side
    (scripts/prior_length.py shares this)."""

    with cache.entry_lock(out, str(out.name)):  # <out>.lock beside it: whichever cache each process uses
        rows = {}
        if out.is_file():
            with open(out) as f:
                rows = {key(r): r for r in csv.DictReader(f)}
        rows.update({key(r): r for r in new})
        with cache.atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows[k] for k in sorted(rows))


def main(argv=None) -> int:
    args = chosen_levers(argv, LEVERS, __doc__, "levers.py", {
        "--by-domain-only": "re-score committed rows for data/levers_by_domain.csv only (their means must reproduce)"})
    if args is None:
        return 2
    names, only_by_domain = args.levers, args.by_domain_only
    order = {name: i for i, name in enumerate(LEVERS)}
    splits = {"heldout": 0, "indomain": 1}
    committed = {}
    if only_by_domain and OUT.is_file():  # the rows the re-scored ones must reproduce
        with open(OUT) as f:
            committed = {r["lever"]: r for r in csv.DictReader(f)}
    for name in names:
        row, by_domain = measure(name)
        print(row, flush=True)
        if only_by_domain:
            try:
                check_reproduces(row, committed.get(name))
            except NotReproduced as e:
                print(f"levers.py: {e}", file=sys.stderr)
                return 1
        else:
            merge_rows(OUT, COLUMNS, [row], key=lambda r: (order.get(r["lever"], len(order)), r["lever"]))
        merge_rows(OUT_BY_DOMAIN, BY_DOMAIN_COLUMNS, by_domain,
                   key=lambda r: (order.get(r["lever"], len(order)), r["lever"], splits.get(r["split"], 2),
                                  r["domain"], r["kind"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
