"""Tables in the notebooks: the "what we measured" table at the end of each notebook (also collected into
build/results.md) and any other small results table, rendered as HTML tables in Jupyter.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GB (the kernel's, when called from a notebook)."""
    import resource
    import sys

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)  # bytes on macOS, KiB on Linux


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table with `header` and `rows` (each row as long as the header); numbers via `fmt`."""
    if not header:
        raise ValueError("header must name at least one column")
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"rows {bad} do not have {len(header)} cells like the header")
    cell = lambda v: fmt(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def show(markdown: str) -> None:
    """Display Markdown: rendered (text/markdown) in Jupyter, the same text (text/plain) elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python without IPython
        print(markdown)
        return
    if get_ipython() is None:
        print(markdown)
    else:
        display({"text/markdown": markdown, "text/plain": markdown}, raw=True)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Show a results table (rendered as a table in Jupyter, as Markdown text elsewhere)."""
    show(markdown_table(header, rows))


def measured(notebook: str, rows: dict[str, object]) -> None:
    """Show `rows` (name -> number or text) as the notebook's "what we measured" table; return its Markdown.

    When `COURSE_RESULTS_DIR` is set (scripts/run_notebooks.py sets it), the rows are also written to
    `<dir>/<notebook>.json` for build/results.md.
    """
    if not rows:
        raise ValueError("rows must name at least one measured value")
    table(["what we measured", "value"], list(rows.items()))
    out_dir = os.environ.get("COURSE_RESULTS_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{notebook}.json").write_text(json.dumps({k: fmt(v) for k, v in rows.items()}, indent=1))
