"""The papermill driver: ordering, selection, provenance, failures that keep earlier results."""

import json
import shutil
import tempfile

import nbformat
import pytest

from genpercept_lib import cli, reproduce

pytestmark = pytest.mark.notebooks  # most of these run small notebooks through papermill (~3 min in all)


def make_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE = (
    "import pandas as pd\n"
    "from genpercept_lib import results\n"
    "t = results.combine(None, pd.DataFrame({{'v': [1.0]}}), profile)\n"
    "results.write_table(t, '{name}', claim='ok')\n"
)


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    make_notebook(d / "01_first.ipynb", WRITE.format(name="first"))
    make_notebook(d / "02_second.ipynb", WRITE.format(name="second"))
    (d / "notes.ipynb").write_text("{}")  # not numbered: ignored
    return d


@pytest.fixture
def kernel_tmp(monkeypatch):
    """A killed process cannot remove its kernels' IPC socket files (reproduce puts them in the temporary folder):
    a killing test keeps them in a folder of its own, removed afterwards, rather than leaving them in /tmp."""
    folder = tempfile.mkdtemp(prefix="gpk-")  # short: a socket's path holds at most 107 bytes
    monkeypatch.setenv("TMPDIR", folder)  # the `genpercept reproduce` subprocess
    monkeypatch.setattr(tempfile, "tempdir", folder)  # this process and the workers it forks
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_list_and_select(nb_dir):
    assert [p.name for p in reproduce.list_notebooks(nb_dir)] == ["01_first.ipynb", "02_second.ipynb"]
    assert [p.name for p in reproduce.select_notebooks("2", nb_dir)] == ["02_second.ipynb"]
    with pytest.raises(FileNotFoundError, match="no notebook numbered '07'.*available 01, 02"):
        reproduce.select_notebooks("07", nb_dir)


BAR = (
    "from genpercept_lib.progress import tqdm\n"
    "print('before', flush=True)\n"
    "for _ in tqdm(range(5), desc='steps'):\n"
    "    pass\n"
)


def test_run_writes_executed_copies_and_provenance(nb_dir, tmp_path):
    out = tmp_path / "results"
    make_notebook(nb_dir / "01_first.ipynb", WRITE.format(name="first") + BAR)
    prov = reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    assert (out / "notebooks" / "01_first.ipynb").is_file() and (out / "tables" / "second.csv").is_file()
    on_disk = json.loads((out / "provenance.json").read_text())
    assert on_disk == prov
    assert set(prov["notebooks"]) == {"01_first.ipynb", "02_second.ipynb"}
    assert all(e["status"] == "ok" and e["profile"] == "smoke" for e in prov["notebooks"].values())
    executed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert any('profile = "smoke"' in c.source for c in executed.cells)  # papermill injected it
    assert "first" in (out / "SUMMARY.md").read_text()
    # the bar's redraws (0/5 ... 5/5) are one stderr output holding its last state, as a notebook shows it
    streams = [o for o in executed.cells[-1].outputs if o.output_type == "stream"]
    assert [(o.name, o.text.strip()) for o in streams][0] == ("stdout", "before")
    (bar,) = [o.text for o in streams if o.name == "stderr"]
    assert "\r" not in bar and "5/5" in bar and "0/5" not in bar, bar


def test_tidy_streams_merges_each_stream_and_keeps_each_line_s_last_redraw():
    out = lambda kind, **kw: {"output_type": kind, **kw}  # noqa: E731
    nb = nbformat.from_dict({"cells": [
        {"cell_type": "markdown", "source": "# title"},
        {"cell_type": "code", "outputs": [
            out("stream", name="stderr", text="\rbar:   0%| 0/5"),
            out("stream", name="stderr", text="\rbar: 100%| 5/5\n"),
            out("stream", name="stdout", text="a\n"),
            out("stream", name="stdout", text="b 1/2\rb\n"),  # a redraw within one output, too
            out("execute_result", data={"text/plain": "1"}),
            out("stream", name="stdout", text="after\n"),  # not next to the others: stays its own
        ]},
    ]})
    cells = reproduce.tidy_streams(nb)["cells"]
    assert cells[0] == {"cell_type": "markdown", "source": "# title"}
    assert [(o["output_type"], o.get("name"), o.get("text")) for o in cells[1]["outputs"]] == [
        ("stream", "stderr", "bar: 100%| 5/5\n"),
        ("stream", "stdout", "a\nb\n"),
        ("execute_result", None, None),
        ("stream", "stdout", "after\n"),
    ]


def test_an_executed_copy_cut_short_is_kept_as_it_is(tmp_path):
    """A worker killed while papermill wrote its copy leaves JSON cut short: the reader gets those bytes."""
    cut = tmp_path / "01_first.ipynb"
    cut.write_text('{"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": "\\r0%')
    before = cut.read_bytes()
    reproduce._tidy_executed(tmp_path)
    assert cut.read_bytes() == before


