"""The papermill driver behind ``make reproduce``: run the numbered notebooks in order into ``results/``.

For each ``notebooks/NN_name.ipynb`` (numeric order, or only those named by ``only``) it injects the
``profile`` (and any other parameters) into the tagged ``parameters`` cell and records commit, profile,
hardware and timing in ``provenance.json``.

* Where results go: ``results/`` holds the default profile's canonical outputs and is written only by a
  default-profile run without overrides or another seed; every other run writes under
  ``results/runs/<profile>-<hash of its parameters>/`` (gitignored) and says so (``run_folder``).
* Everything is checked before the first cell runs (``check_run``): the profile, the overrides and the seed, the
  ``only`` names, the notebook files (JSON with a ``parameters`` cell holding every parameter passed), the kernel
  and that the results folder can be written. A failure there is one line and changes nothing.
* One writer per results folder: a run holds ``<results>/.reproduce.lock`` from its first write to its last
  (``cache.file_lock``, the cache locks' mechanism); a second run into the same folder says in one line that it
  waits, or with ``wait=False`` (``--no-wait``) refuses at once. Each run stages under a folder of its own
  (``.staging/<process id>/``), so no run deletes another's.
* One consistent state: each notebook writes its tables, figures and executed copy into a staging folder;
  when it ends (ok or failed) they are moved into place together with its provenance entry and
  ``SUMMARY.md``. A run killed mid-notebook (SIGTERM, SIGKILL) leaves the results folder as it was before
  that notebook started; SIGTERM stops with one line saying what was interrupted and that a rerun resumes
  (every trained model is cached, so finished work is not redone).
* A failing notebook stops the run with its name and cell; its executed copy (with the traceback) is kept. A
  failed rerun never replaces a complete result: when the notebook's previous run succeeded, the new executed
  copy goes to ``failed/<notebook>`` (named in the error) and the previous tables, figures, executed copy,
  provenance entry and SUMMARY row stay; only a successful run replaces them.
* Provenance survives damage: every executed copy carries its own provenance entry in its metadata
  (``genpercept.provenance``), so an unreadable ``provenance.json`` is reported in one line, kept beside as
  ``provenance.json.corrupt`` and rebuilt from the executed copies (``results.provenance_from_executed``).
* Notices (``notice: ...``: a damaged cache entry rebuilt, a model trained again) reach the console (stderr)
  as they come, not only the executed copy.
* ``jobs`` notebooks run at once (the profile's ``jobs``; 2 in the default profile), each in its own process
  (``python -m genpercept_lib.apps.reproduce``); this process alone writes the results folder. A notebook whose
  metadata says ``genpercept.runs_alone`` (00 trains the smoke prior every other one loads; 03 times the
  pipelines) runs alone, before the others. Two notebooks that need the same model take turns: the first
  trains it, the other waits for it and loads it (``cache.entry_lock``). Among the others the longest (by the
  previous run's seconds) start first. ``total_seconds`` in the provenance is wall-clock time (overlapping
  notebooks counted once); ``notebook_seconds`` the sum of the notebooks' own times.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import cache, profiles, results
from ..results import git_commit  # scripts import it from here too

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
KERNEL_NAME = "genpercept"
LOCK_NAME = ".reproduce.lock"  # in the results folder: held by the one run that writes it
STAGING = ".staging"  # in the results folder: <process id>/<notebook stem>/ of the run that writes it
FAILED = "failed"  # in the results folder: the executed copy of a failed rerun whose earlier run succeeded


class NotebookFailed(RuntimeError):
    """A notebook raised: the message names the notebook, the cell and the error (one line)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped (SIGTERM / Ctrl-C) while a notebook ran: one line, the results folder intact.
    A KeyboardInterrupt, so that no ``except Exception`` on the way (papermill, nbclient) swallows it."""


def _kernel_manager_class():
    """A kernel manager on IPC sockets in a temporary folder (no "running over TCP without encryption"
    warning in every executed notebook, no stray socket files in the repository)."""
    from jupyter_client.manager import KernelManager
    from traitlets import CaselessStrEnum, Unicode

    class IPCKernelManager(KernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc")
        ip = Unicode(os.path.join(tempfile.gettempdir(), f"genpercept-kernel-{os.getpid()}"))

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _KERNELS.append(self)

    return IPCKernelManager


_KERNELS: list = []   # kernel managers started by this process (stopped on SIGTERM)
_RUNNING: dict = {}   # the notebook being executed: name, staging folder, results folder


def notebooks_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path) if path else results.REPO_ROOT / "notebooks"


def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks, in numeric order."""
    folder = notebooks_dir(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such notebooks folder")
    return sorted((p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name)), key=lambda p: p.name)


