"""The papermill driver: ordering, selection, provenance, failures that keep earlier results, one writer per
results folder, every argument checked before anything runs."""

import json
import shutil
import tempfile

import nbformat
import pytest

from genpercept_lib import cache
from genpercept_lib.apps import cli, reproduce

pytestmark = pytest.mark.notebooks  # most of these run small notebooks through papermill (~3 min in all)


def make_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"\nseed = 0\noverrides = {}')
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
    """A notebook that never succeeded: its failed executed copy takes its place, its entry says failed."""
    out = tmp_path / "results"
    make_notebook(nb_dir / "02_second.ipynb", "raise ValueError('boom in cell')")
    make_notebook(nb_dir / "03_third.ipynb", WRITE.format(name="third"))
    with pytest.raises(reproduce.NotebookFailed, match=r"02_second.ipynb failed in cell \d+: ValueError: boom"):
        reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    assert (out / "tables" / "first.csv").is_file()
    assert not (out / "tables" / "third.csv").exists()  # the run stopped
    failed = nbformat.read(out / "notebooks" / "02_second.ipynb", as_version=4)
    assert "boom in cell" in json.dumps(failed.cells[-1].outputs)
    assert json.loads((out / "provenance.json").read_text())["notebooks"]["02_second.ipynb"]["status"] == "failed"


