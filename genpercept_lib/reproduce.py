"""The papermill driver behind ``make reproduce``: run the numbered notebooks in order into ``results/``.

For each ``notebooks/NN_name.ipynb`` (numeric order, or only those named by ``only``) it injects the
``profile`` (and any other parameters) into the tagged ``parameters`` cell and records commit, profile,
hardware and timing in ``provenance.json``.

* Where results go: ``results/`` holds the default profile's canonical outputs and is written only by a
  default-profile run without overrides or another seed; every other run writes under
  ``results/runs/<profile>-<hash of its parameters>/`` (gitignored) and says so (``run_folder``).
* One consistent state: each notebook writes its tables, figures and executed copy into a staging folder;
  when it ends (ok or failed) they are moved into place together with its provenance entry and
  ``SUMMARY.md``. A run killed mid-notebook (SIGTERM, SIGKILL) leaves the results folder as it was before
  that notebook started; SIGTERM stops with one line saying what was interrupted and that a rerun resumes
  (every trained model is cached, so finished work is not redone).
* A failing notebook stops the run with its name and cell; its executed copy (with the traceback) is kept.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import profiles, results

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
KERNEL_NAME = "genpercept"


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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=results.REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "genpercept_lib", "notebooks"],
                               cwd=results.REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_kernel() -> str:
    """The registered ``genpercept`` kernel (``make`` installs it into the venv), else ``python3``."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    except Exception:  # noqa: BLE001 - any jupyter trouble: fall back to the default kernel
        return "python3"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_provenance(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _failure_message(nb: Path, err: Exception, executed: Path) -> str:
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", "?")
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    evalue = (str(evalue).strip().splitlines() or [""])[-1]
    return f"{nb.name} failed in cell {cell}: {ename}: {evalue} (executed copy: {executed})"


def run_notebooks(
    profile: str = "default",
    only: str | None = None,
    results_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    extra_parameters: dict | None = None,
    progress_bar: bool = True,
) -> dict:
    """Execute the notebooks with papermill; returns the provenance dict (also written to disk).

    ``results_dir``: where to write (default: ``results.run_folder(profile, extra_parameters)``).
    """
    profiles.get_profile(profile)  # validates the name before anything runs
    if extra_parameters and "overrides" in extra_parameters:  # a bad override: one line, before any notebook
        profiles.with_overrides(profiles.get_profile(profile), extra_parameters["overrides"])
    selected = select_notebooks(only, notebooks_dir)
    import papermill as pm

    out_root = Path(results_dir) if results_dir else results.run_folder(profile, extra_parameters)
    _writable(out_root)
    if out_root.resolve() != results.results_dir().resolve():
        print(f"[reproduce] results of this run go to {out_root} (results/ holds the default profile's "
              "canonical outputs)", flush=True)
    prov_path = out_root / "provenance.json"
    prov = _load_provenance(prov_path)
    hardware = results.hardware_label()
    prov.update(commit=git_commit(), hardware=hardware, python=platform.python_version(),
                parameters={"profile": profile, **(extra_parameters or {})})
    try:
        import torch

        prov["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    prov.setdefault("notebooks", {})
    kernel = kernel_name or default_kernel()
    env_before = {k: os.environ.get(k) for k in ("GENPERCEPT_RESULTS", "GENPERCEPT_PROGRESS")}
    os.environ["GENPERCEPT_PROGRESS"] = "text"  # progress bars that read well in the executed copies
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if _main_thread() else None
    try:
        for nb in selected:
            stage = out_root / ".staging" / nb.stem
            shutil.rmtree(stage, ignore_errors=True)
            (stage / "notebooks").mkdir(parents=True)
            os.environ["GENPERCEPT_RESULTS"] = str(stage.resolve())  # the kernel inherits it
            executed = stage / "notebooks" / nb.name
            _RUNNING.update(notebook=nb.name, stage=stage, out_root=out_root)
            start, t0 = _now(), time.perf_counter()
            print(f"[reproduce] {nb.name} (profile={profile})", flush=True)
            entry = {"profile": profile, "start": start, "hardware": hardware, "commit": prov["commit"]}
            try:
                pm.execute_notebook(
                    str(nb), str(executed), parameters={"profile": profile, **(extra_parameters or {})},
                    kernel_name=kernel, cwd=str(nb.parent), progress_bar=progress_bar,
                    kernel_manager_class=_kernel_manager_class(),
                )
            except (KeyboardInterrupt, Interrupted):
                shutil.rmtree(stage, ignore_errors=True)
                raise Interrupted(f"interrupted during {nb.name}: {out_root} is as it was before it started; "
                                  f"rerun to resume (`make reproduce ONLY={nb.name[:2]}`; trained models are "
                                  "cached)") from None
            except Exception as err:  # papermill raises PapermillExecutionError for a failing cell
                entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="failed")
                _commit(stage, out_root, prov, nb.name, entry)
                raise NotebookFailed(_failure_message(nb, err, out_root / "notebooks" / nb.name)) from err
            entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="ok")
            _commit(stage, out_root, prov, nb.name, entry)
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(out_root / ".staging", ignore_errors=True)
    return prov


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum, frame):
    """SIGTERM: papermill runs the cells on a background event loop that no exception in this thread would
    stop, so stop here: kill this run's kernels, drop the staging folder (the results folder is untouched by
    the interrupted notebook), say so in one line and exit with 143."""
    import sys

    for km in _KERNELS:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        try:
            if process is not None:
                process.kill()
        except OSError:
            pass
    name, stage, out_root = _RUNNING.get("notebook", "?"), _RUNNING.get("stage"), _RUNNING.get("out_root")
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"\ngenpercept reproduce: interrupted during {name}: {out_root} is as it was before it started; rerun to "
          f"resume (`make reproduce ONLY={name[:2]}`; trained models are cached)", file=sys.stderr, flush=True)
    os._exit(143)


def _writable(folder: Path) -> None:
    """One line if the results folder cannot be written (checked before any notebook runs)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{folder}: cannot write results there ({err.strerror or err})") from None


def _commit(stage: Path, out_root: Path, prov: dict, name: str, entry: dict) -> None:
    """Move a notebook's staged tables, figures and executed copy into place, then its provenance and the
    summary: the results folder moves from one consistent state to the next."""
    for sub in ("tables", "figures", "notebooks"):
        for path in sorted((stage / sub).glob("*")) if (stage / sub).is_dir() else []:
            target = out_root / sub / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    prov["notebooks"][name] = entry
    prov["total_seconds"] = round(sum(e.get("seconds", 0) for e in prov["notebooks"].values()), 1)
    results.atomic_write_text(out_root / "provenance.json", json.dumps(prov, indent=2) + "\n")
    results.write_summary(out_root)
    shutil.rmtree(stage, ignore_errors=True)
