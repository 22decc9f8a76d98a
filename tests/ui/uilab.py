"""Drive notebooks in a real JupyterLab in headless Chromium and report what a student would see.

`LabServer` starts JupyterLab from this environment on 127.0.0.1 (a token, throw-away settings and
workspaces, notebook windowing off, autosave off so the committed notebooks are never written).
`check_notebook` opens one notebook in a fresh page and a fresh kernel, runs it (Run > Run All Cells from the
menu) or only renders its committed outputs, and returns a `Report` whose `problems` list is empty when the
notebook looks right. What "right" means is derived from the notebook file itself (`expected_from_file`), so
the checks follow the notebooks as they are edited.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# what JupyterLab renders for stderr: tracebacks, warnings, anything written to sys.stderr
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
# a Markdown table separator row, e.g. "|---|---|" or "| :-- | --: |"
MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)
# the same rule anywhere in a line: also a table echoed as a Python string ('| a | b |\\n|---|---|...')
RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
# a tqdm bar as text: "training:  37%|###7      | 300/800 [...]"
TQDM_TEXT = re.compile(r"(\d{1,3})%\|[^|\n]*\|\s*(\d+)/(\d+)")
# a markdown cell with inline or display math
MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$[^$\n]+\$", re.S)


def text_problems(text: str) -> list[str]:
    """What a student should never see in shown text: a Markdown table left as raw pipes, a progress bar short
    of its total (used by the notebook checks here and the site checks in sitecheck.py)."""
    out = []
    if RAW_TABLE.search(text):
        out.append(f"a Markdown table shown as raw text ({text.strip()[:80]!r}...)")
    for m in TQDM_TEXT.finditer(text):
        pct, n, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if pct < 100 or n < total:
            out.append(f"a progress bar not in its final state: {m.group(0)!r}")
    return out


def find_browser() -> str | None:
    """The system Chromium (playwright drives it via executable_path); $CHROMIUM overrides."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSERS:
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


# ---------------------------------------------------------------------------------------------------------
# what the notebook file says a student should see
# ---------------------------------------------------------------------------------------------------------

def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _widget_models(nb: dict) -> dict:
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return state.get("state", {}) if isinstance(state, dict) else {}


def _slider_count(model_id: str, models: dict, seen: set | None = None) -> int:
    """Sliders reachable from a widget model through its children (an `interact` is a VBox of sliders)."""
    seen = seen if seen is not None else set()
    if model_id in seen or model_id not in models:
        return 0
    seen.add(model_id)
    model = models[model_id]
    n = 1 if "Slider" in model.get("model_name", "") else 0
    children = model.get("state", {}).get("children", [])
    for child in children if isinstance(children, list) else []:
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            n += _slider_count(child[len("IPY_MODEL_"):], models, seen)
    return n


@dataclass
class CellExpect:
    index: int                 # position among all cells
    code: bool
    execution_count: int | None = None
    images: int = 0            # image outputs (outside widgets)
    audio: int = 0             # <audio> players or audio/* outputs
    md_tables: int = 0         # text/markdown outputs holding a Markdown table
    sliders: int = 0           # sliders in the cell's widget outputs
    math: bool = False         # a markdown cell with $...$ math


def expected_from_file(path: Path) -> list[CellExpect]:
    """Per cell: what its committed outputs (or Markdown source) say should be on screen."""
    nb = json.loads(path.read_text())
    models = _widget_models(nb)
    cells = []
    for i, cell in enumerate(nb["cells"]):
        exp = CellExpect(i, cell["cell_type"] == "code")
        if cell["cell_type"] == "markdown":
            exp.math = bool(MATH.search(_text(cell["source"])))
        if exp.code:
            exp.execution_count = cell.get("execution_count")
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if any(k.startswith("image/") for k in data):
                    exp.images += 1
                if any(k.startswith("audio/") for k in data) or "<audio" in _text(data.get("text/html")):
                    exp.audio += 1
                if MD_TABLE_RULE.search(_text(data.get("text/markdown"))):
                    exp.md_tables += 1
                view = data.get("application/vnd.jupyter.widget-view+json")
                if view:
                    n = _slider_count(view.get("model_id", ""), models)
                    if not models:  # no saved widget state: read the repr, e.g. "interactive(children=(FloatSlider(..."
                        n = len(re.findall(r"\b\w*Slider\(", _text(data.get("text/plain"))))
                    exp.sliders += n
        cells.append(exp)
    return cells


