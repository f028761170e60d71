"""The papermill driver behind ``make reproduce``: run the numbered notebooks in order into ``results/``.

For each ``notebooks/NN_name.ipynb`` (numeric order, or only those named by ``only``) it injects the
``profile`` (and the results folder) into the tagged ``parameters`` cell, stores the executed copy in
``results/notebooks/``, and records commit, profile, hardware and timing in ``results/provenance.json``.
A failing notebook stops the run with its name and cell; its executed copy (with the error) is kept and
every earlier result stays as it was. ``results/SUMMARY.md`` is rewritten at the end either way.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from . import profiles, results

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
KERNEL_NAME = "genpercept"


class NotebookFailed(RuntimeError):
    """A notebook raised: the message names the notebook, the cell and the error (one line)."""


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
    """Execute the notebooks with papermill; returns the provenance dict (also written to disk)."""
    profiles.get_profile(profile)  # validates the name before anything runs
    selected = select_notebooks(only, notebooks_dir)
    import papermill as pm

    out_root = results.results_dir(results_dir)
    (out_root / "notebooks").mkdir(parents=True, exist_ok=True)
    prov_path = out_root / "provenance.json"
    prov = _load_provenance(prov_path)
    hardware = results.hardware_label()
    prov.update(commit=git_commit(), hardware=hardware, python=platform.python_version())
    try:
        import torch

        prov["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    prov.setdefault("notebooks", {})
    kernel = kernel_name or default_kernel()
    env_before = os.environ.get("GENPERCEPT_RESULTS")
    os.environ["GENPERCEPT_RESULTS"] = str(out_root.resolve())  # the kernel inherits it
    try:
        for nb in selected:
            executed = out_root / "notebooks" / nb.name
            start, t0 = _now(), time.perf_counter()
            print(f"[reproduce] {nb.name} (profile={profile})", flush=True)
            entry = {"profile": profile, "start": start, "hardware": hardware, "commit": prov["commit"]}
            try:
                pm.execute_notebook(
                    str(nb), str(executed), parameters={"profile": profile, **(extra_parameters or {})},
                    kernel_name=kernel, cwd=str(nb.parent), progress_bar=progress_bar,
                )
            except Exception as err:  # papermill raises PapermillExecutionError for a failing cell
                entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="failed")
                prov["notebooks"][nb.name] = entry
                results.atomic_write_text(prov_path, json.dumps(prov, indent=2) + "\n")
                results.write_summary(out_root)
                raise NotebookFailed(_failure_message(nb, err, executed)) from err
            entry.update(end=_now(), seconds=round(time.perf_counter() - t0, 1), status="ok")
            prov["notebooks"][nb.name] = entry
            prov["total_seconds"] = round(sum(e.get("seconds", 0) for e in prov["notebooks"].values()), 1)
            results.atomic_write_text(prov_path, json.dumps(prov, indent=2) + "\n")
    finally:
        if env_before is None:
            os.environ.pop("GENPERCEPT_RESULTS", None)
        else:
            os.environ["GENPERCEPT_RESULTS"] = env_before
    results.write_summary(out_root)
    return prov
