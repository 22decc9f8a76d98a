"""The notebook tooling: percent-format parsing, the results table, and that every source has its notebook."""
import importlib.util
import json

import pytest

from utils import REPO_ROOT, report

spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "scripts" / "build_notebooks.py")
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)


def test_parse_percent_cells():
    text = "# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\n# %%\ny = 2\n# %%\n\n"
    cells = build_notebooks.parse_percent(text)
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"]
    assert cells[0].source == "# Title\ntext" and cells[1].source == "x = 1"
    with pytest.raises(ValueError, match="solutions/"):
        build_notebooks.parse_percent("# %% solution\ny = 2\n")


def test_every_source_has_an_executed_notebook():
    sources = sorted(p.stem for p in (REPO_ROOT / "notebooks" / "src").glob("*.py"))
    built = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sources == built
    for stem in built:
        cells = json.loads((REPO_ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), f"{stem} is not executed in order"
        assert not any(o["output_type"] == "error" for c in code for o in c["outputs"]), f"{stem} has an error output"


def test_measured_prints_and_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path))
    assert report.measured("99_demo", {"accuracy": 0.98765, "time (s)": 3}) is None  # nothing echoed in Jupyter
    assert "| accuracy | 0.9877 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "99_demo.json").read_text()) == {"accuracy": "0.9877", "time (s)": "3"}
    with pytest.raises(ValueError, match="rows"):
        report.measured("99_demo", {})


def test_markdown_table_escapes_and_refuses_ragged_rows():
    assert report.markdown_table(["a", "b"], [["x|y", 0.123456]]) == "| a | b |\n|---|---|\n| x\\|y | 0.1235 |"
    with pytest.raises(ValueError, match="rows"):
        report.markdown_table(["a", "b"], [[1]])


def test_run_notebooks_answers_help_and_refuses_unknown_options_without_running_anything(monkeypatch, capsys):
    spec_run = importlib.util.spec_from_file_location("run_notebooks", REPO_ROOT / "scripts" / "run_notebooks.py")
    run_notebooks = importlib.util.module_from_spec(spec_run)
    spec_run.loader.exec_module(run_notebooks)
    monkeypatch.setattr(run_notebooks, "run", lambda *a, **k: pytest.fail("a notebook was run"))
    assert run_notebooks.main(["--help"]) == 0 and "Usage" in capsys.readouterr().out
    assert run_notebooks.main(["--inplace", "--bogus", "08"]) == 2 and "--bogus" in capsys.readouterr().err
