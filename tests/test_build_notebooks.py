"""scripts/build_notebooks.py through jupytext: a build gives the committed notebooks' cells unchanged.

Compares cell types and sources (not outputs, not metadata) of a fresh in-memory build from notebooks/src/ with
each committed notebooks/NN_*.ipynb; a difference means the source was edited and the notebook not rebuilt
(`make notebooks NB=NN`), or the build changed what it makes.
"""
import importlib.util
import json
import re

import nbformat
import pytest

from utils import REPO_ROOT

pytest.importorskip("jupytext", reason="jupytext is not installed (make setup installs requirements-dev.txt)")

spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "scripts" / "build_notebooks.py")
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)

SOURCES = sorted((REPO_ROOT / "notebooks" / "src").glob("*.py"))


def cells_of(nb) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem[:2] for s in SOURCES])
def test_build_gives_the_committed_cells(src):
    committed = json.loads((REPO_ROOT / "notebooks" / f"{src.stem}.ipynb").read_text())
    built = cells_of(build_notebooks.notebook_from_source(src))
    want = cells_of(committed)
    if built == want:
        return
    first = next((i for i, (a, b) in enumerate(zip(built, want)) if a != b), min(len(built), len(want)))
    pytest.fail(f"{src.name}: the build differs from notebooks/{src.stem}.ipynb from cell {first} "
                           f"({len(built)} cells built, {len(want)} committed): built "
                           f"{built[first] if first < len(built) else None!r:.300}, committed "
                           f"{want[first] if first < len(want) else None!r:.300}; rebuild with "
                           f"`make notebooks NB={src.stem[:2]}`", pytrace=False)


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem[:2] for s in SOURCES])
def test_no_code_cell_starts_with_a_markdown_heading(src):
    # a heading written as `# ## 4. ...` under `# %%` instead of `# %% [markdown]` is a comment in a code cell:
    # the section never renders
    for i, (kind, text) in enumerate(cells_of(build_notebooks.notebook_from_source(src))):
        first = next((line for line in text.splitlines() if line.strip()), "")
        assert not (kind == "code" and re.match(r"#\s*#+\s", first)), \
            f"{src.name}: code cell {i} starts with the Markdown heading {first!r}: mark the cell `# %% [markdown]`"


def test_setup_cell_follows_the_title_and_blank_cells_go(tmp_path):
    src = tmp_path / "99_demo.py"
    src.write_text("# %% [markdown]\n# # 99 · Demo\n# text\n\n# %%\nx = 1\n\n# %%\n\n# %% [markdown]\n# end\n")
    nb = build_notebooks.notebook_from_source(src)
    assert cells_of(nb) == [("markdown", "# 99 · Demo\ntext"), ("code", build_notebooks.setup_source()),
                            ("code", "x = 1"), ("markdown", "end")]
    nbformat.validate(nb)
    assert all(not c.metadata for c in nb.cells), "jupytext's layout metadata must not reach the notebook"


@pytest.mark.parametrize("stale", [False, True])
def test_a_synced_setup_cell_is_not_doubled(tmp_path, stale):
    """A source written back by `jupytext --sync` from a built notebook holds the setup cell (perhaps an older
    one): the notebook still gets the current setup cell once, in its place."""
    src = tmp_path / "99_demo.py"
    setup = build_notebooks.setup_source()
    copy = setup + "\nOLD = 1" if stale else setup
    src.write_text(f"# %% [markdown]\n# # Title\n\n# %%\n{copy}\n\n# %%\nx = 1\n")
    assert cells_of(build_notebooks.notebook_from_source(src)) == [("markdown", "# Title"), ("code", setup),
                                                                   ("code", "x = 1")]


def test_sources_hold_no_setup_cell():
    """Pairing writes the setup cell into the .py; it belongs to utils/bootstrap.py alone: delete it there."""
    first = build_notebooks.setup_source().splitlines()[0]
    holding = [s.name for s in SOURCES if first in s.read_text()]
    assert not holding, (f"{holding} hold a copy of the setup cell (written there by jupytext pairing?): delete "
                         "that cell; scripts/build_notebooks.py inserts the one of utils/bootstrap.py")


def test_sources_round_trip_through_jupytext_unchanged():
    """Saving a source from JupyterLab (jupytext) or `jupytext --sync` with the repository's jupytext.toml
    writes it back byte for byte: no header, no metadata, no reflowed blank lines."""
    import jupytext
    from jupytext.config import load_jupytext_configuration_file

    config = load_jupytext_configuration_file(str(REPO_ROOT / "jupytext.toml"))
    changed = []
    for src in SOURCES:
        text = src.read_text()
        fmt = {"extension": ".py", "format_name": "percent"}
        config.set_default_format_options(fmt)
        if jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt=fmt) != text:
            changed.append(src.name)
    assert not changed, f"jupytext would rewrite {changed} on save: keep the percent format as jupytext writes it"


@pytest.mark.parametrize("header", ["# %% solution", "# %% [markdown] solution", '# %% tags=["solution"]'])
def test_solution_cells_are_refused(tmp_path, header):
    src = tmp_path / "99_demo.py"
    src.write_text(f"# %% [markdown]\n# # Title\n\n{header}\ny = 2\n")
    with pytest.raises(ValueError, match="solutions/"):
        build_notebooks.notebook_from_source(src)


def test_the_title_must_come_first(tmp_path):
    src = tmp_path / "99_demo.py"
    src.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="Markdown title"):
        build_notebooks.notebook_from_source(src)


def test_command_line_selects_by_number():
    assert [p.stem[:2] for p in build_notebooks.selected(["02", "09"])] == ["02", "09"]
    assert build_notebooks.selected([]) == SOURCES
    with pytest.raises(SystemExit, match="99"):
        build_notebooks.selected(["99"])


def test_pages_url_follows_the_repository():
    assert build_notebooks.pages_url("https://github.com/Some-Org/my-course") == "https://some-org.github.io/my-course/"
    assert build_notebooks.pages_url("https://github.com/a/b.git/") == "https://a.github.io/b/"
    with pytest.raises(ValueError, match="REPO_URL"):
        build_notebooks.pages_url("https://gitlab.com/a/b")


def test_readme_links_follow_repo_url():
    """The README's badges and website link are what the build writes for REPO_URL, and follow a fork's URL."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert build_notebooks.readme_with_links(readme, build_notebooks.repo_url()) == readme, \
        "run `python scripts/build_notebooks.py` to point the README's links at REPO_URL"
    assert f"[The course website]({build_notebooks.pages_url()})" in readme
    fork = build_notebooks.readme_with_links(readme, "https://github.com/someone/fork")
    assert "[The course website](https://someone.github.io/fork/)" in fork
    assert "colab.research.google.com/github/someone/fork/blob/main/notebooks/01_" in fork
