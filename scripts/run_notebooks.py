"""Execute notebooks headless, in order, into build/, and write build/results.md.

Each row of results.md: the notebook, its wall time on this machine and the headline numbers it reported
through utils.report.measured. Usage: python scripts/run_notebooks.py [--inplace | --out=DIR] [NN ...]
(--out=DIR writes the executed notebooks, results and times under DIR instead of build/, e.g. the run under
Colab's versions in `make run-colab-versions`.)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

# s: a stalled cell fails fast, well inside CI's limit; the slowest cell takes ~70 s on an idle 2-core machine.
# NOTEBOOK_CELL_TIMEOUT raises it for runs on a loaded machine.
CELL_TIMEOUT = int(os.environ.get("NOTEBOOK_CELL_TIMEOUT", "300"))

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


def execute(path: Path, timeout: int = CELL_TIMEOUT) -> tuple[nbformat.NotebookNode, float]:
    """Execute a notebook in a fresh kernel; return it with its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    # nbclient emulates ipywidgets' Output widgets by default; with `interact` cells that emulation sometimes
    # never sees the cell's reply and the run stalls until the timeout (jupyter/nbclient#312). The notebooks
    # draw a static figure next to every slider, so headless runs need no widget emulation.
    client.widget_registry = {}
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def run(path: Path, out: Path, timeout: int = CELL_TIMEOUT) -> float:
    """Execute `path` into `out`; one retry, said out loud, when the kernel died or a cell stalled."""
    try:
        nb, seconds = execute(path, timeout)
    except (CellTimeoutError, DeadKernelError) as err:
        print(f"  {path.name}: {type(err).__name__} ({str(err).splitlines()[0][:200]}); "
              f"retrying once in a fresh kernel", flush=True)
        nb, seconds = execute(path, timeout)
    nbformat.write(nb, out)
    return seconds


def main(argv: list[str]) -> int:
    unknown = [a for a in argv if a.startswith("-") and a != "--inplace" and not a.startswith("--out=")]
    if unknown:                                          # `--help` must not run every notebook
        if unknown[0] in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        print(f"unknown option {unknown[0]!r}\n\n{__doc__.strip()}", file=sys.stderr)
        return 2
    inplace = "--inplace" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    outs = [a.split("=", 1)[1] for a in argv if a.startswith("--out=")]
    build = (ROOT / outs[0]) if outs else BUILD
    results_dir = build / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    os.environ["COURSE_RESULTS_DIR"] = str(results_dir)  # the kernels inherit it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")         # the embedded default: no network needed
    times = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if wanted and not any(nb.stem.startswith(w) for w in wanted):
            continue
        print(f"running {nb.name} ...", flush=True)
        times[nb.stem] = run(nb, nb if inplace else build / nb.name)
        print(f"  {times[nb.stem]:.1f} s", flush=True)
    timing_file = results_dir / "times.json"
    known = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    known.update({k: round(v, 1) for k, v in times.items()})
    timing_file.write_text(json.dumps(known, indent=1))
    lines = ["| notebook | wall time (s) | headline numbers |", "|---|---|---|"]
    for stem in sorted(known):
        res_file = results_dir / f"{stem}.json"
        numbers = json.loads(res_file.read_text()) if res_file.exists() else {}
        lines.append(f"| {stem} | {known[stem]:.1f} | " + "; ".join(f"{k}: {v}" for k, v in numbers.items()) + " |")
    (build / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