def snapshot(folder, leave_out=("failed", ".reproduce.lock")):
    """Every file under ``folder`` (relative path -> bytes), except those under ``leave_out``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in leave_out}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_rerun_never_replaces_a_complete_result(nb_dir, tmp_path, jobs):
    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=jobs)
    before = snapshot(out)
    make_notebook(nb_dir / "02_second.ipynb", "raise ValueError('boom on rerun')")
    with pytest.raises(reproduce.NotebookFailed) as info:
        # one job: 02 alone; two: 01 beside it in a worker each (01 succeeds and replaces its own result)
        reproduce.run_notebooks("smoke", only=None if jobs == 2 else "02", results_dir=out, notebooks_dir=nb_dir,
                                progress_bar=False, jobs=jobs)
    kept = out / "failed" / "02_second.ipynb"
    assert str(info.value).startswith("02_second.ipynb failed in cell")
    assert f"(executed copy: {kept}; the previous complete result is kept)" in str(info.value)
    assert "boom on rerun" in json.dumps(nbformat.read(kept, as_version=4).cells[-1].outputs)
    after = snapshot(out)
    if jobs == 1:
        assert after == before  # tables, figures, executed copy, provenance, SUMMARY: byte-identical
    else:
        assert {k: v for k, v in after.items() if "second" in k} == {k: v for k, v in before.items() if "second" in k}
        old, new = (json.loads(x["provenance.json"])["notebooks"] for x in (before, after))
        assert new["02_second.ipynb"] == old["02_second.ipynb"] and new["02_second.ipynb"]["status"] == "ok"
        assert new["01_first.ipynb"] != old["01_first.ipynb"]  # 01 ran again, and its success landed
        row = [line for line in after["SUMMARY.md"].decode().splitlines() if "02_second" in line]
        assert len(row) == 1 and "| ok |" in row[0]
    make_notebook(nb_dir / "02_second.ipynb", WRITE.format(name="second"))  # a successful rerun replaces it
    prov = reproduce.run_notebooks("smoke", only="02", results_dir=out, notebooks_dir=nb_dir, progress_bar=False,
                                   jobs=jobs)
    assert prov["notebooks"]["02_second.ipynb"]["status"] == "ok" and not kept.exists()


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
    cmd = [sys.executable, "-m", "genpercept_lib.apps.cli", "reproduce", "--profile", "smoke", "--notebooks-dir",
           str(nb_dir), "--results-dir", str(out), "--jobs", str(jobs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob(".staging/*/02_second/tables/second.csv")) and time.time() < deadline:
        time.sleep(0.2)  # 02 is running and has written its first table
    assert list(out.glob(".staging/*/02_second/tables/second.csv")), proc.communicate(timeout=5)
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
    from genpercept_lib import runs

    monkeypatch.setattr(reproduce.results, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path)  # where run_folder puts the canonical results
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
    assert groups == [["00"], ["03"], ["02", "01", "04"]]  # the alone ones first: no core waits for a long one
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


# -- one writer per results folder --------------------------------------------------------------------------


def test_two_runs_into_one_folder_take_turns_and_both_land(nb_dir, tmp_path, kernel_tmp):
    """`--only 01` and `--only 02` at once into one folder: the second says it waits, then runs; neither deletes
    the other's staging folder, and provenance and SUMMARY list both."""
    import subprocess
    import sys
    import time

    make_notebook(nb_dir / "01_first.ipynb", SLEEPY.format(name="first"))
    make_notebook(nb_dir / "02_second.ipynb", SLEEPY.format(name="second"))
    out = tmp_path / "results"

    def start(only):
        cmd = [sys.executable, "-m", "genpercept_lib.apps.cli", "reproduce", "--profile", "smoke", "--only", only,
               "--notebooks-dir", str(nb_dir), "--results-dir", str(out), "--jobs", "1"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("01")
    deadline = time.time() + 120
    while not list(out.glob(".staging/**/01_first")) and time.time() < deadline:  # 01 is running
        time.sleep(0.1)
    second = start("02")
    (_, err1), (_, err2) = first.communicate(timeout=300), second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    waits = [line for line in err2.splitlines() if "waiting" in line]
    assert len(waits) == 1 and f"writes into {out}" in waits[0], err2
    prov = json.loads((out / "provenance.json").read_text())
    assert {k: e["status"] for k, e in prov["notebooks"].items()} == {"01_first.ipynb": "ok", "02_second.ipynb": "ok"}
    summary = (out / "SUMMARY.md").read_text()
    assert "[01_first.ipynb]" in summary and "[02_second.ipynb]" in summary
    assert (out / "tables" / "first.csv").is_file() and (out / "tables" / "second.csv").is_file()
    assert not (out / ".staging").exists()


def test_no_wait_refuses_at_once_while_another_run_writes(nb_dir, tmp_path, capsys):

    out = tmp_path / "results"
    out.mkdir()
    with cache.file_lock(out / reproduce.LOCK_NAME, "held by the test"):  # another open file: flock says busy
        code = cli.main(["reproduce", "--profile", "smoke", "--no-wait", "--notebooks-dir", str(nb_dir),
                         "--results-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"genpercept reproduce: error: {out}: another `genpercept reproduce` (process ")
    assert sorted(p.name for p in out.iterdir()) == [reproduce.LOCK_NAME]  # nothing ran, nothing was written


# -- everything checked before the first cell -----------------------------------------------------------------


def test_bad_arguments_are_one_line_and_change_nothing(nb_dir, tmp_path, capsys):
    """A kernel typo or `--seed -1` used to fail inside the notebook, replacing a complete result."""
    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    before = snapshot(out, leave_out=())
    (nb_dir / "05_broken.ipynb").write_text("{not json")
    make_notebook(nb_dir / "06_other.ipynb", "x = 1")
    nb = nbformat.read(nb_dir / "06_other.ipynb", as_version=4)
    nb.cells[0].metadata["tags"] = []  # no parameters cell
    nbformat.write(nb, nb_dir / "06_other.ipynb")
    cases = {
        ("--only", "01", "--kernel", "pyhton3"): "kernel 'pyhton3': no such Jupyter kernel; expected one of ",
        ("--only", "01", "--seed", "-1"): "seed=-1: expected an integer >= 0",
        ("--only", "01", "--overrides", '{"train_step": 5}'): "overrides: unknown profile field 'train_step'",
        ("--only", "01", "--overrides", '{"train_steps": 0}'): "overrides: train_steps=0: expected an integer >= 1",
        ("--only", "01,7"): "no notebook numbered '7'",
        ("--only", "01,05"): "05_broken.ipynb: not a readable notebook (JSONDecodeError)",
        ("--only", "01,06"): "06_other.ipynb: no cell tagged `parameters`",
    }
    for argv, needle in cases.items():
        code = cli.main(["reproduce", "--profile", "smoke", "--notebooks-dir", str(nb_dir), "--results-dir", str(out),
                         *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("genpercept reproduce: error: "), err
        assert needle in err, (argv, err)
        assert snapshot(out, leave_out=()) == before, argv  # byte-identical: nothing ran, nothing was written


def test_a_parameter_the_notebook_does_not_have_is_one_line(nb_dir, tmp_path):
    with pytest.raises(ValueError, match=r"01_first.ipynb: its parameters cell has no 'sed'"):
        reproduce.run_notebooks("smoke", results_dir=tmp_path / "r", notebooks_dir=nb_dir, progress_bar=False,
                                extra_parameters={"sed": 3})
    assert not (tmp_path / "r").exists()


# -- provenance rebuilt, not dropped ----------------------------------------------------------------------------


def test_a_corrupt_provenance_is_said_in_one_line_and_rebuilt_from_the_executed_copies(nb_dir, tmp_path, capsys):
    out = tmp_path / "results"
    make_notebook(nb_dir / "03_third.ipynb", WRITE.format(name="third"))
    before = reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    capsys.readouterr()
    (out / "provenance.json").write_text('{"notebooks": {"01_first.ipynb": ')  # cut short
    prov = reproduce.run_notebooks("smoke", only="01", results_dir=out, notebooks_dir=nb_dir, progress_bar=False,
                                   jobs=1)
    said = [line for line in capsys.readouterr().err.splitlines() if "provenance.json" in line]
    assert len(said) == 1 and "unreadable (JSONDecodeError" in said[0] and "rebuilt from the 3 executed" in said[0]
    assert (out / "provenance.json.corrupt").read_text() == '{"notebooks": {"01_first.ipynb": '
    assert set(prov["notebooks"]) == {"01_first.ipynb", "02_second.ipynb", "03_third.ipynb"}
    for name in ("02_second.ipynb", "03_third.ipynb"):  # not rerun: their own entries, from their metadata
        assert prov["notebooks"][name] == before["notebooks"][name]
    assert json.loads((out / "provenance.json").read_text()) == prov
    summary = (out / "SUMMARY.md").read_text()
    assert all(f"[{name}](notebooks/{name}) | smoke | ok |" in summary for name in prov["notebooks"])


# -- notices on the console -----------------------------------------------------------------------------------


NOTICE = (
    "from genpercept_lib import cache\n"
    "from genpercept_lib.data import pool\n"
    "pool.render_pool('toy_hypersim', 1, 16, split='eval')\n"
    "path, = (cache.root() / 'toyworld').glob('eval-1-16px-*.npz')\n"
    "path.write_bytes(b'not a zip')  # a damaged cache entry\n"
    "pool.render_pool('toy_hypersim', 1, 16, split='eval')  # says so and renders again\n"
)


@pytest.mark.parametrize("jobs", [1, 2])
def test_cache_rebuild_notices_reach_the_console(nb_dir, tmp_path, monkeypatch, capfd, jobs):
    monkeypatch.setenv("GENPERCEPT_CACHE", str(tmp_path / "cache"))  # the kernels inherit it
    make_notebook(nb_dir / "01_first.ipynb", NOTICE)
    out = tmp_path / "results"
    reproduce.run_notebooks("smoke", results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=jobs)
    notices = [line for line in capfd.readouterr().err.splitlines() if "notice:" in line]
    assert len(notices) == 1, notices
    assert notices[0].startswith("[reproduce] 01_first.ipynb: notice: the cached ")
    assert "building it again" in notices[0]
    executed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert "notice: the cached " in json.dumps(executed.cells[-1].outputs)  # and still in the notebook


def test_a_full_run_from_an_empty_cache_records_its_reference_host_minutes(nb_dir, tmp_path, monkeypatch):
    """Every notebook from an empty cache: the run's wall time, this host's benchmark and the minutes on the
    reference host (the first full run's). A partial rerun, or a run on a warm cache, keeps the record; a later
    full run on a host twice as slow counts its minutes at half."""
    from genpercept_lib.apps import runtime

    cache, out = tmp_path / "cache", tmp_path / "results"
    monkeypatch.setenv("GENPERCEPT_CACHE", str(cache))
    monkeypatch.setattr(runtime, "host_benchmark", lambda: 2.0)
    run = dict(results_dir=out, notebooks_dir=nb_dir, progress_bar=False, jobs=1)
    first = reproduce.run_notebooks("smoke", **run)["full_run"]
    assert first["benchmark_seconds"] == first["reference"]["benchmark_seconds"] == 2.0
    assert first["reference_minutes"] == round(first["wall_seconds"] / 60, 1)
    assert reproduce.run_notebooks("smoke", only="02", **run)["full_run"] == first  # partial: kept
    cache.mkdir()
    (cache / "model.safetensors").write_bytes(b"x")
    assert reproduce.run_notebooks("smoke", **run)["full_run"] == first  # a warm cache measures less than a run
    (cache / "model.safetensors").unlink()
    monkeypatch.setattr(runtime, "host_benchmark", lambda: 4.0)  # a host half as fast
    slow = reproduce.run_notebooks("smoke", **run)["full_run"]
    assert slow["reference"] == first["reference"] and slow["benchmark_seconds"] == 4.0
    assert slow["reference_minutes"] == runtime.reference_minutes(slow["wall_seconds"], 4.0, 2.0)
    assert json.loads((out / "provenance.json").read_text())["full_run"] == slow


def test_reference_minutes_scale_with_the_benchmark():
    from genpercept_lib.apps import runtime

    assert runtime.reference_minutes(600, 2.0, 2.0) == 10.0
    assert runtime.reference_minutes(600, 4.0, 2.0) == 5.0  # twice as slow: half the reference minutes