def recorded_seconds(path: Path) -> float | None:
    """The notebook's wall time when it was last executed, from nbclient's per-cell timing metadata."""
    nb = json.loads(path.read_text())
    stamps = []
    for cell in nb["cells"]:
        ex = cell.get("metadata", {}).get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in ex:
                stamps.append(datetime.fromisoformat(ex[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if len(stamps) >= 2 else None


# ---------------------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------------------

LAB_SETTINGS = {
    # render every cell: JupyterLab 4 windows long notebooks, off-screen outputs are not rendered
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # never write the committed notebooks back
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # no news or update pop-ups over the notebook
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """JupyterLab on 127.0.0.1 with a token, throw-away settings/workspaces/runtime dirs, root = repository."""

    def __init__(self, workdir: Path, root: Path = ROOT, settings: dict | None = None):
        self.root = root
        self.settings = {**LAB_SETTINGS, **(settings or {})}
        self.workdir = workdir
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        settings = self.workdir / "settings"
        for rel, value in self.settings.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        env = dict(os.environ)
        env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(self.workdir / "workspaces"),
                   JUPYTER_CONFIG_DIR=str(self.workdir / "config"), JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
                   HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "1"), PYTHONHASHSEED="0")
        env.pop("COURSE_RESULTS_DIR", None)  # kernels must not overwrite build/results from `make run`
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the kernel status signals
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}); see {self.log_path}:\n"
                                   + self.log_path.read_text()[-2000:])
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; see {self.log_path}")

    def api(self, method: str, path: str, timeout: float = 10):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: Path) -> str:
        """A throw-away workspace, so no earlier tab reopens (and starts a second kernel)."""
        rel = notebook.resolve().relative_to(self.root).as_posix()
        return f"{self.base}/lab/workspaces/ui-{uuid.uuid4().hex[:12]}/tree/{rel}?token={self.token}"

    def shutdown_sessions(self) -> None:
        """Shut down every kernel this server started (one notebook's kernel must not outlive its test)."""
        try:
            for s in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{s['id']}")
            for k in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{k['id']}")
        except OSError:
            pass

    def log_since(self, offset: int) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[offset:]

    def log_size(self) -> int:
        return len(self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.shutdown_sessions()
        try:
            self.api("POST", "/api/shutdown")
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:  # the server and its kernels share one process group
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None


# ---------------------------------------------------------------------------------------------------------
# one notebook in the browser
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Report:
    notebook: str
    mode: str                           # "run" or "render"
    seconds: float = 0.0                # wall time of the whole check
    run_seconds: float = 0.0            # Run All until the end signal
    problems: list[str] = field(default_factory=list)
    images: int = 0
    audio: int = 0
    tables: int = 0
    sliders: int = 0
    sliders_redrawn: int = 0
    widgets: int = 0
    events: list = field(default_factory=list)  # kernel status / connection changes seen in the page
    console: list = field(default_factory=list)  # browser console errors (reported, not failed on)
    screenshot: str = ""

    def summary(self) -> str:
        return (f"{self.notebook} [{self.mode}] {self.seconds:.0f} s (run {self.run_seconds:.0f} s): "
                f"{self.images} images, {self.audio} audio players, {self.tables} tables, "
                f"{self.widgets} widgets, {self.sliders} sliders ({self.sliders_redrawn} redrawn)"
                + (f"; {len(self.problems)} problems" if self.problems else "; clean"))


# Kernel status and connection changes, recorded in the page from the moment the notebook is ready. A kernel
# that dies (out of memory, say) restarts and goes idle while the cells it never answered keep their '*'.
JS_RECORD = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const ctx = nb.sessionContext;
  const t0 = performance.now();
  window.__ui = {log: [], kernelId: ctx.session && ctx.session.kernel ? ctx.session.kernel.id : null};
  const add = (kind, value) => window.__ui.log.push([Math.round(performance.now() - t0), kind, value]);
  ctx.statusChanged.connect((_, s) => add('status', s));
  ctx.connectionStatusChanged.connect((_, s) => add('connection', s));
  ctx.kernelChanged.connect(() => add('kernel', 'changed'));
  return true;
}"""

JS_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const ctx = nb && nb.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  // textContent, not innerText: innerText of a cell outside the viewport reads '' when JupyterLab windows the
  // notebook (its default windowingMode), so a prompt read that way can miss a '*' or keep a stale one
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  const running = nb && nb.content ? nb.content.widgets.filter(w => w.model.type === 'code'
      && w.model.executionState === 'running').length : 0;
  const bar = [...document.querySelectorAll('.jp-StatusBar-Widget .jp-StatusBar-TextItem')]
      .map(e => e.textContent).find(t => t.includes('|')) || '';
  return {status: kernel ? kernel.status : 'nokernel', connection: kernel ? kernel.connectionStatus : 'none',
          kernelId: kernel ? kernel.id : null, prompts, running, bar,
          cells: document.querySelectorAll('.jp-Notebook .jp-Cell').length,
          dialog: [...document.querySelectorAll('.jp-Dialog')].map(d => d.textContent.slice(0, 300))};
}"""

