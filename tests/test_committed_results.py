"""The committed default-profile results read back: labelled, complete, trained beats untrained, in budget.

These tests read ``results/`` as committed on main (the default profile's outputs). They fail when a table
loses its labels, a notebook's outputs are missing, or a fine-tuned model no longer beats the untrained
baseline its own table reports.
"""

import json

import pandas as pd
import pytest

from genpercept_lib import results
from genpercept_lib.apps import reproduce

RESULTS = results.REPO_ROOT / "results"
TABLES = sorted((RESULTS / "tables").glob("*.csv"))
pytestmark = pytest.mark.skipif(not (RESULTS / "provenance.json").is_file(), reason="no committed results yet")


def test_every_notebook_ran_ok_in_the_default_profile():
    prov = json.loads((RESULTS / "provenance.json").read_text())
    names = {p.name for p in reproduce.list_notebooks()}
    assert set(prov["notebooks"]) == names
    assert all(e["status"] == "ok" and e["profile"] == "default" for e in prov["notebooks"].values())
    for name in names:
        assert (RESULTS / "notebooks" / name).is_file()


def _budget_minutes() -> float:
    """The last full run's reference-host minutes (``full_run``: its wall time scaled by the host benchmark against
    the reference host's), checked against its own record; results committed before runs kept that record fall
    back to the wall-clock span of the notebooks' entries."""
    from genpercept_lib.apps import runtime

    prov = json.loads((RESULTS / "provenance.json").read_text())
    full = prov.get("full_run")
    if full is None:
        return prov["total_seconds"] / 60
    minutes = runtime.reference_minutes(full["wall_seconds"], full["benchmark_seconds"],
                                        full["reference"]["benchmark_seconds"])
    assert minutes == full["reference_minutes"]
    return minutes


def test_the_full_run_record_is_consistent():
    assert _budget_minutes() > 0


# Known and tracked (issue 34, item 5): the first full default run on the shipped toy SD went over its budget (its
# minutes are in provenance.json's full_run and the README). strict: the day a run fits, this fails until the mark goes.
@pytest.mark.xfail(strict=True, reason="the default run on the toy SD is over its 45-minute budget (issue 34)")
def test_the_default_profile_ran_within_its_budget():
    """45 reference-host minutes for every notebook from an empty cache."""
    assert _budget_minutes() < 45


@pytest.mark.parametrize("csv", TABLES, ids=lambda p: p.stem)
def test_tables_are_labelled(csv):
    df = pd.read_csv(csv)
    assert {"source", "profile", "hardware"} <= set(df.columns)
    assert set(df.source) <= {"paper", "this-run"}
    assert set(df.loc[df.source == "this-run", "profile"]) == {"default"}
    assert set(df.loc[df.source == "paper", "profile"]) <= {"paper"}
    assert (RESULTS / "tables" / f"{csv.stem}.md").is_file()
    assert csv.stem in (RESULTS / "SUMMARY.md").read_text()


@pytest.mark.parametrize("name", ["pipelines_accuracy", "shortcut_beta", "table2_data_volume", "generalization",
                                  "depth_normals", "table4_dis", "matting", "segmentation", "table3_pose"])
def test_every_accuracy_table_has_the_reference_rows(name):
    ours = pd.read_csv(RESULTS / "tables" / f"{name}.csv")
    ours = ours[ours.source == "this-run"]
    kinds = set(ours["kind"] if "kind" in ours else ours["method"])
    ceiling = "heatmap-ceiling" if name == "table3_pose" else "vae-ceiling"
    assert {"untrained", "image-blind", ceiling} <= kinds


@pytest.mark.parametrize("name", ["pipelines_accuracy", "shortcut_beta", "table2_data_volume", "generalization"])
def test_every_trained_depth_model_beats_the_untrained_baseline(name):
    df = pd.read_csv(RESULTS / "tables" / f"{name}.csv")
    ours = df[df.source == "this-run"]
    untrained = ours[ours.kind == "untrained"].AbsRel.mean()
    keys = ["setting", "training", "denoise_steps", "ensemble"]
    models = ours[ours.kind == "model"]
    if "pipeline" in models and "beta_end" in models:
        # the shortcut study's point: a stochastic model trained with betas below SD2.1's default never sees pure
        # noise (alpha_bar_T stays well above 0) yet is sampled from it, and 02 shows it scoring worst; it may
        # fall behind the untrained row (deterministic formulation) and is judged by 02's trend, not here
        models = models[~((models.pipeline == "stochastic") & (models.beta_end < 0.012))]
    per_eval = models.groupby(keys).AbsRel.mean()
    # a model is judged at its operating point (best of its evaluated step/ensemble settings): a stochastic
    # model sampled with a single DDIM step from pure noise is worse than untrained, and 01 shows that too
    best = per_eval.groupby(level=["setting", "training"]).min()
    assert len(best) and (best < untrained).all(), best[best >= untrained]


def test_the_one_step_depth_model_beats_the_image_blind_guess():
    df = pd.read_csv(RESULTS / "tables" / "pipelines_accuracy.csv")
    ours = df[df.source == "this-run"]
    one = ours[(ours.kind == "model") & (ours.pipeline == "one_step") & (ours.init == "prior")].AbsRel.mean()
    blind = ours[ours.kind == "image-blind"].AbsRel.mean()
    ceiling = ours[ours.kind == "vae-ceiling"].AbsRel.mean()
    assert ceiling < one < blind


