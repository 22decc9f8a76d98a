"""site/build_site.py without Sphinx: the landing page's table from the README, what a notebook page adds to the
committed notebook (and nothing else), and MathJax's hash check. The built site itself is checked in a browser
by tests/ui/test_site.py."""
import copy
import importlib.util
import json

import pytest

from utils import REPO_ROOT

spec = importlib.util.spec_from_file_location("build_site", REPO_ROOT / "site" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_site)

README = (REPO_ROOT / "README.md").read_text()
NB09 = next(p for p in build_site.NOTEBOOKS if p.name.startswith("09"))


def test_landing_table_takes_the_readme_rows():
    rows = build_site.readme_rows(README)
    assert [r[0] for r in rows] == [p.name[:2] for p in build_site.NOTEBOOKS]
    table = build_site.notebook_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and table[0].startswith("| # | notebook | what it teaches | time")
    for row, line in zip(rows, table[2:]):
        assert f"| {row[3]} |" in line and "colab-badge" not in line  # the time kept, the badge left out
    with pytest.raises(ValueError, match="columns"):
        build_site.readme_rows("| 01 | [a](b) | only three |")


def test_landing_page_fills_every_placeholder():
    page = build_site.landing_page((REPO_ROOT / "site" / "index.md").read_text(), README)
    assert "{{" not in page and f"git clone {build_site.repo_url()}" in page
    assert "\n".join(f"notebooks/{p.stem}" for p in build_site.NOTEBOOKS) in page
    with pytest.raises(ValueError, match="placeholders"):
        build_site.landing_page("{{ nothing_fills_this }}", README)


def test_a_notebook_page_adds_links_folds_setup_and_explains_sliders():
    nb = json.loads(NB09.read_text())
    setup = (REPO_ROOT / "utils" / "bootstrap.py").read_text().strip()
    page = build_site.stage_notebook(copy.deepcopy(nb), NB09.name, "owner/repo", setup)
    assert len(page["cells"]) == len(nb["cells"]) + 1
    links = page["cells"][1]["source"]
    assert f'href="https://colab.research.google.com/github/owner/repo/blob/main/notebooks/{NB09.name}"' in links
    assert f'href="{NB09.name}" download' in links
    assert page["cells"][2]["metadata"]["tags"] == ["hide-input"]
    notes = [o["data"]["text/markdown"] for c in page["cells"] if c["cell_type"] == "code" for o in c["outputs"]
             if "Interactive: the sliders" in o.get("data", {}).get("text/markdown", "")]
    assert notes == ["*Interactive: the sliders (window_ms, stride_ms, mel_bins) move the figure above when this "
                     "notebook runs in Jupyter or Colab; here it shows as it was saved.*"]
    assert "widgets" not in page["metadata"]
    # everything else as committed: every other output, in order
    kept = [c for i, c in enumerate(page["cells"]) if i != 1]
    for before, after in zip(nb["cells"], kept):
        assert before["source"] == after["source"]
        widget = build_site.WIDGET_VIEW
        assert [o for o in before.get("outputs", []) if widget not in o.get("data", {})] == \
               [o for o in after.get("outputs", []) if "Interactive: the sliders" not in str(o.get("data", {}))]


def test_mathjax_download_is_hash_checked(tmp_path):
    fake = tmp_path / "mathjax.tgz"
    fake.write_bytes(b"not the tarball")
    with pytest.raises(ValueError, match="sha512 mismatch"):
        build_site.fetch_mathjax(fake.as_uri(), tmp_path / "mathjax")
    assert not (tmp_path / "mathjax").exists()


def test_sphinx_refuses_to_empty_a_folder_that_is_not_a_site(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        build_site.sphinx(tmp_path / "src", tmp_path)
    assert (tmp_path / "precious.txt").exists()
