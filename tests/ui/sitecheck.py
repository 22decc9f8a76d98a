"""Check the course website (build/site/, `make site`) in headless Chromium, offline, as a reader sees it.

`SiteServer` serves build/site/ on 127.0.0.1 (plus extra pages held in memory: the negative control).
`check_page` opens one page in a fresh browser context in which every request to another host is blocked and
recorded, waits for MathJax and the audio players, and returns a `PageReport` whose `problems` list is empty
when the page looks right. What "right" means for a notebook page comes from the committed notebook file
(`expected_from_notebook`), so the checks follow the notebooks as they change.
"""
from __future__ import annotations

import functools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import uilab

ROOT = uilab.ROOT
SITE = ROOT / "build" / "site"
SHOTS = ROOT / "build" / "site-shots"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

# math left as TeX source in the text: "$x$", "$$...$$"
RAW_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$\w])\$[^$\n]{1,200}\$", re.S)


# ---------------------------------------------------------------------------------------------------------
# what the committed notebook says a reader should see
# ---------------------------------------------------------------------------------------------------------

@dataclass
class PageExpect:
    images: int = 0       # image outputs (<img> in the page's cell outputs)
    audio: int = 0        # audio players
    md_tables: int = 0    # Markdown tables in text/markdown outputs
    md_cell_tables: int = 0  # Markdown cells holding a table (rendered outside the cell outputs)
    math: int = 0         # Markdown cells with $...$ math


def expected_from_notebook(path: Path) -> PageExpect:
    """Per notebook: what its committed outputs and Markdown say the page must show."""
    exp = PageExpect()
    for cell in uilab.expected_from_file(path):
        exp.images += cell.images
        exp.audio += cell.audio
        exp.md_tables += cell.md_tables
        exp.math += cell.math
    nb = json.loads(path.read_text())
    exp.md_cell_tables = sum(bool(uilab.MD_TABLE_RULE.search(uilab._text(c["source"])))
                             for c in nb["cells"] if c["cell_type"] == "markdown")
    return exp


# ---------------------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------------------

class _Handler(SimpleHTTPRequestHandler):
    extra: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - the http.server name
        path = urlsplit(self.path).path
        if path in self.extra:
            body = self.extra[path]
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # quiet: the tests report what matters
        pass


class SiteServer:
    """build/site/ over HTTP on 127.0.0.1 (a free port), in a thread; `extra` maps URL paths to pages in memory."""

    def __init__(self, root: Path = SITE):
        if not (root / "index.html").exists():
            raise FileNotFoundError(f"no website in {root}: run `make site`")
        handler = type("Handler", (_Handler,), {"extra": {}})
        self.extra = handler.extra
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "SiteServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------------------
# one page in the browser
# ---------------------------------------------------------------------------------------------------------

@dataclass
class PageReport:
    page: str
    seconds: float = 0.0
    images: int = 0
    audio: int = 0
    tables: int = 0
    math: int = 0
    blocked: list[str] = field(default_factory=list)      # requests to other hosts, refused
    console: list[str] = field(default_factory=list)      # console errors and page errors
    problems: list[str] = field(default_factory=list)
    screenshot: str = ""

    def summary(self) -> str:
        state = "ok" if not self.problems else f"{len(self.problems)} problems"
        return (f"site {self.page}: {state} in {self.seconds:.1f} s; {self.images} images, {self.audio} audio, "
                f"{self.tables} tables, {self.math} formulas")


# everything the checks read from the rendered page, in one evaluation
JS_PAGE = r"""
() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const outImgs = [...article.querySelectorAll('.cell_output img')];
  // text a reader sees as text: not the code cells' source, not scripts, not typeset math
  const skip = 'script, style, .cell_input, mjx-container, mjx-assistive-mml, .MathJax';
  const texts = [];
  const walk = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT
                                                                        : NodeFilter.FILTER_ACCEPT});
  let block = null, buf = '';
  while (walk.nextNode()) {
    const n = walk.currentNode;
    const b = n.parentElement.closest('p, pre, li, td, th, div');
    if (b !== block) { if (buf.trim()) texts.push(buf); buf = ''; block = b; }
    buf += n.textContent;
  }
  if (buf.trim()) texts.push(buf);
  const mathSpans = [...article.querySelectorAll('span.math, div.math')];
  const nav = [...document.querySelectorAll('.bd-sidebar-primary nav a.reference.internal')]
    .map(a => new URL(a.href, location.href).pathname);
  const link = (sel) => { const a = document.querySelector(sel); return a ? a.href : null; };
  return {
    title: document.title,
    images: outImgs.length,
    imagesLoaded: outImgs.filter(i => i.complete && i.naturalWidth > 0).length,
    brokenImages: outImgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src').slice(0, 80)),
    outputTables: article.querySelectorAll('.cell_output table').length,
    tables: article.querySelectorAll('table').length,
    mathTypeset: article.querySelectorAll('mjx-container').length,
    mathRaw: mathSpans.filter(s => !s.querySelector('mjx-container')).map(s => s.textContent.slice(0, 80)),
    audio: [...article.querySelectorAll('audio')].map(a => ({ready: a.readyState, error: a.error ? a.error.code : null,
      duration: a.duration})),
    texts: texts,
    nav: nav,
    prev: link('.prev-next-area a.left-prev'),
    next: link('.prev-next-area a.right-next'),
    colab: link('a.course-colab'),
    download: link('a.course-download'),
  };
}
"""

