import json

import pandas as pd
import pytest

from genpercept_lib import cache, results


def test_combine_labels_paper_and_our_rows():
    paper = results.paper_table("table2_data_volume")
    ours = pd.DataFrame({"fraction": ["1/1"], "dataset": ["toy_kitti"], "AbsRel": [0.2], "delta1": [0.7]})
    table = results.combine(paper, ours, profile="smoke", hardware="test-cpu")
    assert list(table.columns[:3]) == ["source", "profile", "hardware"]
    assert set(table.loc[table.source == "paper", "profile"]) == {"paper"}
    assert set(table.loc[table.source == "paper", "hardware"]) == {results.PAPER_HARDWARE}
    mine = table[table.source == "this-run"]
    assert mine.profile.tolist() == ["smoke"] and mine.hardware.tolist() == ["test-cpu"]
    assert len(table) == len(paper) + 1


def test_paper_hardware_column_is_kept():
    table = results.combine(results.paper_table("table1_runtime"), pd.DataFrame({"setting": ["x"]}), "smoke")
    assert set(table.loc[table.source == "paper", "hardware"]) == {"RTX 4090"}


def test_paper_tables_are_the_shared_ones():
    assert results.paper_table("table2_data_volume").loc[0, "AbsRel"] == pytest.approx(0.100)
    with pytest.raises(FileNotFoundError, match="expected one of .*table1_runtime"):
        results.paper_table("table9")


def test_write_table_writes_csv_md_json(tmp_path):
    table = results.combine(None, pd.DataFrame({"metric": ["a|b"], "value": [0.5]}), "smoke", "cpu")
    path = results.write_table(table, "demo", title="Demo", claim="agrees", results=tmp_path)
    assert pd.read_csv(path).value.tolist() == [0.5]
    md = (tmp_path / "tables" / "demo.md").read_text()
    assert "# Demo" in md and "a\\|b" in md
    assert "**Claim check:** smoke: too small to judge" in md  # a smoke table never reads as a finding
    meta = json.loads((tmp_path / "tables" / "demo.json").read_text())
    assert meta["profiles"] == ["smoke"]
    assert not [p for p in (tmp_path / "tables").iterdir() if p.name.startswith(".")]  # no temp files left
    default = results.combine(None, pd.DataFrame({"value": [0.5]}), "default", "cpu")
    results.write_table(default, "demo2", claim="agrees", results=tmp_path)
    assert "**Claim check:** agrees" in (tmp_path / "tables" / "demo2.md").read_text()


def test_outputs_get_the_users_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = cache.atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600


def test_runs_other_than_the_canonical_one_go_under_runs():
    root = results.REPO_ROOT / "results"
    assert results.run_folder("default", {"seed": 0, "overrides": {}}) == root
    smoke = results.run_folder("smoke", {})
    ablation = results.run_folder("default", {"overrides": {"train_steps": 1200}})
    assert smoke.parent == ablation.parent == root / "runs" and smoke.name.startswith("smoke-")
    assert ablation != results.run_folder("default", {"overrides": {"train_steps": 600}})


def test_write_table_refuses_unlabelled_rows(tmp_path):
    with pytest.raises(ValueError, match="lacks columns"):
        results.write_table(pd.DataFrame({"x": [1]}), "bad", results=tmp_path)
    bad = pd.DataFrame({"source": ["toy"], "profile": ["smoke"], "hardware": ["cpu"]})
    with pytest.raises(ValueError, match="expected paper, this-run"):
        results.write_table(bad, "bad", results=tmp_path)


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "t.txt"
    cache.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), cache.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_summary_indexes_tables_and_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    results.save_figure(fig, "curve", results=tmp_path)
    table = results.combine(None, pd.DataFrame({"v": [1.0]}), "smoke", "cpu")
    results.write_table(table, "t1", title="Table one", claim="holds", results=tmp_path)
    text = results.write_summary(tmp_path).read_text()
    assert "[Table one](tables/t1.md)" in text and "holds" in text and "figures/curve.png" in text


def test_summary_names_each_notebook_s_commit_and_machine_and_says_when_they_differ(tmp_path):
    one = {"profile": "default", "status": "ok", "seconds": 3.0, "commit": "aaa1111", "hardware": "CPU: Xeon, 2 cores"}
    prov = {"commit": "aaa1111", "hardware": "CPU: Xeon, 2 cores", "notebooks": {"01_a.ipynb": one}}
    (tmp_path / "provenance.json").write_text(json.dumps(prov))
    text = results.write_summary(tmp_path).read_text()
    assert "Commit `aaa1111`, hardware: CPU: Xeon, 2 cores." in text
    # an `--only` rerun elsewhere: the top-level fields are the last run's, the notebooks differ
    prov["notebooks"]["00_b.ipynb"] = dict(one, commit="bbb2222", hardware="CPU: EPYC, 2 cores")
    prov.update(commit="bbb2222", hardware="CPU: EPYC, 2 cores")
    (tmp_path / "provenance.json").write_text(json.dumps(prov))
    text = results.write_summary(tmp_path).read_text()
    assert "Notebooks run at 2 commits (`aaa1111`, `bbb2222`), on 2 machines (CPU: EPYC, 2 cores; CPU: Xeon" in text
    assert "| `bbb2222` | CPU: EPYC, 2 cores |" in text and "| `aaa1111` | CPU: Xeon, 2 cores |" in text



