# make run   - set up .venv (first time), execute every notebook headless into build/, write build/results.md
# make test  - set up .venv (first time), run the unit tests and nbval over every notebook
# make lab   - set up .venv (first time), open JupyterLab on the notebooks
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup run test unit nbval lab notebooks clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

run: setup
	$(BIN)/python scripts/run_notebooks.py

unit: setup
	$(BIN)/python -m pytest -q tests

nbval: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=300 notebooks/*.ipynb

test: unit nbval

lab: setup
	$(BIN)/jupyter lab notebooks

# rebuild notebooks from notebooks/src, execute them and keep the outputs (what gets committed)
notebooks: setup
	$(BIN)/python scripts/build_notebooks.py $(NB)
	$(BIN)/python scripts/run_notebooks.py --inplace $(NB)

clean:
	rm -rf build .cache