def select_notebooks(only: str | None, folder: str | os.PathLike | None = None) -> list[Path]:
    """All notebooks, or those whose number is in the comma-separated ``only`` (e.g. "04" or "00,01")."""
    available = list_notebooks(folder)
    if not only:
        return available
    by_number = {p.name[:2]: p for p in available}
    chosen = []
    for token in (t.strip() for t in str(only).split(",") if t.strip()):
        key = token.zfill(2) if token.isdigit() else token
        if key not in by_number:
            raise FileNotFoundError(
                f"no notebook numbered {token!r} in {notebooks_dir(folder)}: available {', '.join(sorted(by_number))}"
            )
        chosen.append(by_number[key])
    return sorted(set(chosen), key=lambda p: p.name)


def default_kernel() -> str:
    """The registered ``genpercept`` kernel (``make`` installs it into the venv), else ``python3``."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    except Exception:  # noqa: BLE001 - any jupyter trouble: fall back to the default kernel
        return "python3"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_provenance(out_root: Path) -> dict:
    """``<out_root>/provenance.json``; an unreadable one (not JSON, not a record) is said in one line on stderr,
    kept as ``provenance.json.corrupt`` and rebuilt from the executed copies' own entries (and written back with
    SUMMARY.md), so no notebook loses its row. A missing one with executed copies present is rebuilt too."""
    path = out_root / "provenance.json"
    try:
        prov = json.loads(path.read_text())
        if isinstance(prov, dict) and isinstance(prov.get("notebooks", {}), dict):
            return prov
        problem = "not a provenance record (a JSON object with a `notebooks` object)"
    except FileNotFoundError:
        problem = None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problem = f"unreadable ({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]})"
    rebuilt = {"notebooks": results.provenance_from_executed(out_root / "notebooks")}
    if problem is None and not rebuilt["notebooks"]:
        return {}  # a new results folder
    if problem is not None:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    print(f"[reproduce] {path}: {problem or 'missing'}; rebuilt from the {len(rebuilt['notebooks'])} executed "
          f"copies in {out_root / 'notebooks'}" + (f" (the damaged file is kept as {path.name}.corrupt)"
                                                    if problem else ""), file=sys.stderr, flush=True)
    _write_provenance(out_root, rebuilt)
    return rebuilt


def _write_provenance(out_root: Path, prov: dict) -> None:
    """``provenance.json`` (its totals recomputed) and ``SUMMARY.md``, each written atomically."""
    prov["notebooks"] = dict(sorted(prov["notebooks"].items()))
    prov["notebook_seconds"] = round(sum(e.get("seconds", 0) for e in prov["notebooks"].values()), 1)
    prov["total_seconds"] = wall_seconds(prov["notebooks"].values())
    results.atomic_write_text(out_root / "provenance.json", json.dumps(prov, indent=2) + "\n")
    results.write_summary(out_root)
    if out_root.resolve() == (results.REPO_ROOT / "results").resolve():  # the canonical results: the README's table
        results.update_readme(results.REPO_ROOT / "README.md", out_root)


def _failure_message(nb: Path, err: Exception) -> str:
    """What failed where, one line (the caller adds where the executed copy went)."""
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", "?")
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    evalue = (str(evalue).strip().splitlines() or [""])[-1]
    return f"{nb.name} failed in cell {cell}: {ename}: {evalue}"


def _where(executed: Path) -> str:
    """The end of a failure's line: where its executed copy is, and whether an earlier result was kept."""
    kept = executed.parent.name == FAILED
    return f" (executed copy: {executed}" + ("; the previous complete result is kept)" if kept else ")")