def test_provenance_from_executed_reads_each_copy_s_own_entry_or_papermill_s(tmp_path):
    import nbformat

    own = {"profile": "smoke", "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:00:05+00:00",
           "seconds": 5.0, "status": "ok", "commit": "abc1234", "hardware": "CPU: test, 2 cores"}
    nb = nbformat.v4.new_notebook()
    nb.metadata["genpercept"] = {"provenance": own}
    nbformat.write(nb, tmp_path / "01_a.ipynb")
    nb = nbformat.v4.new_notebook()  # executed before the copies carried their entry: papermill's record
    nb.metadata["papermill"] = {"parameters": {"profile": "default"}, "start_time": "2026-01-01T00:00:00.5+00:00",
                                "end_time": "2026-01-01T00:00:10+00:00", "duration": 9.5, "exception": True}
    nbformat.write(nb, tmp_path / "02_b.ipynb")
    (tmp_path / "03_c.ipynb").write_text("{cut short")
    entries = results.provenance_from_executed(tmp_path)
    assert entries["01_a.ipynb"] == own and "03_c.ipynb" not in entries
    assert entries["02_b.ipynb"] == {"profile": "default", "start": "2026-01-01T00:00:00.5+00:00",
                                     "end": "2026-01-01T00:00:10+00:00", "seconds": 9.5, "status": "failed",
                                     "commit": "unknown", "hardware": "unknown"}


def test_the_committed_results_can_rebuild_their_provenance():
    """A damaged results/provenance.json loses no notebook: every committed executed copy gives its entry."""
    committed = json.loads((results.REPO_ROOT / "results" / "provenance.json").read_text())["notebooks"]
    rebuilt = results.provenance_from_executed(results.REPO_ROOT / "results" / "notebooks")
    assert set(rebuilt) == set(committed)
    assert all(e["status"] == committed[name]["status"] == "ok" and e["profile"] == "default"
               for name, e in rebuilt.items())


def _accuracy_table(tmp_path, model: float, blind: float, ceiling: float):
    rows = [{"kind": "model", "pipeline": "one_step", "init": "prior", "denoise_steps": 1, "ensemble": 1,
             "seed": s, "split": split, "domain": d, "AbsRel": model + 0.01 * s + (0.1 if split == "indomain" else 0)}
            for s in (0, 1) for split, d in (("heldout", "toy_nyu"), ("indomain", "toy_hypersim"))]
    rows += [{"kind": k, "pipeline": "none", "init": "prior", "denoise_steps": 0, "ensemble": 0, "seed": 0,
              "split": split, "domain": d, "AbsRel": v}
             for k, v in (("image-blind", blind), ("vae-ceiling", ceiling))
             for split, d in (("heldout", "toy_nyu"), ("indomain", "toy_hypersim"))]
    df = results.combine(None, pd.DataFrame(rows), "default", "test CPU")
    results.write_table(df, "pipelines_accuracy", results=tmp_path)


def test_standing_reads_each_split_of_the_headline_rows(tmp_path):
    _accuracy_table(tmp_path, model=0.2, blind=0.4, ceiling=0.1)
    st = results.standing(tmp_path)
    assert list(st.split) == ["heldout", "indomain"] and set(st.task) == {"depth"}
    held = st[st.split == "heldout"].iloc[0]
    assert held.model == pytest.approx(0.205) and held.seeds == 2 and held.ratio_to_blind == pytest.approx(0.5125)
    assert st[st.split == "indomain"].iloc[0].model == pytest.approx(0.305)


def test_the_readme_table_is_replaced_between_its_markers_only(tmp_path):
    _accuracy_table(tmp_path, model=0.2, blind=0.4, ceiling=0.1)
    begin, end = results.README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{begin}\nstale 0.999\n{end}\noutro\n")
    assert results.update_readme(readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{end}\noutro\n") and "0.999" not in text
    assert "| depth | heldout | AbsRel (lower better) | 0.205 (2) | 0.400 | 0.100 | 0.51 | yes |" in text
    plain = tmp_path / "other.md"
    plain.write_text("no markers\n")
    assert not results.update_readme(plain, tmp_path) and plain.read_text() == "no markers\n"