def test_only_reruns_one_and_keeps_the_rest(nb_dir, tmp_path):
    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    before = (out / "tables" / "first.csv").stat().st_mtime_ns
    prov = reproduce.run_notebooks("smoke", only="02", results_dir=out, notebooks_dir=nb_dir, progress_bar=False,
                                   jobs=1)
    assert (out / "tables" / "first.csv").stat().st_mtime_ns == before
    assert set(prov["notebooks"]) == {"01_first.ipynb", "02_second.ipynb"}


def test_failing_notebook_stops_with_name_and_cell_and_keeps_results(nb_dir, tmp_path):
    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    make_notebook(nb_dir / "02_second.ipynb", "raise ValueError('boom in cell')")
    make_notebook(nb_dir / "03_third.ipynb", WRITE.format(name="third"))
    with pytest.raises(reproduce.NotebookFailed, match=r"02_second.ipynb failed in cell \d+: ValueError: boom"):
        reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    assert (out / "tables" / "first.csv").is_file() and (out / "tables" / "second.csv").is_file()
    assert not (out / "tables" / "third.csv").exists()  # the run stopped
    failed = nbformat.read(out / "notebooks" / "02_second.ipynb", as_version=4)
    assert "boom in cell" in json.dumps(failed.cells[-1].outputs)
    assert json.loads((out / "provenance.json").read_text())["notebooks"]["02_second.ipynb"]["status"] == "failed"