JS_SETTLED = r"""
async () => {
  if (document.querySelector('span.math, div.math')) {   // Sphinx loads MathJax only on pages with math
    const mj = window.MathJax;
    if (!(mj && mj.startup && mj.startup.promise)) return false;
    await mj.startup.promise;                            // the first typesetting pass is over
  }
  const audio = [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error);
  const imgs = [...document.images].every(i => i.complete);
  return audio && imgs;
}
"""


def _settle(page, timeout: float = 20) -> bool:
    """Wait until MathJax typeset, every audio player has its metadata or an error, every image is done."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.evaluate(JS_SETTLED):
            return True
        time.sleep(0.25)
    return False


def open_page(browser, url: str, report: PageReport):
    """A fresh context that refuses (and records) every request to a host other than this machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def route(r):
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            r.continue_()
        else:
            report.blocked.append(r.request.url[:200])
            r.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: report.console.append(f"console {m.type}: {m.text[:300]}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: report.console.append(f"page error: {str(e)[:300]}"))
    page.goto(url, wait_until="load")
    return context, page


def screenshot(page, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    return str(out)


def check_common(state: dict, report: PageReport) -> None:
    """What every page must satisfy: no blocked request, no console error, no raw table/math, bars final."""
    p = report.problems
    for url in report.blocked:
        p.append(f"a request to a non-local host was attempted (blocked): {url}")
    for line in report.console:
        p.append(f"browser {line}")
    for text in state["texts"]:
        p += uilab.text_problems(text)
        m = RAW_MATH.search(text)
        if m:
            p.append(f"math left as raw TeX in the text: {m.group(0)[:80]!r}")
    for raw in state["mathRaw"]:
        p.append(f"math not typeset by MathJax: {raw!r}")
    if state["brokenImages"]:
        p.append(f"{len(state['brokenImages'])} images did not load: {state['brokenImages'][:3]}")
    for i, a in enumerate(state["audio"]):
        if a["error"] is not None or a["ready"] < 1:
            p.append(f"audio player {i} did not load its sound (readyState {a['ready']}, error {a['error']})")
    report.images, report.audio = state["images"], len(state["audio"])
    report.tables, report.math = state["tables"], state["mathTypeset"]


def check_notebook_page(state: dict, path: Path, base: str, report: PageReport, colab: str) -> None:
    """A notebook's page against its committed file: counts, navigation, links."""
    exp = expected_from_notebook(path)
    p = report.problems
    if state["images"] != exp.images:
        p.append(f"{state['images']} figures on the page, the notebook has {exp.images} image outputs")
    if len(state["audio"]) != exp.audio:
        p.append(f"{len(state['audio'])} audio players on the page, the notebook has {exp.audio}")
    if state["outputTables"] < exp.md_tables:
        p.append(f"{exp.md_tables} Markdown tables in the notebook's outputs, {state['outputTables']} rendered as <table>")
    if state["tables"] < exp.md_tables + exp.md_cell_tables:
        p.append(f"{exp.md_tables + exp.md_cell_tables} Markdown tables in the notebook (outputs and Markdown cells), "
                 f"{state['tables']} <table> on the page")
    if exp.math and not state["mathTypeset"]:
        p.append(f"{exp.math} Markdown cells with math, nothing typeset by MathJax")
    want_nav = [f"/notebooks/{nb.stem}.html" for nb in NOTEBOOKS]
    nav = [n for n in state["nav"] if n.startswith("/notebooks/")]
    if nav != want_nav:
        p.append(f"the navigation lists {[Path(n).stem[:2] for n in nav]}, expected the ten in order "
                 f"{[Path(n).stem[:2] for n in want_nav]}")
    i = NOTEBOOKS.index(path)
    want_prev = f"{base}/notebooks/{NOTEBOOKS[i - 1].stem}.html" if i else f"{base}/index.html"
    want_next = f"{base}/notebooks/{NOTEBOOKS[i + 1].stem}.html" if i + 1 < len(NOTEBOOKS) else None
    if state["prev"] != want_prev or state["next"] != want_next:
        p.append(f"previous/next links {state['prev']} / {state['next']}, expected {want_prev} / {want_next}")
    if state["colab"] != colab:
        p.append(f"the 'Open in Colab' link is {state['colab']}, expected {colab}")
    if state["download"] != f"{base}/notebooks/{path.name}":
        p.append(f"the 'Download .ipynb' link is {state['download']}, expected {base}/notebooks/{path.name}")


def check_page(browser, url: str, name: str, notebook: Path | None = None, colab: str = "",
               shots: Path | None = SHOTS) -> PageReport:
    """Open `url`, let it settle, run the common checks (and the notebook checks when `notebook` is given)."""
    start = time.time()
    report = PageReport(name)
    context, page = open_page(browser, url, report)
    try:
        if not _settle(page):
            report.problems.append("the page did not settle in 20 s (MathJax, audio or images still loading)")
        state = page.evaluate(JS_PAGE)
        check_common(state, report)
        if notebook is not None:
            base = url.split("/notebooks/")[0]
            check_notebook_page(state, notebook, base, report, colab)
            if state["download"]:
                got = page.request.get(state["download"]).body()
                if got != notebook.read_bytes():
                    report.problems.append(f"the downloaded .ipynb differs from the committed {notebook.name}")
        if shots is not None:
            report.screenshot = screenshot(page, shots / f"{name}.png")
    finally:
        context.close()
    report.seconds = time.time() - start
    return report


def search(browser, base: str, query: str, shots: Path | None = SHOTS) -> tuple[list[str], PageReport]:
    """Sphinx's search page for `query`: the result links (paths), once the search has finished."""
    report = PageReport(f"search-{query}")
    context, page = open_page(browser, f"{base}/search.html?q={query}", report)
    try:
        page.wait_for_function("() => { const r = document.querySelector('#search-results');"
                               " return r && /Search finished|found \\d+ page|did not match/i.test(r.innerText); }",
                               timeout=20000)
        hits = page.evaluate("() => [...document.querySelectorAll('#search-results ul.search li a')]"
                             ".map(a => new URL(a.href, location.href).pathname)")
        if shots is not None:
            report.screenshot = screenshot(page, shots / f"search-{query}.png")
    finally:
        context.close()
    report.problems += [f"a request to a non-local host was attempted (blocked): {u}" for u in report.blocked]
    report.problems += [f"browser {c}" for c in report.console]
    return hits, report


# ---------------------------------------------------------------------------------------------------------
# the negative control: a notebook page with the faults each check must catch
# ---------------------------------------------------------------------------------------------------------

FAULTS = (
    '<img src="missing-figure.png" alt="a broken figure">'
    "<p>| raw | table |</p><p>|---|---|</p>"
    "<p>the formula $x^2 + y^2$ left as TeX</p>"
    "<pre>training  50%|#####     | 400/800 [00:01&lt;00:01]</pre>"
    '<audio controls src="missing-sound.wav"></audio>'
)


def negative_control(html: str, notebook: Path) -> str:
    """A copy of a notebook page with an external script, a broken figure, a raw table, raw TeX, an unfinished
    progress bar, a broken audio player, a missing table, two notebooks swapped in the navigation and no
    Colab link."""
    if '<div class="cell_output docutils container">' not in html or "</head>" not in html:
        raise ValueError(f"the page of {notebook.name} does not look like a myst-nb page: no cell output found")
    html = html.replace("</head>", '<script src="https://cdn.jsdelivr.net/npm/left-pad@1.3.0/index.js"></script>'
                                   "</head>", 1)
    html = html.replace('<div class="cell_output docutils container">',
                        '<div class="cell_output docutils container">' + FAULTS, 1)
    html = re.sub(r"<table\b.*?</table>", "<p>a table that did not render</p>", html, count=1, flags=re.S)
    first, second = NOTEBOOKS[0].stem, NOTEBOOKS[1].stem
    html = html.replace(f"{first}.html", "@@SWAP@@").replace(f"{second}.html", f"{first}.html")
    html = html.replace("@@SWAP@@", f"{second}.html")
    return html.replace('class="course-colab"', 'class="no-colab"')
