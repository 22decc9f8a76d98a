"""The notebooks' setup cell (utils/bootstrap.py), run as a cell would be, with Colab simulated."""
import json
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path


from utils import REPO_ROOT

SOURCE = (REPO_ROOT / "utils" / "bootstrap.py").read_text()


def run_cell(monkeypatch, cwd: Path, colab: bool, calls: list):
    monkeypatch.chdir(cwd)
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"]:  # a clone of this repository, made by copying its two needed files
            dest = Path(cmd[-1])
            (dest / "utils").mkdir(parents=True)
            (dest / "utils" / "__init__.py").write_text("")
            (dest / "requirements.txt").write_text((REPO_ROOT / "requirements.txt").read_text())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = {}
    exec(compile(SOURCE, "bootstrap", "exec"), namespace)
    return namespace


def test_local_only_adds_repo_root(monkeypatch):
    calls = []
    ns = run_cell(monkeypatch, REPO_ROOT / "notebooks", colab=False, calls=calls)
    assert calls == [] and ns["ROOT"] == REPO_ROOT and str(REPO_ROOT) in sys.path


def test_colab_clones_installs_missing_without_torch_and_chdirs(monkeypatch, tmp_path):
    calls = []
    ns = run_cell(monkeypatch, tmp_path, colab=True, calls=calls)
    clone = tmp_path / ns["REPO_DIR"]
    assert calls[0] == ["git", "clone", "--depth", "1", ns["REPO_URL"], str(clone)]
    assert Path.cwd() == clone and ns["ROOT"] == clone
    installs = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(installs) <= 1
    flat = " ".join(installs[0]) if installs else ""
    assert "torch" not in flat  # never reinstall Colab's torch, torchvision or torchaudio
    # a second run of the cell inside the clone neither clones again nor nests a clone
    calls.clear()
    run_cell(monkeypatch, clone, colab=True, calls=calls)
    assert not any(c[:2] == ["git", "clone"] for c in calls)


def test_missing_requirements_keeps_colab_versions(monkeypatch):
    ns = {}
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(SOURCE.split("IN_COLAB =")[0], "bootstrap", "exec"), ns)
    installed = {"numpy": "1.0", "transformers": "4.0"}

    def version_of(name):
        if name in installed:
            return installed[name]
        raise metadata.PackageNotFoundError(name)

    lines = ["torch==2.11.0", "numpy==2.4.6", "transformers==5.24.0", "soundfile==0.14.0  # comment", "", "# x"]
    assert ns["missing_requirements"](lines, version_of) == ["soundfile==0.14.0"]


def test_repo_url_is_written_once():
    """The URL is set in utils/bootstrap.py alone; the README's badges and notebooks are generated from it."""
    ns = {}
    exec(compile(SOURCE.split("IN_COLAB =")[0], "bootstrap", "exec"), ns)
    owner_repo = ns["REPO_URL"].removeprefix("https://github.com/")
    generated = {"README.md"}
    hits = [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.rglob("*")
            if p.is_file() and p.suffix in {".py", ".md", ".txt", ".yml", ".cfg", ".toml"}
            and not {".venv", "build", ".git"} & set(p.parts) and owner_repo in p.read_text(errors="ignore")]
    assert sorted(set(hits) - generated) == ["utils/bootstrap.py"]


def test_every_notebook_starts_with_the_setup_cell():
    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert "".join(cells[0]["source"]).strip() == SOURCE.strip(), f"{nb.name}: rebuild with scripts/build_notebooks.py"
