"""Every notebook in a real JupyterLab in headless Chromium: what a student sees.

For each notebooks/NN_*.ipynb (new notebooks are picked up by the glob), in a fresh kernel and a fresh page:

- "run" mode: Run > Run All Cells from the menu bar, until no prompt shows '*', no cell is running and the
  kernel reads idle twice 0.5 s apart (a kernel that dies fails at once, see uilab.run_all); then every code
  cell ran in order (prompts 1..n), no stderr output (tracebacks, warnings) and no browser page error, the
  file's number of images per cell on screen and all loaded (naturalWidth > 0), its audio players, its
  sliders (each moved one step must redraw the figure through the kernel), every Markdown table rendered as
  an HTML <table> and none shown as raw pipes, no progress bar short of its total, MathJax rendered.
- "render" mode: the committed outputs only, opened as a student opens the file (same checks, prompts as
  saved, sliders rendered from the saved widget state but not moved).

Notebooks whose committed run took at most UI_FULL_MAX_S seconds (default 60, nbclient's timing metadata in
the file) run fully; the slower ones are render-checked, to keep CI under its 45 minutes (nbval already runs
them). UI_RUN=all runs every notebook fully; UI_RUN=02,09 picks notebooks to run fully. Screenshots of each
notebook go to build/ui/ with report.md.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import nbformat
import pytest

import uilab

NOTEBOOKS = sorted((uilab.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FULL_MAX_S = float(os.environ.get("UI_FULL_MAX_S", "60"))


def mode_for(path: Path) -> str:
    choice = os.environ.get("UI_RUN", "").strip()
    if choice == "all":
        return "run"
    if choice == "none":
        return "render"
    if choice:
        return "run" if any(path.name.startswith(n.strip()) for n in choice.split(",")) else "render"
    seconds = uilab.recorded_seconds(path)
    return "run" if seconds is not None and seconds <= FULL_MAX_S else "render"


def timeout_for(path: Path) -> float:
    if os.environ.get("UI_TIMEOUT"):
        return float(os.environ["UI_TIMEOUT"])
    return max(240.0, 5 * (uilab.recorded_seconds(path) or 120))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path, browser, lab_server, shots, record):
    report = record(uilab.check_notebook(browser, lab_server, path, mode=mode_for(path),
                                         timeout=timeout_for(path), shots=shots))
    assert not report.problems, f"{report.summary()}\n" + "\n".join(f"- {p}" for p in report.problems)


def _control_notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3 (ipykernel)"}})
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_negative_control_is_caught(browser, lab_server, shots, tmp_path):
    """The same helper must fail a notebook that warns, raises, shows a broken image, a raw Markdown table and
    an unfinished progress bar, and whose last cell never ran."""
    path = _control_notebook(shots / "controls" / "negative_control.ipynb", [
        """
        from IPython.display import Image, Markdown, display
        display(Markdown("| rendered | table |\\n|---|---|\\n| 1 | 2 |"))   # fine: a real <table>
        print("| raw | table |\\n|---|---|\\n| 1 | 2 |")
        print("training  50%|#####     | 400/800 [00:01<00:01]")
        """,
        "display(Image(data=b'not a png at all', format='png'))",
        "import warnings; warnings.warn('a warning the UI test must see')",
        "raise ValueError('an error the UI test must see')",
        "print('never reached')",
    ])
    report = uilab.check_notebook(browser, lab_server, path, mode="run", timeout=120)
    text = "\n".join(report.problems)
    expected = {
        "warning": "a warning the UI test must see",
        "traceback": "an error the UI test must see",
        "cells not run in order": "did not run in order",
        "broken image": "did not load",
        "raw table": "Markdown table shown as raw text",
        "progress bar": "progress bar not in its final state",
    }
    missed = [name for name, needle in expected.items() if needle not in text]
    assert not missed, f"the UI checks missed {missed}; they reported:\n{text}"
    assert report.tables == 1, "the rendered Markdown table was not counted as a <table>"


def test_dead_kernel_fails_fast(browser, lab_server, shots):
    """A kernel that dies mid-run (out of memory, say) restarts and reads idle; the run must fail at once with
    that reason, not wait out the timeout."""
    path = _control_notebook(shots / "controls" / "dead_kernel.ipynb", [
        "print('before')",
        "import os, signal, time; time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)",
        "print('after')",
    ])
    report = uilab.check_notebook(browser, lab_server, path, mode="run", timeout=120)
    assert any("kernel died" in p for p in report.problems), report.problems
    assert report.seconds < 90, f"took {report.seconds:.0f} s to notice the dead kernel"