def test_cli_bad_profile_and_missing_notebook(nb_dir, tmp_path, capsys):
    assert cli.main(["reproduce", "--profile", "fast", "--notebooks-dir", str(nb_dir),
                     "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "genpercept reproduce: error: unknown profile 'fast': expected one of smoke, default, paper"
    assert cli.main(["reproduce", "--only", "9", "--notebooks-dir", str(nb_dir),
                     "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no notebook numbered '9'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing was started, nothing written


SLOW = (
    "import time\n"
    "import pandas as pd\n"
    "from genpercept_lib import results\n"
    "results.write_table(results.combine(None, pd.DataFrame({'v': [2.0]}), profile), 'second', claim='new')\n"
    "print('waiting', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("signal_name,jobs", [("SIGTERM", 1), ("SIGKILL", 1), ("SIGTERM", 2), ("SIGKILL", 2)])
def test_a_killed_run_leaves_results_consistent_and_a_rerun_completes(nb_dir, tmp_path, signal_name, jobs, kernel_tmp):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False)  # a complete state
    before = {p.name: p.read_bytes() for p in (out / "tables").glob("*")}
    executed_before = (out / "notebooks" / "02_second.ipynb").read_bytes()
    make_notebook(nb_dir / "02_second.ipynb", SLOW)
    cmd = [sys.executable, "-m", "genpercept_lib.cli", "reproduce", "--profile", "smoke", "--notebooks-dir",
           str(nb_dir), "--results-dir", str(out), "--jobs", str(jobs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staged = out / ".staging" / "02_second" / "tables" / "second.csv"
    deadline = time.time() + 120
    while not staged.exists() and time.time() < deadline:  # 02 is running and has written its first table
        time.sleep(0.2)
    assert staged.exists(), proc.communicate(timeout=5)
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=60)
    if signal_name == "SIGTERM":
        assert proc.returncode == 143
        lines = [line for line in err.splitlines() if line.startswith("genpercept reproduce:")]
        assert len(lines) == 1 and "rerun" in lines[0]
        # the notebooks it stopped: 02, and with two jobs 01 as well if it had not finished yet
        assert lines[0].split(": ")[1].startswith("interrupted during") and "02_second.ipynb" in lines[0]
    # the results folder is exactly the complete state of before: no half-written table, the old executed copy
    assert {p.name: p.read_bytes() for p in (out / "tables").glob("*")} == before
    assert (out / "notebooks" / "02_second.ipynb").read_bytes() == executed_before
    prov = json.loads((out / "provenance.json").read_text())
    assert all(e["status"] == "ok" for e in prov["notebooks"].values())
    make_notebook(nb_dir / "02_second.ipynb", WRITE.format(name="second"))  # a rerun completes
    prov = reproduce.run_notebooks("smoke", only="02", results_dir=out, notebooks_dir=nb_dir, progress_bar=False)
    assert prov["notebooks"]["02_second.ipynb"]["status"] == "ok" and not (out / ".staging").exists()


def test_results_dir_that_cannot_be_written_is_one_line(nb_dir, tmp_path, capsys):
    import os

    if os.geteuid() == 0:  # root writes anywhere: nothing to check (and the notebooks would run: ~12 s)
        pytest.skip("running as root: permissions do not apply")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = cli.main(["reproduce", "--profile", "smoke", "--notebooks-dir", str(nb_dir), "--results-dir",
                         str(locked / "results")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot write results there" in err and len(err.splitlines()) == 1


def test_an_override_run_never_touches_the_canonical_results(nb_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("GENPERCEPT_RESULTS", raising=False)
    monkeypatch.setattr(reproduce.results, "REPO_ROOT", tmp_path)
    canonical = tmp_path / "results"
    prov = reproduce.run_notebooks("default", notebooks_dir=nb_dir, progress_bar=False,
                                   extra_parameters={"overrides": {"train_steps": 7}})
    runs = list((canonical / "runs").glob("default-*"))
    assert len(runs) == 1 and (runs[0] / "tables" / "first.csv").is_file()
    assert not (canonical / "tables").exists()  # the canonical folder got nothing
    assert prov["parameters"]["overrides"] == {"train_steps": 7}


def _alone(path):
    nb = nbformat.read(path, as_version=4)
    nb.metadata["genpercept"] = {"runs_alone": "a test says so"}
    nbformat.write(nb, path)


def test_plan_runs_marked_notebooks_alone_and_the_longest_first(nb_dir):
    for name in ("00_zero", "03_third", "04_fourth"):
        make_notebook(nb_dir / f"{name}.ipynb", "x = 1")
    _alone(nb_dir / "00_zero.ipynb")
    _alone(nb_dir / "03_third.ipynb")
    nbs = reproduce.list_notebooks(nb_dir)
    previous = {"01_first.ipynb": {"seconds": 5, "status": "ok"}, "02_second.ipynb": {"seconds": 50, "status": "ok"},
                "04_fourth.ipynb": {"seconds": 900, "status": "failed"}}  # a failed run's time says nothing
    groups = [[p.name[:2] for p in g] for g in reproduce.plan(nbs, 2, previous)]
    assert groups == [["00"], ["02", "01"], ["03"], ["04"]]
    assert [[p.name[:2] for p in g] for g in reproduce.plan(nbs, 1, previous)] == [["00", "01", "02", "03", "04"]]


SLEEPY = WRITE + "import time\ntime.sleep(4)\n"


def test_two_jobs_run_side_by_side_and_the_total_is_wall_clock(nb_dir, tmp_path):
    make_notebook(nb_dir / "01_first.ipynb", SLEEPY.format(name="first"))
    make_notebook(nb_dir / "02_second.ipynb", SLEEPY.format(name="second"))
    out = tmp_path / "results"
    prov = reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=2)
    first, second = prov["notebooks"]["01_first.ipynb"], prov["notebooks"]["02_second.ipynb"]
    assert first["status"] == second["status"] == "ok"
    assert first["start"] < second["end"] and second["start"] < first["end"]  # they overlapped
    assert prov["total_seconds"] < prov["notebook_seconds"] and prov["jobs"] == 2
    assert (out / "tables" / "first.csv").is_file() and (out / "tables" / "second.csv").is_file()
    assert (out / "notebooks" / "02_second.ipynb").is_file() and not (out / ".staging").exists()
    assert json.loads((out / "provenance.json").read_text()) == prov


def test_a_failure_among_parallel_notebooks_keeps_the_others_and_stops(nb_dir, tmp_path):
    make_notebook(nb_dir / "01_first.ipynb", "raise ValueError('boom in a worker')")
    make_notebook(nb_dir / "02_second.ipynb", SLEEPY.format(name="second"))
    make_notebook(nb_dir / "03_third.ipynb", WRITE.format(name="third"))
    out = tmp_path / "results"
    with pytest.raises(reproduce.NotebookFailed, match=r"01_first.ipynb failed in cell \d+: ValueError: boom"):
        reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=2)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["notebooks"]["01_first.ipynb"]["status"] == "failed"
    assert prov["notebooks"]["02_second.ipynb"]["status"] == "ok"  # the running one finished and landed
    assert (out / "tables" / "second.csv").is_file() and not (out / "tables" / "third.csv").exists()
    failed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert "boom in a worker" in json.dumps(failed.cells[-1].outputs)


def test_wall_seconds_counts_overlapping_notebooks_once():
    entries = [{"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00", "seconds": 60},
               {"start": "2026-01-01T00:00:30+00:00", "end": "2026-01-01T00:02:00+00:00", "seconds": 90},
               {"start": "2026-01-01T00:05:00+00:00", "end": "2026-01-01T00:05:10+00:00", "seconds": 10},
               {"seconds": 7}]  # no times (an old entry): its own seconds
    assert reproduce.wall_seconds(entries) == 120 + 10 + 7


def test_bad_jobs_is_one_line(nb_dir, tmp_path, capsys):
    assert cli.main(["reproduce", "--profile", "smoke", "--jobs", "0", "--notebooks-dir", str(nb_dir),
                     "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "genpercept reproduce: error: jobs=0: expected an integer >= 1 (notebooks run at once)"


def test_a_worker_killed_from_outside_is_a_failure_that_keeps_its_executed_copy(nb_dir, tmp_path, kernel_tmp):
    """Not an interruption (the user did not stop the run): the out-of-memory killer's SIGKILL, say."""
    make_notebook(nb_dir / "01_first.ipynb", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    make_notebook(nb_dir / "02_second.ipynb", WRITE.format(name="second"))
    out = tmp_path / "results"
    with pytest.raises(reproduce.NotebookFailed, match=r"01_first.ipynb failed: its worker was killed by signal 9"):
        reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=2)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["notebooks"]["01_first.ipynb"]["status"] == "failed"
    assert prov["notebooks"]["02_second.ipynb"]["status"] == "ok"
    assert (out / "notebooks" / "01_first.ipynb").is_file()
