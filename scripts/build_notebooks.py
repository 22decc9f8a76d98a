"""Build notebooks/NN_name.ipynb from the percent-format sources notebooks/src/NN_name.py, through jupytext.

jupytext reads the sources and writes the notebooks; what is ours is only this: the setup cell of
utils/bootstrap.py goes in after the title, blank code cells are dropped, cells marked "solution" are refused,
and the README's Colab badges and website link follow REPO_URL. Outputs are not kept here: run
`make notebooks` (this script, then scripts/run_notebooks.py --inplace) to commit them run.
Usage: python scripts/build_notebooks.py [NN ...]
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks" / "src"
METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}}
# what jupytext records in a cell's metadata only to write the text file back the same way
JUPYTEXT_LAYOUT_KEYS = ("cell_marker", "lines_to_next_cell", "lines_to_end_of_cell_marker", "skipline", "noskipline")


def setup_source() -> str:
    """The shared setup cell, exactly as utils/bootstrap.py has it."""
    return (ROOT / "utils" / "bootstrap.py").read_text().strip("\n")


def refuse_solutions(cells: list) -> None:
    """A `# %% ... solution ...` header is refused: Colab shows hidden cells and Run All would run them."""
    for i, cell in enumerate(cells):
        header = json.dumps(dict(cell.metadata)).lower()
        if "solution" in header:
            raise ValueError(f"cell {i} is marked 'solution' ({header}): solution cells are not allowed in "
                             "notebooks: put the reference in solutions/")


def parse_percent(text: str) -> list:
    """The cells of a percent-format text (`# %%`, `# %% [markdown]`), read by jupytext.

    Blank code cells are dropped, jupytext's layout-only cell metadata is removed, and a cell marked
    "solution" raises ValueError.
    """
    cells = jupytext.reads(text, fmt="py:percent").cells
    refuse_solutions(cells)
    kept = []
    for cell in cells:
        if cell.cell_type == "code" and not cell.source.strip():
            continue
        for key in JUPYTEXT_LAYOUT_KEYS:
            cell.metadata.pop(key, None)
        kept.append(cell)
    return kept


def is_setup_cell(cell) -> bool:
    """A copy of the setup cell (this one or an older one: the same first line) inside a source.

    A source synced back from a built notebook (jupytext pairing) holds the setup cell: it is ours, not the
    source's, so the build takes it out and puts the current one in its place.
    """
    return cell.cell_type == "code" and cell.source.startswith(setup_source().splitlines()[0])


def notebook_from_source(src: Path) -> nbformat.NotebookNode:
    """The notebook of one source: its title cell, the setup cell, then the rest of its cells."""
    setup = setup_source()
    cells = [c for c in parse_percent(src.read_text()) if not is_setup_cell(c)]
    if not cells or cells[0].cell_type != "markdown":
        raise ValueError(f"{src.name}: the first cell must be the Markdown title, found "
                         f"{cells[0].cell_type if cells else 'no cells'}")
    nb = nbformat.v4.new_notebook(metadata=json.loads(json.dumps(METADATA)))
    nb.cells = [nbformat.v4.new_markdown_cell(cells[0].source, metadata=cells[0].metadata),
                nbformat.v4.new_code_cell(setup)]
    for cell in cells[1:]:
        make = nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(cell.source, metadata=cell.metadata))
    return nb


def build(src: Path) -> Path:
    """Write notebooks/<src.stem>.ipynb (no outputs) through jupytext and return its path."""
    out = ROOT / "notebooks" / f"{src.stem}.ipynb"
    jupytext.write(notebook_from_source(src), out, fmt="ipynb")
    return out


def repo_url() -> str:
    ns: dict = {}
    source = (ROOT / "utils" / "bootstrap.py").read_text()
    exec(compile(source.split("IN_COLAB =")[0], "bootstrap", "exec"), ns)
    return ns["REPO_URL"]


def pages_url(url: str | None = None) -> str:
    """The course website's address on GitHub Pages for a repository address: https://OWNER.github.io/NAME/."""
    url = (url or repo_url()).rstrip("/").removesuffix(".git")
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if not match:
        raise ValueError(f"REPO_URL must look like https://github.com/OWNER/NAME, got {url!r}")
    owner, name = match.groups()
    return f"https://{owner.lower()}.github.io/{name}/"


def readme_with_links(text: str, url: str) -> str:
    """The README's text with its Colab badges, clone command and website link pointing at repository `url`."""
    owner_repo = url.removeprefix("https://github.com/")
    text = re.sub(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/",
                  f"colab.research.google.com/github/{owner_repo}/blob/", text)
    text = re.sub(r"git clone https://github\.com/\S+", f"git clone {url}", text)
    # the website link: a Markdown link whose text names the website
    return re.sub(r"(\[[^\]]*website[^\]]*\]\()https://[\w.-]+\.github\.io/[\w.-]+/(\))",
                  lambda m: m.group(1) + pages_url(url) + m.group(2), text)


def update_readme_badges() -> None:
    """Point the README's Colab badges and website link at REPO_URL (the one place the URL is written by hand)."""
    readme = ROOT / "README.md"
    readme.write_text(readme_with_links(readme.read_text(), repo_url()))


def selected(wanted: list[str]) -> list[Path]:
    """The sources whose names start with one of `wanted` (all of them when it is empty)."""
    sources = sorted(SOURCES.glob("*.py"))
    for w in wanted:
        if not any(src.stem.startswith(w) for src in sources):
            raise SystemExit(f"no notebooks/src/{w}*.py: give notebook numbers such as 02 (found "
                             f"{', '.join(s.stem[:2] for s in sources)})")
    return [src for src in sources if not wanted or any(src.stem.startswith(w) for w in wanted)]


def main(argv: list[str]) -> None:
    update_readme_badges()
    for src in selected(argv):
        print("built", build(src).relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1:])