def check_kernel(name: str) -> None:
    """One line unless ``name`` is an installed Jupyter kernel (``jupyter kernelspec list``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = sorted(KernelSpecManager().find_kernel_specs())
    if name not in specs:
        raise ValueError(f"kernel {name!r}: no such Jupyter kernel; expected one of {', '.join(specs)}")


def check_notebook(nb: Path, parameters: dict) -> None:
    """One line unless ``nb`` is a notebook papermill can run with ``parameters``: JSON with a cell tagged
    ``parameters`` that assigns each of them (a misspelt one would be injected unused)."""
    try:
        cells = json.loads(nb.read_text()).get("cells")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise ValueError(f"{nb}: not a readable notebook ({type(err).__name__})") from None
    tagged = [c for c in cells or [] if isinstance(c, dict)
              and "parameters" in ((c.get("metadata") or {}).get("tags") or [])]
    if not tagged:
        raise ValueError(f"{nb}: no cell tagged `parameters` (expected one assigning {', '.join(parameters)})")
    source = "".join(tagged[0].get("source") or "")
    names = set(re.findall(r"^(\w+)\s*=", source, flags=re.M))
    missing = [k for k in parameters if k not in names]
    if missing:
        raise ValueError(f"{nb}: its parameters cell has no {missing[0]!r} (it sets {', '.join(sorted(names))})")


def check_run(profile: str, only: str | None, notebooks_folder, kernel: str, parameters: dict, jobs) -> tuple:
    """Everything a run needs, checked before anything runs or is written: one line on the first problem.
    Returns (the jobs, the selected notebooks)."""
    cfg = profiles.get_profile(profile)
    if "overrides" in parameters:  # a wrong name, type or range
        cfg = profiles.with_overrides(cfg, parameters["overrides"])
    seed = parameters.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise profiles.ConfigError(f"seed={seed!r}: expected an integer >= 0")
    jobs = cfg.jobs if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: expected an integer >= 1 (notebooks run at once)")
    selected = select_notebooks(only, notebooks_folder)
    for nb in selected:
        check_notebook(nb, {"profile": profile, **parameters})
    check_kernel(kernel)
    return jobs, selected


def run_notebooks(
    profile: str = "default",
    only: str | None = None,
    results_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    extra_parameters: dict | None = None,
    progress_bar: bool = True,
    jobs: int | None = None,
    wait: bool = True,
) -> dict:
    """Execute the notebooks with papermill; returns the provenance dict (also written to disk).

    ``results_dir``: where to write (default: ``results.run_folder(profile, extra_parameters)``).
    ``jobs``: notebooks at once (default: the profile's ``jobs``).
    ``wait``: if another run writes into the same results folder, wait for it (saying so in one line); False:
    refuse at once (``cache.Locked``, one line).
    """
    # 1. everything checked before anything runs or is written
    parameters = {"profile": profile, **(extra_parameters or {})}
    kernel = kernel_name or default_kernel()
    jobs, selected = check_run(profile, only, notebooks_dir, kernel, dict(extra_parameters or {}), jobs)
    out_root = Path(results_dir) if results_dir else results.run_folder(profile, extra_parameters)
    _writable(out_root)
    if out_root.resolve() != results.results_dir().resolve():
        print(f"[reproduce] results of this run go to {out_root} (results/ holds the default profile's "
              "canonical outputs)", flush=True)
    # 2. one writer per results folder, from its first write to its last
    with cache.file_lock(out_root / LOCK_NAME, stream=sys.stderr,
                        waiting=f"[reproduce] waiting: another `genpercept reproduce` (process {{pid}}) writes "
                                f"into {out_root}; this run starts when it ends",
                        refuse=None if wait else f"{out_root}: another `genpercept reproduce` (process {{pid}}) "
                                                 "writes into it; wait for it (leave out --no-wait) or choose "
                                                 "another --results-dir"):
        # staging folders left by runs that were killed (under the lock, no live run owns one)
        shutil.rmtree(out_root / STAGING, ignore_errors=True)
        prov = load_provenance(out_root)
        hardware = results.hardware_label()
        prov.update(commit=git_commit(), hardware=hardware, python=platform.python_version(),
                    parameters=parameters)
        try:
            import torch

            prov["torch"] = torch.__version__
        except ImportError:  # pragma: no cover
            pass
        prov.setdefault("notebooks", {})
        prov["jobs"] = jobs
        full = _full_run_start(selected, notebooks_dir)  # all notebooks from an empty cache: a budget measurement
        env_before = {k: os.environ.get(k) for k in ("GENPERCEPT_RESULTS", "GENPERCEPT_PROGRESS")}
        os.environ["GENPERCEPT_PROGRESS"] = "text"  # progress bars that read well in the executed copies
        previous = signal.signal(signal.SIGTERM, _raise_interrupted) if _main_thread() else None
        try:
            for group in plan(selected, jobs, prov["notebooks"]):
                if len(group) == 1 or jobs == 1:
                    for nb in group:
                        _run_here(nb, out_root, prov, parameters, kernel, progress_bar, hardware)
                else:
                    _run_parallel(group, jobs, out_root, prov, parameters, kernel, hardware)
            if full is not None:
                _record_full_run(out_root, prov, full, selected)
        finally:
            for key, value in env_before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            _drop_staging(out_root)
    return prov


def _cache_is_empty() -> bool:
    """No cached render or model yet (lock files aside): a run from here measures the whole cost."""
    root = cache.root()
    return not root.is_dir() or not any(f.is_file() and f.suffix != ".lock" for f in root.rglob("*"))


def _full_run_start(selected: list[Path], notebooks_folder) -> dict | None:
    """For a run of every notebook from an empty cache: its start and this host's benchmark (``runtime``), else
    None (a partial rerun keeps the last full run's record)."""
    if [p.name for p in selected] != [p.name for p in list_notebooks(notebooks_folder)] or not _cache_is_empty():
        return None
    from . import runtime

    return {"started": _now(), "clock": time.perf_counter(), "benchmark_seconds": runtime.host_benchmark()}


def _record_full_run(out_root: Path, prov: dict, full: dict, selected: list[Path]) -> None:
    """``prov["full_run"]``: the whole run's wall time on this host and in reference-host minutes. The reference is
    the host of the full run that came before (its own reference, carried over), or this one for the first."""
    from . import runtime

    if any(prov["notebooks"].get(nb.name, {}).get("status") != "ok" for nb in selected):
        return  # a failed run measures nothing
    wall = round(time.perf_counter() - full["clock"], 1)
    before = prov.get("full_run") or {}
    reference = before.get("reference") or {"hardware": prov["hardware"], "commit": prov["commit"],
                                             "benchmark_seconds": full["benchmark_seconds"]}
    prov["full_run"] = {"commit": prov["commit"], "hardware": prov["hardware"], "started": full["started"],
                        "ended": _now(), "wall_seconds": wall, "benchmark": runtime.BENCHMARK,
                        "benchmark_seconds": full["benchmark_seconds"], "reference": reference,
                        "reference_minutes": runtime.reference_minutes(wall, full["benchmark_seconds"],
                                                                       reference["benchmark_seconds"])}
    _write_provenance(out_root, prov)


def _staging(out_root: Path) -> Path:
    """This run's staging folder (``.staging/<process id>``): no other run's is ever touched."""
    return out_root / STAGING / str(os.getpid())


def _drop_staging(out_root: Path) -> None:
    shutil.rmtree(_staging(out_root), ignore_errors=True)
    try:
        (out_root / STAGING).rmdir()  # only when empty
    except OSError:
        pass


def runs_alone(nb: Path) -> bool:
    """Whether the notebook's metadata asks to run with no other notebook beside it (``genpercept.runs_alone``:
    the reason, in words)."""
    try:
        meta = json.loads(nb.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return False
    return bool(meta.get("genpercept", {}).get("runs_alone"))


def plan(selected: list[Path], jobs: int, previous: dict | None = None) -> list[list[Path]]:
    """The notebooks as groups that run one after another: first each notebook that runs alone, as a group of its
    own, in numeric order (00 makes the smoke profile's prior the others load; 03 times the pipelines on a quiet
    machine), then all the others as one group, run ``jobs`` at once, the longest of the previous run first
    (``previous``: provenance entries; a notebook not timed before keeps its numeric order, after the timed ones).
    So no core waits idle for a long notebook to finish before one that runs alone may start."""
    if jobs == 1:
        return [list(selected)]
    alone = [nb for nb in selected if runs_alone(nb)]
    rest = [nb for nb in selected if not runs_alone(nb)]
    groups = [[nb] for nb in alone] + ([rest] if rest else [])

    def seconds(nb: Path) -> float:
        entry = (previous or {}).get(nb.name, {})
        return float(entry.get("seconds", 0)) if entry.get("status") == "ok" else 0.0

    return [sorted(g, key=lambda nb: (-seconds(nb), nb.name)) for g in groups]


def _stage(out_root: Path, nb: Path) -> Path:
    stage = _staging(out_root) / nb.stem
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "notebooks").mkdir(parents=True)
    return stage


def _entry(profile: str, hardware: str, commit: str) -> dict:
    return {"profile": profile, "start": _now(), "hardware": hardware, "commit": commit}


class _Notices:
    """papermill's ``stdout_file`` for one notebook: each line of its stdout that starts with ``notice:`` (a
    damaged cache entry rebuilt, a model trained again: ``pool``, ``prior``, ``train``) also goes to this
    process's stderr, the console, as it comes; the rest stays in the executed copy alone."""

    def __init__(self, name: str):
        self.name, self.pending = name, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1]  # a redrawn line: its last state
            if line.startswith("notice:"):
                print(f"[reproduce] {self.name}: {line}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        pass


def _execute(nb: Path, executed: Path, parameters: dict, kernel: str, progress_bar: bool) -> None:
    """papermill on one notebook (this process, or a worker of ``_run_parallel``)."""
    import papermill as pm

    pm.execute_notebook(str(nb), str(executed), parameters=parameters, kernel_name=kernel, cwd=str(nb.parent),
                        progress_bar=progress_bar, kernel_manager_class=_kernel_manager_class(),
                        stdout_file=_Notices(nb.name))


def _interrupted_message(names: list[str], out_root: Path) -> str:
    numbers, they = ",".join(n[:2] for n in names), "they" if len(names) > 1 else "it"
    return (f"interrupted during {', '.join(names)}: {out_root} is as it was before {they} started; rerun to "
            f"resume (`make reproduce ONLY={numbers}`; trained models are cached)")


def _run_here(nb: Path, out_root: Path, prov: dict, parameters: dict, kernel: str, progress_bar: bool,
              hardware: str) -> None:
    """One notebook in this process."""
    stage = _stage(out_root, nb)
    os.environ["GENPERCEPT_RESULTS"] = str(stage.resolve())  # the kernel inherits it
    executed = stage / "notebooks" / nb.name
    _RUNNING.update(notebooks=[nb.name], stages=[stage], out_root=out_root)
    t0 = time.perf_counter()
    print(f"[reproduce] {nb.name} (profile={parameters['profile']})", flush=True)
    entry = _entry(parameters["profile"], hardware, prov["commit"])
    try:
        _execute(nb, executed, parameters, kernel, progress_bar)
    except (KeyboardInterrupt, Interrupted):
        shutil.rmtree(stage, ignore_errors=True)
        raise Interrupted(_interrupted_message([nb.name], out_root)) from None
    except Exception as err:  # papermill raises PapermillExecutionError for a failing cell
        entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="failed")
        executed = _commit(stage, out_root, prov, nb.name, entry)
        raise NotebookFailed(_failure_message(nb, err) + _where(executed)) from err
    entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="ok")
    _commit(stage, out_root, prov, nb.name, entry)