# Everything the checks need, per cell, in one pass over the DOM.
JS_CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => {
  const inWidget = el => !!el.closest('.jupyter-widgets, .widget-output, .jp-LinkedOutputView');
  const outs = [...cell.querySelectorAll('.jp-OutputArea-output')];
  const imgs = [...cell.querySelectorAll('.jp-OutputArea-output img')];
  const topImgs = imgs.filter(i => !inWidget(i));
  return {
    code: cell.classList.contains('jp-CodeCell'),
    prompt: cell.classList.contains('jp-CodeCell')
        ? (cell.querySelector('.jp-InputArea-prompt') || {textContent: ''}).textContent.trim() : '',
    images: topImgs.length,
    imagesLoaded: topImgs.filter(i => i.complete && i.naturalWidth > 0).length,
    widgetImages: imgs.length - topImgs.length,
    widgetImagesLoaded: imgs.filter(i => inWidget(i) && i.complete && i.naturalWidth > 0).length,
    audio: cell.querySelectorAll('.jp-OutputArea-output audio').length,
    audioBroken: [...cell.querySelectorAll('.jp-OutputArea-output audio')].filter(a => a.error).length,
    tables: cell.querySelectorAll('.jp-OutputArea-output table').length,
    stderr: [...cell.querySelectorAll('%STDERR%')].map(e => e.innerText.slice(0, 600)),
    texts: outs.filter(o => !o.querySelector('.jp-OutputArea-output'))
               .map(o => o.innerText).filter(t => t && t.trim()),
    widgets: cell.querySelectorAll('.jp-OutputArea-output .jupyter-widgets.widget-container, ' +
                                   '.jp-OutputArea-output .jupyter-widgets.widget-inline-hbox, ' +
                                   '.jp-OutputArea-output .jupyter-widgets.widget-inline-vbox').length,
    widgetFallback: outs.filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.widget-view+json'
                                     && !o.querySelector('.jupyter-widgets')).length,
    sliders: cell.querySelectorAll('.jp-OutputArea-output .widget-slider').length,
    progressBars: [...cell.querySelectorAll('.jp-OutputArea-output .widget-progress')].map(p => {
      const bar = p.querySelector('.progress-bar'); return bar ? bar.style.width : '';
    }),
    markdownRendered: cell.classList.contains('jp-MarkdownCell')
        ? !!cell.querySelector('.jp-RenderedMarkdown') : true,
    math: cell.querySelectorAll('mjx-container, .MathJax').length,
  };
})""".replace("%STDERR%", STDERR.replace("'", "\\'"))


def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _open(page, server: LabServer, path: Path, n_cells: int, timeout: float = 120) -> None:
    page.goto(server.lab_url(path), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=timeout * 1000)
    page.wait_for_function(f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n_cells}",
                           timeout=timeout * 1000)
    page.evaluate(JS_RECORD)
    # The kernel must exist and be idle: before it exists the execution indicator already reads idle, and a
    # Run All issued then runs nothing.
    page.wait_for_function("() => { const c = window.jupyterapp.shell.currentWidget.sessionContext;"
                           " return c.session && c.session.kernel && c.session.kernel.status === 'idle'"
                           " && c.session.kernel.connectionStatus === 'connected'; }", timeout=timeout * 1000)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-Widget')]"
                           ".some(e => /\\|\\s*Idle/.test(e.innerText))", timeout=timeout * 1000)


def _settled(state: dict) -> bool:
    return state["status"] == "idle" and not state["running"] and not any("*" in p for p in state["prompts"])


def _idle_twice(page) -> dict | None:
    """The end signal: no '*' prompt (nor a cell the notebook model marks running), the kernel idle now and
    again 0.5 s later. The status bar alone flips Busy/Idle between the cells of a Run All."""
    a = page.evaluate(JS_STATE)
    if not _settled(a):
        return None
    time.sleep(0.5)
    b = page.evaluate(JS_STATE)
    if not _settled(b) or b["kernelId"] != a["kernelId"]:
        return None
    return b


def run_all(page, server: LabServer, timeout: float, log_offset: int = 0) -> float:
    """Run > Run All Cells from the menu bar; wait for the end signal. Returns the seconds it took.

    Why a '*' could stay while the kernel read idle (measured here, JupyterLab 4.6, ipykernel 7):
    - JupyterLab's default windowingMode ("contentVisibility") skips rendering cells outside the viewport, and
      `innerText` of their prompts reads '' or what the prompt was when the cell left the view, while the
      notebook model has moved on: a check that reads prompts that way sees a '*' that is long gone (or misses
      one). Here windowing is off, prompts are read with `textContent`, and the model's executionState is
      checked too.
    - The kernel status is not a cell's state: it flips Busy/Idle between the cells of a Run All, and after a
      websocket reconnect it read idle for seconds while a cell was still running (the server buffers and
      replays the messages, the prompts then complete). Hence "no '*', nothing running, idle twice 0.5 s apart".
    - A kernel that dies (out of memory on a shared machine, say) restarts and reads idle; JupyterLab shows a
      "Kernel Restarting" dialog and clears the unanswered prompts. This fails at once with that reason,
      from the page's kernel status events and the server log, instead of waiting out `timeout`.
    A slow run (a loaded machine) still reads busy with a '*': it ends in the timeout, with the prompts and the
    kernel's status events in the message.
    """
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells")).first.click()
    start = time.time()
    # the run has started once any prompt shows '*' or a number
    _wait(lambda: any(p.strip("[]: ") for p in page.evaluate(JS_STATE)["prompts"]), 30, "Run All to start")
    deadline = start + timeout
    while True:
        state = _idle_twice(page)
        # A restarted kernel reads idle with its unanswered prompts cleared, which also passes as settled: the
        # death is checked before a settled state counts as the end (a CI run once returned ['1', '', ''] here).
        events = page.evaluate("() => window.__ui.log")
        bad = [e for e in events if e[2] in ("restarting", "autorestarting", "dead", "disconnected")]
        log = server.log_since(log_offset)
        died = [line for line in log.splitlines() if "restarting kernel" in line.lower() or "died" in line.lower()]
        if bad or died:
            raise RuntimeError(f"the kernel died or lost its connection during Run All ({bad or died[:3]}); "
                               "its unanswered cells would keep '*' forever. Out of memory? "
                               f"kernel events: {events[-20:]}")
        if state is not None:
            return time.time() - start
        if time.time() > deadline:
            st = page.evaluate(JS_STATE)
            raise TimeoutError(f"Run All did not finish within {timeout:.0f} s: prompts {st['prompts']}, "
                               f"kernel {st['status']}/{st['connection']}; kernel events {events[-20:]}")
        time.sleep(0.5)


def move_sliders(page, cell_index: int, settle_timeout: float = 60) -> tuple[int, int, list[str]]:
    """Move every slider in one cell a step (keyboard on its handle); count those whose move redrew a figure."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(cell_index)
    sliders = cell.locator(".jp-OutputArea-output .widget-slider")
    n = sliders.count()
    redrawn, problems = 0, []
    srcs = "(c) => [...c.querySelectorAll('.jp-OutputArea-output img')].map(i => i.src + '|' + i.naturalWidth)"
    for k in range(n):
        slider = sliders.nth(k)
        label = slider.locator(".widget-label").first.inner_text() if slider.locator(".widget-label").count() else k
        readout = slider.locator(".widget-readout")
        before_value = readout.inner_text() if readout.count() else ""
        before = cell.evaluate(srcs)
        handle = slider.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowRight")
        try:
            _wait(lambda: cell.evaluate(srcs) != before and all(not s.endswith("|0") for s in cell.evaluate(srcs))
                  and cell.evaluate(srcs), settle_timeout, f"slider {label!r} to redraw the figure")
            _wait(lambda: _idle_twice(page), settle_timeout, "the kernel after the slider move")
            redrawn += 1
        except TimeoutError as err:
            problems.append(f"cell {cell_index}: slider {label!r} (readout {before_value!r} -> "
                            f"{readout.inner_text() if readout.count() else ''!r}) did not redraw: {err}")
        err_now = cell.locator(STDERR)
        if err_now.count():
            problems.append(f"cell {cell_index}: slider {label!r} produced stderr: {err_now.first.inner_text()[:300]}")
    return n, redrawn, problems


