"""Execute notebooks headless, in order, into build/, and write build/results.md.

Each row of results.md: the notebook, its wall time on this machine and the headline numbers it reported
through utils.report.measured. Usage: python scripts/run_notebooks.py [--inplace] [NN ...]
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


def run(path: Path, out: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, out)
    return seconds


def main(argv: list[str]) -> int:
    inplace = "--inplace" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    results_dir = BUILD / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    os.environ["COURSE_RESULTS_DIR"] = str(results_dir)  # the kernels inherit it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")         # the embedded default: no network needed
    times = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if wanted and not any(nb.stem.startswith(w) for w in wanted):
            continue
        print(f"running {nb.name} ...", flush=True)
        times[nb.stem] = run(nb, nb if inplace else BUILD / nb.name)
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
    (BUILD / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
