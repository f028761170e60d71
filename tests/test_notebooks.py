"""Every notebook: committed without outputs, parameters cell first, and runs end to end (smoke profile)."""

import json

import nbformat
import pandas as pd
import pytest

from genpercept_lib.apps import reproduce

NOTEBOOKS = reproduce.list_notebooks()


def test_there_are_notebooks():
    assert "01_pipelines.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_first_with_profile_first(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert first.source.lstrip().startswith("profile = "), f"{path.name}: profile must be the first parameter"


@pytest.mark.notebooks
def test_every_notebook_runs_in_smoke_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path / "cache"))  # from nothing, as on a fresh clone (CI)
    out = tmp_path / "results"
    # the profile's two at once: each notebook is one single-threaded process, so a second one uses the second
    # core (the suite's longest test: 6.2 min one at a time on a slow 2-core machine)
    prov = reproduce.run_notebooks("smoke", results_dir=out, progress_bar=False)
    assert prov["jobs"] == 2
    assert set(prov["notebooks"]) == {p.name for p in NOTEBOOKS}
    assert all(e["status"] == "ok" for e in prov["notebooks"].values())
    tables = sorted((out / "tables").glob("*.csv"))
    assert tables, "the notebooks wrote no table"
    for csv in tables:
        df = pd.read_csv(csv)
        assert {"source", "profile", "hardware"} <= set(df.columns), csv.name
        assert set(df.loc[df.source == "this-run", "profile"]) == {"smoke"}, csv.name
    summary = (out / "SUMMARY.md").read_text()
    assert all(csv.stem in summary for csv in tables)
    assert json.loads((out / "provenance.json").read_text())["total_seconds"] > 0
    # notebook 01's own numbers: (1, 1) collapses onto one-step exactly
    collapse = pd.read_csv(out / "tables" / "pipelines_collapse.csv")
    one_step_rows = collapse[collapse.check.str.contains("== one-step")]
    assert len(one_step_rows) >= 2 and (one_step_rows.max_abs_diff == 0).all()
    assert (out / "figures" / "01_alpha_bar_presets.png").stat().st_size > 10_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_stay_short_and_a_claim_box_follows_the_parameters(path):
    """No code cell over 40 lines; the cell after the parameters opens the claim box (appendices: a purpose)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert len(cell.source.splitlines()) <= 40, f"{path.name} cell {i}: {len(cell.source.splitlines())} lines"
    if not path.name.startswith("9"):
        assert "ClaimBox(" in nb.cells[1].source, f"{path.name}: the claim box comes right after the parameters"


def test_notebook_00_reads_in_a_few_minutes():
    """The toy world and its prior, not a lab log: at most 1000 words of markdown (the levers live in 90_levers)."""
    nb = nbformat.read(next(p for p in NOTEBOOKS if p.name == "00_toy_world.ipynb"), as_version=4)
    words = sum(len(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    assert words <= 1000, f"00_toy_world: {words} words of markdown"
