"""Build the course website, build/site/, from the committed executed notebooks: never executed, offline.

1. MathJax 3 comes from the npm registry once (hash-checked) into .cache/ (`--fetch-mathjax`, which `make site`
   runs first); the build itself reads no network.
2. build/site-src/ is staged: the landing page (site/index.md with the README's notebook table filled in), each
   committed notebook with three additions of ours (a line of links after its title: open in Colab, download
   the .ipynb; the setup cell folded; a line under a slider figure saying that the sliders run in Jupyter or
   Colab), the committed .ipynb files byte for byte for the download links, site/_static and MathJax.
3. Sphinx (site/conf.py: myst-nb, sphinx-book-theme) writes build/site/.

Usage: python site/build_site.py [--fetch-mathjax] [--out DIR]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
STAGE = ROOT / "build" / "site-src"
OUT = ROOT / "build" / "site"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

MATHJAX_VERSION = "3.2.2"
MATHJAX_URL = f"https://registry.npmjs.org/mathjax/-/mathjax-{MATHJAX_VERSION}.tgz"
# the registry's dist.integrity of that tarball
MATHJAX_SHA512 = "Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
# the one component (TeX input with every extension, so nothing is autoloaded later) and its fonts
MATHJAX_KEEP = ("package/LICENSE", "package/es5/tex-chtml-full.js", "package/es5/output/chtml/fonts/woff-v2/")
MATHJAX_DIR = ROOT / ".cache" / f"mathjax-{MATHJAX_VERSION}"

COLAB = "https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def repo_url() -> str:
    """REPO_URL of utils/bootstrap.py: the one place the repository address is written by hand."""
    ns: dict = {}
    source = (ROOT / "utils" / "bootstrap.py").read_text()
    exec(compile(source.split("IN_COLAB =")[0], "bootstrap", "exec"), ns)
    return ns["REPO_URL"]


# ---------------------------------------------------------------------------------------------------------
# MathJax from the npm registry
# ---------------------------------------------------------------------------------------------------------

def fetch_mathjax(url: str = MATHJAX_URL, dest: Path = MATHJAX_DIR) -> Path:
    """Download MathJax's npm tarball once, check its sha512, keep its TeX component and fonts in `dest`."""
    if (dest / "es5" / "tex-chtml-full.js").exists():
        return dest
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != MATHJAX_SHA512:
        raise ValueError(f"sha512 mismatch for {url}: got {digest}, expected {MATHJAX_SHA512}")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(MATHJAX_KEEP):
                target = tmp / member.name.removeprefix("package/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# ---------------------------------------------------------------------------------------------------------
# the landing page
# ---------------------------------------------------------------------------------------------------------

def readme_rows(readme: str) -> list[list[str]]:
    """The rows of the README's notebook table: number, notebook link, what it teaches, time, trains, Colab."""
    rows = []
    for line in readme.splitlines():
        if re.match(r"^\| \d\d \| \[", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if len(cells) != 6:
                raise ValueError(f"README notebook row has {len(cells)} columns, expected 6: {line[:80]!r}")
            rows.append(cells)
    numbers = [r[0] for r in rows]
    expected = [p.name[:2] for p in NOTEBOOKS]
    if numbers != expected:
        raise ValueError(f"README's notebook table lists {numbers}, notebooks/ holds {expected}")
    return rows


def notebook_table(rows: list[list[str]]) -> str:
    """The landing page's table: the README's rows with links to this site's pages instead of the files."""
    out = ["| # | notebook | what it teaches | time (2-core CPU) | trains |", "|---|---|---|---|---|"]
    for number, link, teaches, seconds, trains, _colab in rows:
        out.append(f"| {number} | {link} | {teaches} | {seconds} | {trains} |")
    return "\n".join(out)


def landing_page(template: str, readme: str) -> str:
    """site/index.md with its placeholders filled: the notebook table, the clone address, the page list."""
    url = repo_url()
    fills = {"notebook_table": notebook_table(readme_rows(readme)), "repo_url": url,
             "repo_name": url.rstrip("/").rsplit("/", 1)[-1],
             "toctree": "\n".join(f"notebooks/{p.stem}" for p in NOTEBOOKS)}
    for key, value in fills.items():
        template = template.replace("{{ " + key + " }}", value)
    left = re.findall(r"\{\{ \w+ \}\}", template)
    if left:
        raise ValueError(f"site/index.md has placeholders build_site does not fill: {left}")
    return template


# ---------------------------------------------------------------------------------------------------------
# the notebooks as pages
# ---------------------------------------------------------------------------------------------------------

def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def links_cell(name: str, owner_repo: str) -> dict:
    """The line under a notebook's title: open it in Colab, download the committed .ipynb."""
    colab = COLAB.format(owner_repo=owner_repo, name=name)
    html = (f'<p class="course-links"><a class="course-colab" href="{colab}">Open in Colab</a> · '
            f'<a class="course-download" href="{name}" download="{name}">Download {name}</a> · '
            'run it on your machine: <a href="../index.html#run-it-yourself">make lab</a></p>')
    return {"cell_type": "markdown", "id": "course-links", "metadata": {}, "source": html}


def slider_names(model_id: str, models: dict, seen: set | None = None) -> list[str]:
    """The descriptions of the sliders under a widget model (an `interact` is a box of sliders), in order."""
    seen = seen if seen is not None else set()
    if model_id in seen or model_id not in models:
        return []
    seen.add(model_id)
    state = models[model_id].get("state", {})
    names = [state.get("description", "")] if "Slider" in models[model_id].get("model_name", "") else []
    for child in state.get("children", []) or []:
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            names += slider_names(child.removeprefix("IPY_MODEL_"), models, seen)
    return names


def slider_note(output: dict, models: dict) -> dict:
    """A widget's output replaced by one line: the figure above is the committed one; sliders run in Jupyter."""
    view = output["data"][WIDGET_VIEW]
    names = [n for n in slider_names(view.get("model_id", ""), models) if n]
    which = f" ({', '.join(names)})" if names else ""
    text = (f"*Interactive: the sliders{which} move the figure above when this notebook runs in Jupyter or "
            "Colab; here it shows as it was saved.*")
    return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": text, "text/plain": text}}


def stage_notebook(nb: dict, name: str, owner_repo: str, setup: str) -> dict:
    """The committed notebook with our additions for the web page; its outputs are otherwise untouched."""
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {}) if isinstance(state, dict) else {}
    cells = []
    for i, cell in enumerate(nb["cells"]):
        cell = dict(cell)
        if cell["cell_type"] == "code":
            if _text(cell["source"]).strip() == setup:
                cell["metadata"] = {**cell.get("metadata", {}), "tags": ["hide-input"]}
            cell["outputs"] = [slider_note(o, models) if WIDGET_VIEW in o.get("data", {}) else o
                               for o in cell.get("outputs", [])]
        cells.append(cell)
        if i == 0:
            cells.append(links_cell(name, owner_repo))
    metadata = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}
    return {**nb, "cells": cells, "metadata": metadata}


