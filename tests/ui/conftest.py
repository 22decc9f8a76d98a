"""Fixtures for the browser tests: one JupyterLab server and one headless Chromium for the whole session.

Skips (one line in the summary) when playwright or a Chromium is missing: `make ui-test` installs both.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import uilab

_skip_reason: str | None = None
_reports: list[uilab.Report] = []


def _why_not() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make ui-test installs requirements-ui.txt)"
    if uilab.find_browser() is None:
        return "no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)"
    return None


def pytest_collection_modifyitems(config, items):
    global _skip_reason
    here = Path(__file__).resolve().parent
    ui_items = [i for i in items if here in Path(i.path).resolve().parents]
    _skip_reason = _why_not()
    if _skip_reason:
        mark = pytest.mark.skip(reason=f"UI tests skipped: {_skip_reason}")
        for item in ui_items:
            item.add_marker(mark)


def pytest_terminal_summary(terminalreporter):
    if _skip_reason:
        terminalreporter.write_line(f"UI tests skipped: {_skip_reason}")
    for r in _reports:
        terminalreporter.write_line(r.summary())
    if _reports:
        out = uilab.ROOT / "build" / "ui" / "report.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"- {r.summary()}\n" + "".join(f"  - {p}\n" for p in r.problems) for r in _reports))
        terminalreporter.write_line(f"UI screenshots and report.md in {out.parent}")


@pytest.fixture(scope="session")
def shots():
    path = uilab.ROOT / "build" / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """JupyterLab on 127.0.0.1; at the end every kernel it started is shut down, then the server."""
    server = uilab.LabServer(tmp_path_factory.mktemp("jupyterlab"))
    server.start()
    yield server
    server.stop()
    log = uilab.ROOT / "build" / "ui" / "jupyterlab.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.log_path, log)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=uilab.find_browser(), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"])
        yield chromium
        chromium.close()


@pytest.fixture
def record():
    """Keep a report for the session summary (and build/ui/report.md)."""
    def add(report: uilab.Report) -> uilab.Report:
        _reports.append(report)
        return report
    return add