def _run_parallel(group: list[Path], jobs: int, out_root: Path, prov: dict, parameters: dict, kernel: str,
                  hardware: str) -> None:
    """The notebooks of ``group``, ``jobs`` at once, each in a worker process; each one's results are committed
    as it ends. A failure lets the running ones finish (their results are good), starts no more, then raises."""
    queue, running, failures = list(group), {}, []
    try:
        while (queue and not failures) or running:
            while queue and len(running) < jobs and not failures:
                nb = queue.pop(0)
                stage = _stage(out_root, nb)
                spec = {"notebook": str(nb), "executed": str(stage / "notebooks" / nb.name),
                        "parameters": parameters, "kernel": kernel, "failure": str(stage / "failure.txt")}
                (stage / "job.json").write_text(json.dumps(spec))
                env = {**os.environ, "GENPERCEPT_RESULTS": str(stage.resolve()), "GENPERCEPT_PROGRESS": "text"}
                proc = subprocess.Popen([sys.executable, "-m", "genpercept_lib.apps.reproduce",
                                         str(stage / "job.json")], env=env,
                                        preexec_fn=_die_with_parent if os.name == "posix" else None)
                running[proc] = (nb, stage, _entry(parameters["profile"], hardware, prov["commit"]),
                                 time.perf_counter())
                _CHILDREN.append(proc)
                print(f"[reproduce] {nb.name} (profile={parameters['profile']}; {len(running)} running)", flush=True)
            _RUNNING.update(notebooks=[v[0].name for v in running.values()],
                            stages=[v[1] for v in running.values()], out_root=out_root)
            done = [p for p in running if p.poll() is not None]
            if not done:
                time.sleep(0.2)
                continue
            for proc in done:
                nb, stage, entry, t0 = running.pop(proc)
                _CHILDREN.remove(proc)
                entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1))
                if proc.returncode == 0:
                    entry["status"] = "ok"
                    print(f"[reproduce] {nb.name} ok in {entry['seconds']:.0f} s", flush=True)
                elif proc.returncode in (-signal.SIGTERM, 143):  # stopped (SIGTERM to the worker): as if to us
                    shutil.rmtree(stage, ignore_errors=True)
                    raise Interrupted(_interrupted_message([nb.name], out_root))
                else:  # a failing cell, or a worker killed otherwise (out of memory): keep what it executed
                    entry["status"] = "failed"
                    why = stage / "failure.txt"
                    code = proc.returncode
                    reason = why.read_text().strip() if why.is_file() else \
                        f"{nb.name} failed: its worker " + (f"was killed by signal {-code}" if code < 0
                                                            else f"exited with code {code}")
                    why.unlink(missing_ok=True)
                (stage / "job.json").unlink(missing_ok=True)
                executed = _commit(stage, out_root, prov, nb.name, entry)
                if entry["status"] == "failed":
                    failures.append(reason + _where(executed))
    except (KeyboardInterrupt, Interrupted) as err:
        names = [v[0].name for v in running.values()]
        _stop_children()
        for _, stage, _, _ in running.values():
            shutil.rmtree(stage, ignore_errors=True)
        raise Interrupted(_interrupted_message(names, out_root) if names else str(err)) from None
    if failures:
        raise NotebookFailed(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))


