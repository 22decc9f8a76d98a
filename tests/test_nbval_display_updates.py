"""tests/nbval_display_updates.py: nbval no longer prints a line per progress-bar update, and still reports errors.

Runs nbval (as `make nbval` does) on a three-cell notebook written here: a utils.progress bar, a bar followed by
an error, and a clear_output (a message type nbval does not handle either, which must still be printed).
"""
import subprocess
import sys

import nbformat
import pytest

from utils import REPO_ROOT

pytest.importorskip("nbval")
UNHANDLED = "unhandled iopub msg: update_display_data"


def _notebook(path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        f"import sys, time\nsys.path.insert(0, {str(REPO_ROOT)!r})\nfrom utils.progress import progress\n"
        "for _ in progress(range(5), desc='bar', mininterval=0.02):\n    time.sleep(0.05)",
        "for _ in progress(range(5), desc='bar', mininterval=0.02):\n    time.sleep(0.05)\n"
        "raise ValueError('the line that matters')",
        "from IPython.display import clear_output\nclear_output()",
    )]
    nbformat.write(nb, path)
    return path


def _nbval(path, *plugin):
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *plugin, "--nbval-lax",
           "--nbval-current-env", "--nbval-cell-timeout=120", str(path)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300).stdout


def test_progress_updates_are_quiet_and_errors_still_show(tmp_path):
    path = _notebook(tmp_path / "bars.ipynb")
    plain = _nbval(path)
    assert plain.count(UNHANDLED) >= 2, ("nbval printed no 'unhandled iopub msg: update_display_data': it may handle "
                                         "the message now, and tests/nbval_display_updates.py can go\n" + plain[-2000:])
    quiet = _nbval(path, "-p", "tests.nbval_display_updates")
    assert UNHANDLED not in quiet, quiet[-2000:]
    assert "ValueError" in quiet and "the line that matters" in quiet and "1 failed, 2 passed" in quiet, quiet[-2000:]
    assert "unhandled iopub msg: clear_output" in quiet, "the plugin must hide only display updates"