def test_dis_beats_the_references_on_every_split():
    ours = pd.read_csv(RESULTS / "tables" / "dis_accuracy.csv")
    ours = ours[(ours.source == "this-run") & (ours.split == "heldout")]
    model = ours[(ours.kind == "model") & (ours.pipeline == "one_step") & (ours.init == "prior")]
    for split in ("DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"):
        for metric, better in (("max_F_beta", max), ("MAE", min), ("S_alpha", max)):
            mine = model[model.domain == split][metric].mean()
            refs = [ours[(ours.kind == k) & (ours.domain == split)][metric].mean()
                    for k in ("untrained", "image-blind")]
            assert better(mine, *refs) == mine and mine not in refs, (split, metric, mine, refs)


def test_matting_beats_the_references_on_every_domain():
    ours = pd.read_csv(RESULTS / "tables" / "matting.csv")
    ours = ours[ours.source == "this-run"]
    model = ours[(ours.kind == "model") & (ours.init == "prior")]
    for domain in set(model.domain):
        for metric in ("SAD", "MSE", "Grad"):
            mine = model[model.domain == domain][metric].mean()
            for kind in ("untrained", "image-blind"):
                assert mine < ours[(ours.kind == kind) & (ours.domain == domain)][metric].mean(), (domain, metric, kind)


def test_matting_generalisation_is_committed_beside_the_matting_table():
    gen = pd.read_csv(RESULTS / "tables" / "matting_generalization.csv")
    assert len(gen[gen.source == "this-run"]) and (RESULTS / "tables" / "matting.csv").is_file()


def test_segmentation_beats_the_references_indoors():
    ours = pd.read_csv(RESULTS / "tables" / "segmentation.csv")
    ours = ours[ours.source == "this-run"]
    indoor = ours[ours.domain.isin(["toy_nyu", "toy_scannet"])]
    mine = indoor[(indoor.kind == "model") & (indoor.init == "prior")].mIoU.mean()
    for kind in ("untrained", "image-blind"):
        assert mine > indoor[indoor.kind == kind].mIoU.mean()


def test_pose_beats_the_references_by_a_wide_margin():
    """On each evaluation set (ground-truth and jittered boxes) the model beats the untrained and mean-pose rows
    and closes at least 10 % of the gap between the mean pose and the heatmap ceiling (notebook 06's WIDE)."""
    df = pd.read_csv(RESULTS / "tables" / "table3_pose.csv")
    ours = df[(df.source == "this-run")]
    for name in set(ours.domain):
        rows = ours[ours.domain == name]
        mine = rows[(rows.kind == "model") & (rows.init == "prior")].AP.mean()
        blind = rows[rows.kind == "image-blind"].AP.mean()
        ceiling = rows[rows.kind == "heatmap-ceiling"].AP.mean()
        assert mine > max(rows[rows.kind == k].AP.mean() for k in ("untrained", "image-blind")), name
        assert (mine - blind) / (ceiling - blind) >= 0.10, (name, mine, blind, ceiling)


def test_table2_has_the_paper_numbers_beside_ours():
    df = pd.read_csv(RESULTS / "tables" / "table2_data_volume.csv")
    paper = df[df.source == "paper"]
    assert len(paper) == 25 and paper[(paper.fraction == "1/1") & (paper.dataset == "KITTI")].AbsRel.item() == 0.1
    ours = df[df.source == "this-run"]
    assert set(ours[ours.split == "heldout"].dataset) == {"KITTI", "NYU", "ScanNet", "DIODE", "ETH3D"}
    assert set(ours[ours.split == "indomain"].dataset) == {"toy_hypersim", "toy_vkitti"}
    assert set(ours.fraction) == {"1/1", "1/2", "1/4", "1/8", "1/16", "untrained", "image-blind", "vae-ceiling"}


def test_runtime_flops_at_768_match_the_independent_count():
    df = pd.read_csv(RESULTS / "tables" / "runtime_flops_768.csv")
    parts = df.set_index("component")
    for component in ("unet_step", "vae_encode", "vae_decode"):
        assert parts.loc[component, "rel_diff"] < 0.05
    assert 2000 < parts.loc["unet_step", "gflops"] < 2300  # SD2.1 U-Net at 768x768, 96x96 latents


def test_table1_has_every_paper_row_and_ours():
    df = pd.read_csv(RESULTS / "tables" / "table1_runtime.csv")
    paper = results.paper_table("table1_runtime")
    assert set(paper.setting) <= set(df[df.source == "paper"].setting)
    ours = df[df.source == "this-run"]
    assert {"Deterministic One-step Inference (Ours)", "Deterministic One-step Inference + DPT head (Ours)"} <= set(
        ours.setting)
    assert (ours.inference_time_s > 0).all()


def test_the_readme_standing_table_is_the_one_the_committed_results_give():
    """The README's numbers come from results/ (between its markers), so they cannot drift from the tables."""
    begin, end = results.README_MARKERS
    readme = (results.REPO_ROOT / "README.md").read_text()
    block = readme.split(begin, 1)[1].split(end, 1)[0].strip()
    assert block == results.standing_markdown(RESULTS).strip()


EXECUTED = sorted((RESULTS / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_executed_copies_read_at_a_glance(path):
    """Issue 37's limits on what a reader scrolls through: no output over 20k characters, no pandas Styler repr,
    no warnings, temporary or staging paths in the outputs."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            text = "".join("".join(t) if isinstance(t, list) else t for t in texts)
            where = f"{path.name} cell {i}"
            assert len(text) <= 20_000, f"{where}: an output of {len(text)} characters"
            assert "pandas.io.formats.style.Styler" not in text, f"{where}: a Styler repr"
            assert "Warning:" not in text and ".staging" not in text and "/tmp/" not in text, where