_CHILDREN: list = []  # worker processes of _run_parallel (stopped on SIGTERM)


def _die_with_parent() -> None:
    """In a worker, before it starts: Linux sends it SIGTERM if this process dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_children() -> None:
    for proc in list(_CHILDREN):
        try:
            proc.terminate()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
    _CHILDREN.clear()


def _worker(job_file: str) -> int:
    """A worker of ``_run_parallel``: run one notebook; on failure write the one-line reason for the parent."""
    spec = json.loads(Path(job_file).read_text())
    nb, executed = Path(spec["notebook"]), Path(spec["executed"])
    signal.signal(signal.SIGTERM, _raise_interrupted)
    _RUNNING.update(notebooks=[nb.name], stages=[], out_root=executed.parent.parent, quiet=True)
    try:
        _execute(nb, executed, spec["parameters"], spec["kernel"], progress_bar=False)
    except Exception as err:  # a failing cell: the parent commits the executed copy and raises
        results.atomic_write_text(spec["failure"], _failure_message(nb, err) + "\n")
        return 1
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum, frame):
    """SIGTERM: papermill runs the cells on a background event loop that no exception in this thread would
    stop, so stop here: kill this run's kernels and workers, drop the staging folders (the results folder is
    untouched by the interrupted notebooks), say so in one line and exit with 143."""
    for km in _KERNELS:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        try:
            if process is not None:
                process.kill()
        except OSError:
            pass
    _stop_children()
    names, out_root = _RUNNING.get("notebooks") or ["?"], _RUNNING.get("out_root")
    for stage in _RUNNING.get("stages", []):
        shutil.rmtree(stage, ignore_errors=True)
    if not _RUNNING.get("quiet"):  # a worker leaves the words (and the run's staging folder) to its parent
        if out_root is not None:
            _drop_staging(out_root)
        print(f"\ngenpercept reproduce: {_interrupted_message(names, out_root)}", file=sys.stderr, flush=True)
    os._exit(143)


def _writable(folder: Path) -> None:
    """One line if the results folder cannot be written (checked before any notebook runs)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{folder}: cannot write results there ({err.strerror or err})") from None


