"""The "what we measured" table at the end of each notebook, also collected into build/results.md."""
from __future__ import annotations

import json
import os
from pathlib import Path


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def measured(notebook: str, rows: dict[str, object]) -> None:
    """Print `rows` (name -> number or text) as a Markdown table.

    When `COURSE_RESULTS_DIR` is set (scripts/run_notebooks.py sets it), the rows are also written to
    `<dir>/<notebook>.json` for build/results.md.
    """
    if not rows:
        raise ValueError("rows must name at least one measured value")
    table = "| what we measured | value |\n|---|---|\n" + "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows.items())
    print(table)
    out_dir = os.environ.get("COURSE_RESULTS_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{notebook}.json").write_text(json.dumps({k: fmt(v) for k, v in rows.items()}, indent=1))
