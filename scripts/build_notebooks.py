"""Build notebooks/NN_name.ipynb from the percent-format sources notebooks/src/NN_name.py.

Every notebook gets the setup cell of utils/bootstrap.py first. Outputs are not kept here: run
`make notebooks` (this script, then `make run`, then copying the executed notebooks back) to commit them run.
Usage: python scripts/build_notebooks.py [NN ...]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def parse_percent(text: str) -> list:
    """Split a `# %%` / `# %% [markdown]` file into notebook cells."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            if "solution" in line:  # Colab shows hidden cells and Run All would run them over the student's work
                raise ValueError("solution cells are not allowed in notebooks: put the reference in solutions/")
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(src: Path) -> Path:
    setup = (ROOT / "utils" / "bootstrap.py").read_text().strip("\n")
    nb = nbformat.v4.new_notebook()
    cells = parse_percent(src.read_text())
    # the title (first markdown cell) stays first, the setup cell follows it
    nb.cells = cells[:1] + [nbformat.v4.new_code_cell(setup)] + cells[1:]
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    out = ROOT / "notebooks" / f"{src.stem}.ipynb"
    nbformat.write(nb, out)
    return out


def repo_url() -> str:
    ns: dict = {}
    source = (ROOT / "utils" / "bootstrap.py").read_text()
    exec(compile(source.split("IN_COLAB =")[0], "bootstrap", "exec"), ns)
    return ns["REPO_URL"]


def update_readme_badges() -> None:
    """Point the README's Colab badges at REPO_URL (the one place the URL is written by hand)."""
    readme = ROOT / "README.md"
    owner_repo = repo_url().removeprefix("https://github.com/")
    text = re.sub(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/",
                  f"colab.research.google.com/github/{owner_repo}/blob/", readme.read_text())
    text = re.sub(r"git clone https://github\.com/\S+", f"git clone {repo_url()}", text)
    readme.write_text(text)


if __name__ == "__main__":
    update_readme_badges()
    wanted = sys.argv[1:]
    for src in sorted((ROOT / "notebooks" / "src").glob("*.py")):
        if not wanted or any(src.stem.startswith(w) for w in wanted):
            print("built", build(src).relative_to(ROOT))