def tidy_streams(nb):
    """The executed notebook as a reader will see it: in each cell, consecutive outputs of one stream (stdout,
    stderr) become one, and a line that was redrawn (``\\r``, as a progress bar does) keeps only its last state
    (nbconvert's ``CoalesceStreamsPreprocessor``). papermill stores every redraw as its own output, which a page
    (GitHub, nbviewer) shows one under another: ``0/5`` then ``5/5`` for each bar. ``nb``: an nbformat
    notebook, changed in place and returned."""
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    return CoalesceStreamsPreprocessor().preprocess(nb, {})[0]


def _tidy_executed(folder: Path, entry: dict | None = None) -> None:
    """``tidy_streams`` on each executed copy in ``folder``, and ``entry`` (its provenance entry) into its metadata
    (``genpercept.provenance``: what rebuilds a damaged provenance.json); a copy that is not complete JSON (its
    worker was killed while papermill wrote it) is kept as it is."""
    import nbformat

    for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        try:
            nb = nbformat.reads(path.read_text(), as_version=4)
        except (ValueError, UnicodeDecodeError):  # nbformat's NotJSONError is a ValueError
            continue
        if entry is not None:
            nb.metadata.setdefault("genpercept", {})["provenance"] = entry
        results.atomic_write_text(path, nbformat.writes(tidy_streams(nb)))