def stage() -> Path:
    """Write the Sphinx sources into build/site-src/ (site/conf.py reads its static and extra files there):
    landing page, notebooks, the original notebooks, static files and MathJax."""
    dest = STAGE
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "notebooks").mkdir(parents=True)
    (dest / "_extra" / "notebooks").mkdir(parents=True)
    (dest / "index.md").write_text(landing_page((SITE / "index.md").read_text(), (ROOT / "README.md").read_text()))
    owner_repo = repo_url().removeprefix("https://github.com/")
    setup = (ROOT / "utils" / "bootstrap.py").read_text().strip()
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        page = stage_notebook(nb, path.name, owner_repo, setup)
        (dest / "notebooks" / path.name).write_text(json.dumps(page, ensure_ascii=False))
        shutil.copy2(path, dest / "_extra" / "notebooks" / path.name)
    shutil.copytree(SITE / "_static", dest / "_static")
    if not (MATHJAX_DIR / "es5" / "tex-chtml-full.js").exists():
        raise FileNotFoundError(f"MathJax is not in {MATHJAX_DIR}: run `python site/build_site.py --fetch-mathjax` "
                                "once (make site does), from a machine that reaches the npm registry")
    shutil.copytree(MATHJAX_DIR / "es5", dest / "_static" / "mathjax")
    shutil.copy2(MATHJAX_DIR / "LICENSE", dest / "_static" / "mathjax" / "LICENSE")
    return dest


def sphinx(src: Path, out: Path = OUT) -> None:
    """Run Sphinx with site/conf.py into `out` (emptied first); warnings are printed, errors stop the build."""
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():
        raise ValueError(f"--out {out} is not empty and not an earlier site build (no .buildinfo): refusing to "
                         "delete it; choose an empty or new folder")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(SITE), "-d", str(src.parent / "site-doctrees"),
           "-E", str(src), str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch-mathjax", action="store_true", help="only download MathJax into .cache/ (once)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the site goes (default build/site)")
    args = parser.parse_args(argv)
    if args.fetch_mathjax:
        print("MathJax in", fetch_mathjax().relative_to(ROOT))
        return
    start = time.time()
    sphinx(stage(), args.out)
    print(f"site built in {time.time() - start:.0f} s: {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