def screenshot(page, out: Path) -> None:
    """The whole notebook in one image: a viewport as tall as the notebook (Chromium caps it at 16384 px)."""
    height = page.evaluate("""() => {
      window.jupyterapp.shell.collapseLeft();
      const s = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
      if (!s) return 900;
      s.scrollTop = 0;
      return s.scrollHeight; }""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height + 200, 900), 16000))})
    time.sleep(1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=False)
    page.set_viewport_size(size)


def inspect_cells(page, expected: list[CellExpect], mode: str, report: Report) -> None:
    """Compare the rendered cells with what the file says; append every difference to report.problems."""
    cells = page.evaluate(JS_CELLS)
    p = report.problems
    if len(cells) != len(expected):
        p.append(f"{len(cells)} cells rendered, the file has {len(expected)}")
        return
    # execution counts from the notebook model: a cell with a collapsed input ("Solution (collapsed)") shows no
    # prompt, and the model is what actually ran
    counts = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets"
                           ".filter(w => w.model.type === 'code').map(w => w.model.executionCount)")
    code = [c for c in cells if c["code"]]
    prompts = [str(n) if n is not None else "" for n in counts]
    want = [str(i) for i in range(1, len(code) + 1)]
    if mode == "render":
        want = [str(e.execution_count) if e.execution_count else "" for e in expected if e.code]
    if prompts != want:
        p.append(f"code cells did not run in order: prompts {prompts}, expected {want}")
    for exp, c in zip(expected, cells):
        where = f"cell {exp.index} ({c['prompt'] or 'markdown'})"
        for text in c["stderr"]:
            p.append(f"{where}: stderr/traceback output: {text.strip()[:400]!r}")
        if exp.sliders or c["widgets"]:
            # nbclient runs without a widget frontend, so what an interact draws lands in the file as a plain
            # output; in JupyterLab it sits inside the widget: compare the cell's images in all
            if c["images"] + c["widgetImages"] < exp.images:
                p.append(f"{where}: {c['images'] + c['widgetImages']} images on screen, the file has {exp.images}")
        elif c["images"] != exp.images:
            p.append(f"{where}: {c['images']} images on screen, the file has {exp.images}")
        if c["imagesLoaded"] != c["images"] or c["widgetImagesLoaded"] != c["widgetImages"]:
            p.append(f"{where}: {c['images'] + c['widgetImages'] - c['imagesLoaded'] - c['widgetImagesLoaded']} "
                     "images did not load (naturalWidth 0)")
        if c["audio"] != exp.audio:
            p.append(f"{where}: {c['audio']} audio players on screen, the file has {exp.audio}")
        if c["audioBroken"]:
            p.append(f"{where}: {c['audioBroken']} audio players failed to load their sound")
        if c["tables"] < exp.md_tables:
            p.append(f"{where}: {exp.md_tables} Markdown tables in the file, {c['tables']} rendered as <table>")
        if c["sliders"] != exp.sliders:
            p.append(f"{where}: {c['sliders']} sliders on screen, the file has {exp.sliders}")
        if c["widgetFallback"]:
            p.append(f"{where}: {c['widgetFallback']} widgets shown as their text fallback, not rendered")
        if not c["markdownRendered"]:
            p.append(f"{where}: Markdown not rendered")
        if exp.math and not c["math"]:
            p.append(f"{where}: math in the Markdown source but no MathJax output")
        for text in c["texts"]:
            p += [f"{where}: {problem}" for problem in text_problems(text)]
        for width in c["progressBars"]:
            if width and width.strip() not in ("100%",):
                p.append(f"{where}: a progress bar widget at {width}")
        report.images += c["images"] + c["widgetImages"]
        report.audio += c["audio"]
        report.tables += c["tables"]
        report.sliders += c["sliders"]
        report.widgets += c["widgets"]


def check_notebook(browser, server: LabServer, path: Path, mode: str = "run", timeout: float = 600,
                   shots: Path | None = None, move: bool = True) -> Report:
    """Open `path` in a fresh page and kernel; run it (mode "run") or only render it ("render"); report."""
    start = time.time()
    report = Report(path.stem, mode)
    expected = expected_from_file(path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)[:400]))
    page.on("console", lambda msg: report.console.append(msg.text[:300]) if msg.type == "error" else None)
    offset = server.log_size()
    try:
        _open(page, server, path, len(expected))
        if mode == "run":
            report.run_seconds = run_all(page, server, timeout, offset)
        else:
            _wait(lambda: _idle_twice(page), 60, "the notebook to settle")
            time.sleep(1.0)  # let images decode and widgets restore from the saved state
        inspect_cells(page, expected, mode, report)
        if mode == "run" and move:
            for i, exp in enumerate(expected):
                if exp.sliders:
                    _, redrawn, problems = move_sliders(page, i)
                    report.sliders_redrawn += redrawn
                    report.problems += problems
        if shots is not None:
            report.screenshot = str(shots / f"{path.stem}.png")
            screenshot(page, Path(report.screenshot))
        report.events = page.evaluate("() => window.__ui && window.__ui.log")
    except (TimeoutError, RuntimeError) as err:
        report.problems.append(f"{type(err).__name__}: {err}")
        if report.console:
            report.problems.append(f"browser console errors: {report.console[-5:]}")
        if shots is not None:
            try:
                screenshot(page, shots / f"{path.stem}-failed.png")
            except Exception:  # noqa: BLE001 - the screenshot is a courtesy
                pass
    finally:
        report.problems += [f"browser page error: {e}" for e in page_errors]
        page.close(run_before_unload=False)
        context.close()
        server.shutdown_sessions()
    saved = [ln for ln in server.log_since(offset).splitlines() if "Saving file at" in ln]
    if saved:  # autosave is off; a save here would overwrite a committed notebook with browser outputs
        report.problems.append(f"the browser saved a file: {saved[0].strip()[:200]}")
    report.seconds = time.time() - start
    return report
