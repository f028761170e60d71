"""What this process runs and on what: the run's profile and parameters (``set_run``, called by ``profiles.setup``),
where its results go (``results_dir``), the commit and the machine. At the bottom of the library, so that setting up
a run and recording a prior's provenance need nothing above them."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from .cache import REPO_ROOT

_ACTIVE_RUN: dict = {}  # the profile and parameters of the run in this process (``set_run``)


def set_run(profile: str, parameters: dict | None = None) -> Path:
    """Record what this process runs (``profiles.setup`` calls it); returns where its results go."""
    _ACTIVE_RUN.clear()
    _ACTIVE_RUN.update(profile=profile, parameters={k: v for k, v in (parameters or {}).items()
                                                   if v not in (None, {}, "")})
    return results_dir()


def run_folder(profile: str, parameters: dict | None = None) -> Path:
    """Where a run's results go: ``<repo>/results`` for the canonical run (the default profile, no overrides,
    seed 0), else ``<repo>/results/runs/<profile>-<hash of the parameters>/`` (gitignored)."""
    params = {k: v for k, v in (parameters or {}).items() if v not in (None, {}, "")}
    base = REPO_ROOT / "results"
    if profile == "default" and not params.get("overrides") and int(params.get("seed", 0)) == 0 and \
            set(params) <= {"overrides", "seed"}:
        return base
    key = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return base / "runs" / f"{profile}-{key}"


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results folder: ``path``, else ``$GENPERCEPT_RESULTS`` (set by ``genpercept reproduce``), else the
    folder of the run this process set up (``set_run``: ``results/`` only for the canonical default run)."""
    if path or os.environ.get("GENPERCEPT_RESULTS"):
        return Path(path or os.environ["GENPERCEPT_RESULTS"])
    if _ACTIVE_RUN:
        return run_folder(_ACTIVE_RUN["profile"], _ACTIVE_RUN["parameters"])
    return REPO_ROOT / "results"


def git_commit() -> str:
    """The short commit of the checkout, "-dirty" when the library or the notebooks have uncommitted changes."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "genpercept_lib", "notebooks"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_label() -> str:
    """A short label of what ran this: GPU name, else CPU model and core count."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (CUDA)"
    except ImportError:  # pragma: no cover
        pass
    return f"CPU: {cpu_model_name()}, {os.cpu_count()} cores"