def _complete(out_root: Path, prov: dict, name: str) -> bool:
    """Whether ``name`` has a complete, successful result in ``out_root``: an ok entry and its executed copy."""
    return prov["notebooks"].get(name, {}).get("status") == "ok" and (out_root / "notebooks" / name).is_file()


def _commit(stage: Path, out_root: Path, prov: dict, name: str, entry: dict) -> Path:
    """Move a notebook's staged tables, figures and executed copy (its streams tidied, ``tidy_streams``) into
    place, then its provenance and the summary: the results folder moves from one consistent state to the
    next. A failed run of a notebook whose previous run succeeded replaces nothing: its executed copy goes to
    ``failed/`` and the rest of what it staged is dropped. Returns where the executed copy went."""
    _tidy_executed(stage / "notebooks", entry)
    failed_copy = out_root / FAILED / name
    if entry.get("status") != "ok" and _complete(out_root, prov, name):
        if (stage / "notebooks" / name).is_file():
            failed_copy.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / "notebooks" / name, failed_copy)
        shutil.rmtree(stage, ignore_errors=True)
        return failed_copy
    for sub in ("tables", "figures", "notebooks"):
        for path in sorted((stage / sub).glob("*")) if (stage / sub).is_dir() else []:
            target = out_root / sub / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    failed_copy.unlink(missing_ok=True)  # an earlier failure's copy: this run's outcome supersedes it
    prov["notebooks"][name] = entry
    _write_provenance(out_root, prov)
    shutil.rmtree(stage, ignore_errors=True)
    return out_root / "notebooks" / name


def wall_seconds(entries) -> float:
    """Seconds during which at least one notebook ran: the union of the entries' [start, end] intervals
    (overlapping notebooks counted once); an entry without both times counts its ``seconds``."""
    spans, loose = [], 0.0
    for e in entries:
        try:
            a, b = datetime.fromisoformat(e["start"]).timestamp(), datetime.fromisoformat(e["end"]).timestamp()
        except (KeyError, TypeError, ValueError):
            loose += float(e.get("seconds", 0))
            continue
        spans.append((a, max(a, b)))
    total, reach = 0.0, float("-inf")
    for a, b in sorted(spans):
        total += max(0.0, b - max(a, reach))  # the part of [a, b] no earlier span covered
        reach = max(reach, b)
    return round(total + loose, 1)


if __name__ == "__main__":  # a worker of _run_parallel
    import sys

    sys.exit(_worker(sys.argv[1]))
