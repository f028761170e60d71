"""The measurement scripts behind notebook tables (scripts/levers.py, scripts/prior_length.py): their shared table
writer, their bad-argument errors, and the committed tables the notebooks read."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import levers
        import prior_length

        yield levers, prior_length
    finally:
        sys.path.remove(str(SCRIPTS))


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_merge_rows_replaces_rows_by_key_and_keeps_the_others(scripts, tmp_path):
    """Two of these scripts run side by side: each writes its rows into the file as it is then, never a copy it
    read at start (was: the second writer dropped the first one's rows)."""
    levers, _ = scripts
    out = tmp_path / "table.csv"
    key = lambda r: (int(r["n"]), r["name"])  # noqa: E731
    levers.merge_rows(out, ("n", "name", "value"), [{"n": 2, "name": "b", "value": 1}], key)
    levers.merge_rows(out, ("n", "name", "value"), [{"n": 1, "name": "a", "value": 5}], key)  # another process
    levers.merge_rows(out, ("n", "name", "value"), [{"n": 2, "name": "b", "value": 7}], key)  # measured again
    assert read(out) == [{"n": "1", "name": "a", "value": "5"}, {"n": "2", "name": "b", "value": "7"}]


def test_bad_arguments_get_one_line_and_exit_code_2(scripts, capsys):
    levers, prior_length = scripts
    assert levers.main(["no_such_lever"]) == 2
    assert "unknown lever 'no_such_lever'" in capsys.readouterr().err
    assert levers.main(["--by-domain-only", "baseline", "nope"]) == 2  # the flag is an option, not a lever
    assert "unknown lever 'nope'" in capsys.readouterr().err
    import pose_levers

    assert pose_levers.main(["nope"]) == 2 and "unknown lever 'nope'" in capsys.readouterr().err
    assert prior_length.main(["long"]) == 2
    err = capsys.readouterr().err
    assert "expected prior lengths (integers >= 0)" in err and len(err.strip().splitlines()) == 1


def test_every_pose_lever_is_a_valid_override_of_pose_settings(scripts):
    """Each lever of scripts/pose_levers.py changes pose's typed settings (read here, so a misspelt one fails)."""
    import pose_levers

    from genpercept_lib import profiles
    from genpercept_lib.pose import settings

    default = profiles.get_profile("default")
    seen = {name: settings.pose_settings(profiles.with_overrides(default, o)) for name, o in pose_levers.LEVERS.items()}
    assert (seen["mmpose_1_16"].feature_stride, seen["mmpose_1_16"].steps, seen["mmpose_1_16"].lr) == (16, 4000, 3e-4)
    assert seen["two_copies"].augment_copies == 2 and seen["default"] == settings.pose_settings(default)


def test_the_committed_prior_length_table_is_complete(scripts):
    """Notebook 01 reads data/prior_length.csv: every prior length x fine-tuning length x seed, with scores."""
    _, prior_length = scripts
    rows = read(DATA / "prior_length.csv")
    got = {(int(r["prior_unet_steps"]), int(r["finetune_steps"]), int(r["seed"])) for r in rows}
    assert got == {(p, f, s) for p in prior_length.PRIOR_STEPS for f in prior_length.FINETUNE_STEPS
                   for s in prior_length.SEEDS}
    assert all(0 < float(r["heldout_model"]) < 1 and 0 < float(r["indomain_model"]) < 1 for r in rows)
    assert all((r["prior_final_loss"] == "") == (r["prior_unet_steps"] == "0") for r in rows)


def test_the_committed_lever_table_has_every_lever(scripts):
    levers, _ = scripts
    rows = read(DATA / "levers.csv")
    assert [r["lever"] for r in rows] == list(levers.LEVERS)
    assert all(float(r["heldout_vae_ceiling"]) < float(r["heldout_image_blind"]) for r in rows)
    # every row at the authors' fill of pixels without a depth but the one lever that measures ours
    others = {r["lever"]: r["depth_missing"] for r in rows if r["depth_missing"] != "far"}
    assert others == {"depth_missing_zero": "zero"}
    # the processor of each row (priors trained on other CPUs differ): recorded since the column exists
    recorded = {r["lever"] for r in rows if r["cpu"]}
    assert set(levers.LEVERS) - recorded == {"batch_16_lr_6e-4", "wide_unet", "vae_4x_downsampling",
                                             "prior_4x_longer_on_4x_images", "depth_missing_zero", "disparity_labels"}


def test_the_per_domain_lever_table_is_the_lever_tables_means(scripts):
    """data/levers_by_domain.csv (notebook 00's per-domain figure): each lever it holds is a lever of the table, with
    every held-out and training domain for each kind, and the means over its domains are the row's in levers.csv."""
    import pandas as pd

    from genpercept_lib.data import toyworld

    levers, _ = scripts
    rows = {r["lever"]: r for r in read(DATA / "levers.csv")}
    by = pd.read_csv(DATA / "levers_by_domain.csv")
    assert set(by.lever) <= set(levers.LEVERS) and {"lr_1e-3", "train_every_domain_lr_1e-3_steps_3000"} <= set(by.lever)
    for (lever, split, kind), g in by.groupby(["lever", "split", "kind"]):
        domains = toyworld.EVAL_DOMAINS if split == "heldout" else toyworld.TRAIN_DOMAINS
        assert sorted(g.domain) == sorted(domains), (lever, split, kind)
        column = f"{split}_{kind.replace('-', '_')}"
        assert g.AbsRel.mean() == pytest.approx(float(rows[lever][column]), abs=2e-4), (lever, column)
    assert len(by) == by.lever.nunique() * 3 * (len(toyworld.EVAL_DOMAINS) + len(toyworld.TRAIN_DOMAINS))


def test_rescoring_a_lever_must_reproduce_its_committed_row(scripts):
    """--by-domain-only re-scores a committed row for its per-domain table; a row whose means moved (a changed
    toy world, a changed recipe) is refused with one line naming the columns, and so is a lever never measured."""
    levers, _ = scripts
    row = {c: "0.3" for c in levers.COLUMNS} | {"lever": "baseline"}
    levers.check_reproduces(dict(row, heldout_model="0.30004"), row)  # rounding: the same row
    with pytest.raises(levers.NotReproduced, match=r"heldout_model 0.3 committed vs 0.31 now"):
        levers.check_reproduces(dict(row, heldout_model="0.31"), row)
    with pytest.raises(levers.NotReproduced, match="has no row in levers.csv"):
        levers.check_reproduces(row, None)
    # measured on another processor: the message says so (another CPU trains another prior)
    with pytest.raises(levers.NotReproduced, match=r"measured on Intel X, this is AMD Y: another CPU"):
        levers.check_reproduces(dict(row, heldout_model="0.31", cpu="AMD Y"), dict(row, cpu="Intel X"))
    with pytest.raises(levers.NotReproduced) as same_cpu:
        levers.check_reproduces(dict(row, heldout_model="0.31", cpu="AMD Y"), dict(row, cpu="AMD Y"))
    assert "another CPU" not in str(same_cpu.value)


def test_a_levers_depth_task_never_outlives_its_row(scripts, monkeypatch):
    """depth_missing_zero replaces the "depth" task while it is measured; the next lever (and a failed one) sees
    the default task again."""
    from genpercept_lib import tasks

    levers, _ = scripts
    default = tasks.get("depth")
    seen = {}

    def fake(name):
        task = tasks.register(levers.TASKS[name](), replace=True)
        seen[name] = tasks.get("depth").missing
        if name == "half_outdoor":
            raise RuntimeError("boom")
        return {"lever": name, "task": task.name}, []

    monkeypatch.setattr(levers, "_measure", fake)
    assert levers.measure("depth_missing_zero")[0]["task"] == "depth" and seen["depth_missing_zero"] == "zero"
    assert tasks.get("depth") is default and default.missing == "far"
    with pytest.raises(RuntimeError, match="boom"):
        levers.measure("half_outdoor")
    assert "depth_half_outdoor" not in tasks.names() and tasks.get("depth") is default


def test_every_lever_row_is_measured_on_the_tables_recipe_not_todays_default(scripts, monkeypatch):
    """The default fine-tunes at 1e-3 since row lr_1e-3 made it so; the rows keep the recipe they were measured on
    (levers.RECIPE, lr 3e-4) unless their own overrides change it, and a lever that aligns in disparity space is
    compared with its own task's references (its image-blind guess and ceiling), every other with depth's."""
    import pandas as pd

    from genpercept_lib import experiment, profiles, results
    from genpercept_lib import prior as prior_lib

    levers, _ = scripts
    assert profiles.get_profile("default").lr == levers.LEVERS["lr_1e-3"]["lr"] != levers.RECIPE["lr"]
    seen = {}

    def load_or_train_prior(cfg):
        seen["prior_threads"], seen["threads"] = cfg.prior_threads, cfg.threads
        return type("P", (), {"train_seconds": 60.0})()

    monkeypatch.setattr(prior_lib, "load_or_train_prior", load_or_train_prior)
    monkeypatch.delenv("PRIOR_THREADS", raising=False)
    monkeypatch.setenv("THREADS", "1")

    def run(cfg, prior, spec, domains, *a, **k):
        seen["lr"], seen["task"], seen["init"], seen["seed"] = cfg.lr, spec.task, spec.init, spec.seed
        return pd.DataFrame({"domain": domains[:2], "kind": "model", "AbsRel": [0.3, 0.3]})

    def references(cfg, prior, spec, domains, kinds):
        seen["ref_task"] = spec.task
        return pd.DataFrame({"domain": domains[:2], "kind": ["image-blind", "vae-ceiling"], "AbsRel": [0.4, 0.1]})

    monkeypatch.setattr(experiment, "run", run)
    monkeypatch.setattr(experiment, "references", references)
    for name, lr, task, ref_task in (("baseline", 3e-4, "depth", "depth"), ("lr_1e-3", 1e-3, "depth", "depth"),
                                     ("half_outdoor", 3e-4, "depth_half_outdoor", "depth"),
                                     ("disparity_labels", 3e-4, "disparity", "disparity")):
        row, by_domain = levers.measure(name)
        assert {(r["split"], r["kind"]) for r in by_domain} == {(s, k) for s in ("heldout", "indomain")
                                                                for k in ("model", "image-blind", "vae-ceiling")}
        assert (seen["lr"], seen["task"], seen["ref_task"]) == (lr, task, ref_task), name
        assert row["cpu"] == results.cpu_model_name() and set(row) == set(levers.COLUMNS), name
        assert row["heldout_model"] == 0.3 and row["heldout_image_blind"] == 0.4 and row["prior_minutes"] == 1.0
        # the default's two-thread prior (the notebooks' own), fine-tuned with THREADS
        assert (seen["prior_threads"], seen["threads"]) == (2, 1), name
    row, _ = levers.measure("vae_4x_lr_1e-3_steps_3000_scratch_seed_1")  # a row that changes the model's spec
    assert (seen["lr"], seen["init"], seen["seed"]) == (1e-3, "scratch", 1) and '"init": "scratch"' in row["overrides"]
    assert seen["prior_threads"] == 1  # the 4x VAE's prior was trained with one thread (levers.PRIOR_THREADS)
    levers.measure("lr_1e-3_steps_3000_scratch_seed_2")
    assert (seen["init"], seen["seed"], seen["prior_threads"]) == ("scratch", 2, 2)
    monkeypatch.setenv("PRIOR_THREADS", "1")
    levers.measure("vae_4x_lr_1e-3_steps_3000")
    assert (seen["init"], seen["seed"], seen["prior_threads"]) == ("prior", 0, 1)
    levers.measure("baseline")
    assert seen["prior_threads"] == 1  # asked for
    assert profiles.get_profile("default").lr == 1e-3  # the recipe is an override, never a change of the profile


def test_a_prior_of_another_length_keeps_the_default_vae_and_is_cached(scripts, tmp_path, monkeypatch):
    """prior_length.py's priors: the default prior's VAE, a generator trained for the asked steps, saved with
    prior.save_prior and found again by prior.load_cached (no second training)."""
    import json

    import torch
    from helpers import record_threads, torch_threads

    from genpercept_lib import prior as prior_lib
    from genpercept_lib import profiles

    _, prior_length = scripts
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path))
    cfg = profiles.get_profile("smoke").replace(prior_vae_steps=3, prior_unet_steps=3)
    base = prior_lib.load_or_train_prior(cfg)
    assert prior_length.prior_of_length(cfg, base, 3) is base  # the default length: the default prior itself
    seen = {}
    record_threads(monkeypatch, prior_lib, "train_generator", seen, "threads")
    other = 1 if prior_lib.training_threads(cfg) > 1 else 2  # a process with another count than the base prior's
    with torch_threads(other):
        short = prior_length.prior_of_length(cfg, base, 2)
        # the thread count in its key is the one its generator trained with (the process's, not the base prior's)
        assert json.loads((short.folder / "prior.json").read_text())["settings"]["threads"] == seen["threads"] == other
        monkeypatch.setattr(prior_lib, "train_generator", lambda *a, **k: pytest.fail("trained again"))
        again = prior_length.prior_of_length(cfg, base, 2)
    assert short.vae is base.vae and short.folder != base.folder and short.history["unet"][-1]["step"] == 2
    assert again.folder == short.folder and again.content_hash == short.content_hash
    for a, b in zip(again.vae.state_dict().values(), base.vae.state_dict().values()):
        assert torch.equal(a, b)
