"""The course website (build/site/, `make site`) in headless Chromium, with every non-local request blocked.

For every notebook page (new notebooks are picked up by the glob): no console error and no request to another
host; as many figures as the committed notebook has image outputs, all loaded; every Markdown table a <table>,
none left as raw pipes; the math typeset by the vendored MathJax (no raw $...$ left); every audio player loads;
progress bars at their final state; the navigation lists the ten notebooks in order, previous/next links follow
it; the "Open in Colab" and "Download .ipynb" links (the download is the committed file, byte for byte). The
landing page, and search ("Perceiver" finds notebook 08). A negative control page (an external script, a
broken figure, a raw table, raw TeX, a broken audio player...) proves that each check can fail.
Screenshots of every page go to build/site-shots/ with report.md.

The site is rebuilt first when it is missing or older than the notebooks, the README or site/ (Sphinx needed:
`make site` installs it); `make ui-test` builds it before running these tests.
"""
from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import sitecheck

ROOT = sitecheck.ROOT
NOTEBOOKS = sitecheck.NOTEBOOKS
_reports: list[sitecheck.PageReport] = []


def _inputs() -> list[Path]:
    return [*NOTEBOOKS, ROOT / "README.md", ROOT / "utils" / "bootstrap.py",
            *[p for p in (ROOT / "site").rglob("*") if p.is_file() and "__pycache__" not in p.parts]]


def _stale() -> str | None:
    index = sitecheck.SITE / "index.html"
    if not index.exists():
        return "missing"
    newer = [p.relative_to(ROOT).as_posix() for p in _inputs() if p.stat().st_mtime > index.stat().st_mtime]
    return f"older than {newer[:3]}" if newer else None


@pytest.fixture(scope="session")
def site_dir():
    """build/site/, rebuilt with site/build_site.py when it is missing or stale."""
    why = _stale()
    if why:
        try:
            import myst_nb  # noqa: F401
        except ImportError:
            pytest.skip(f"site tests skipped: build/site is {why} and Sphinx/myst-nb are not installed "
                        "(make site installs requirements-site.txt and builds it)")
        subprocess.run([sys.executable, str(ROOT / "site" / "build_site.py")], check=True, cwd=ROOT)
    return sitecheck.SITE


@pytest.fixture(scope="session")
def site(site_dir):
    """The site over HTTP on 127.0.0.1; at the end build/site-shots/report.md lists every page's result."""
    sitecheck.SHOTS.mkdir(parents=True, exist_ok=True)
    with sitecheck.SiteServer(site_dir) as server:
        yield server
    (sitecheck.SHOTS / "report.md").write_text(
        "".join(f"- {r.summary()}\n" + "".join(f"  - {p}\n" for p in r.problems) for r in _reports))


def _fail_if_problems(report: sitecheck.PageReport) -> None:
    _reports.append(report)
    assert not report.problems, f"{report.summary()}\n" + "\n".join(f"- {p}" for p in report.problems)


def _colab(path: Path) -> str:
    sys.path.insert(0, str(ROOT / "site"))
    import build_site
    return build_site.COLAB.format(owner_repo=build_site.repo_url().removeprefix("https://github.com/"),
                                   name=path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_page(path, browser, site):
    report = sitecheck.check_page(browser, f"{site.base}/notebooks/{path.stem}.html", path.stem, notebook=path,
                                  colab=_colab(path))
    _fail_if_problems(report)


def test_landing_page(browser, site):
    report = sitecheck.check_page(browser, f"{site.base}/index.html", "index")
    html = (sitecheck.SITE / "index.html").read_text()
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        if f'href="notebooks/{path.stem}.html"' not in html:
            report.problems.append(f"the landing page does not link {path.stem}")
        row = re.search(rf"^\| {path.name[:2]} \|.*?\| (\d+ s) \|", readme, re.M)
        if row and not re.search(rf"<td[^>]*><p>{row.group(1)}</p></td>|<td[^>]*>{row.group(1)}</td>", html):
            report.problems.append(f"the landing page lacks notebook {path.name[:2]}'s time {row.group(1)!r}")
    for heading in ("The notebooks", "Run it yourself", "The lecture, notebook by notebook"):
        if heading not in html:
            report.problems.append(f"the landing page has no section {heading!r}")
    _fail_if_problems(report)


def test_search_finds_perceiver_in_08(browser, site):
    hits, report = sitecheck.search(browser, site.base, "Perceiver")
    want = next(p for p in NOTEBOOKS if p.name.startswith("08"))
    if f"/notebooks/{want.stem}.html" not in hits:
        report.problems.append(f"searching 'Perceiver' found {hits}, not notebook 08's page")
    _fail_if_problems(report)


class _Assets(HTMLParser):
    """Every URL a page loads by itself: scripts, stylesheets, images, media, frames."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "audio", "video", "source", "iframe", "embed") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href") and {"stylesheet", "preload", "icon", "modulepreload"} & set(
                (a.get("rel") or "").split()):
            self.urls.append(a["href"])


def test_every_asset_is_inside_the_site(site_dir):
    """Offline: no page of build/site/ loads a script, style, image or sound from another host."""
    external = []
    for page in sorted(site_dir.rglob("*.html")):
        parser = _Assets()
        parser.feed(page.read_text(errors="replace"))
        external += [f"{page.relative_to(site_dir)}: {u[:100]}" for u in parser.urls
                     if urlsplit(u).scheme in ("http", "https") or u.startswith("//")]
    assert not external, "pages load assets from other hosts:\n" + "\n".join(external[:20])
    assert list((site_dir / "_static" / "mathjax").glob("tex-chtml-full.js")), "MathJax is not vendored"


def test_negative_control_is_caught(browser, site):
    """Each check fails on a page made to fail it (a copy of notebook 09's page with faults added)."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("09"))
    html = (sitecheck.SITE / "notebooks" / f"{path.stem}.html").read_text()
    site.extra["/notebooks/zz_negative_control.html"] = sitecheck.negative_control(html, path).encode()
    report = sitecheck.check_page(browser, f"{site.base}/notebooks/zz_negative_control.html", "negative_control",
                                  notebook=path, colab=_colab(path))
    _reports.append(report)
    text = "\n".join(report.problems)
    expected = {
        "external script blocked": "non-local host was attempted",
        "console error": "browser console error",
        "figure count": "figures on the page",
        "broken figure": "images did not load",
        "raw table": "Markdown table shown as raw text",
        "table not rendered": "rendered as <table>",
        "raw math": "raw TeX",
        "unfinished progress bar": "progress bar not in its final state",
        "broken audio": "did not load its sound",
        "audio count": "audio players on the page",
        "navigation order": "the navigation lists",
        "Colab link": "'Open in Colab' link",
    }
    missed = [name for name, needle in expected.items() if needle not in text]
    assert not missed, f"the negative control was not caught for {missed}; the checks reported:\n{text}"
