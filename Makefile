# attention-lessons — everything goes through a local virtual environment in .venv,
# installed from the tested lock (requirements/lock.txt) so a whole class gets the same versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_ARGS ?=
LAB_ROOT ?= $(CURDIR)
SUBMISSIONS ?= submissions

.PHONY: install lab test site colab bench exercises grade notebooks lock clean

# Root (containers, cloud VMs, Codespaces): JupyterLab refuses to start as root unless told.
ifeq ($(shell id -u 2>/dev/null),0)
ROOT_LAB_ARGS := --allow-root
endif

$(STAMP): pyproject.toml requirements/lock.txt
	@echo "Setting up the course in $(VENV): installing the tested versions of requirements/lock.txt"
	@echo "(TensorFlow, Keras, JupyterLab and the test tools, about 1.5 GB; typically 2-6 minutes the"
	@echo "first time, depending on the network; later runs reuse $(VENV) and skip this step)."
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[dev]" && \
	touch $(STAMP) && \
	echo "Installed in $$(( $$(date +%s) - start )) s. Commands: $(BIN)/attention-lessons --help (or source $(BIN)/activate)."

install: $(STAMP)

## lab: set everything up and open the course in JupyterLab
lab: $(STAMP)
ifdef ROOT_LAB_ARGS
	@echo "Running as root (a container or cloud VM?): starting JupyterLab with --allow-root, which it requires then."
endif
	$(BIN)/jupyter lab --ServerApp.root_dir="$(LAB_ROOT)" \
		--LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb $(ROOT_LAB_ARGS) $(LAB_ARGS)

## test: set everything up and run the whole test suite (package, notebooks via nbval, grading,
## the course in a real browser, the website in a real browser, a real JupyterHub, hygiene).
## ATTENTION_LESSONS_REQUIRE_BROWSER=1: the browser and hub tests fail, never skip, when a tool is missing.
test: $(STAMP)
	bash scripts/install_browser.sh
	bash scripts/install_node_packages.sh
	$(BIN)/python scripts/build_site.py --strict
	ATTENTION_LESSONS_REQUIRE_BROWSER=1 $(BIN)/python -m pytest
	$(BIN)/python scripts/colab_stack.py

## site: the course as a static website in build/site (open build/site/index.html, or serve it:
## .venv/bin/python -m http.server -d build/site); offline, from the notebooks' stored outputs
SITE_ARGS ?=
site: $(STAMP)
	bash scripts/install_node_packages.sh
	$(BIN)/python scripts/build_site.py $(SITE_ARGS)

## colab: only the Colab-like stack test (Python 3.13 with Colab's TensorFlow, Keras, ipykernel, ipywidgets)
colab:
	$(PYTHON) scripts/colab_stack.py

## bench: performance benchmarks; results are written to benchmarks/*.md (commit them)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mha.py
	$(BIN)/python benchmarks/grading_throughput.py
	$(BIN)/python benchmarks/grading_class.py
	$(BIN)/python benchmarks/bench_long.py
	$(BIN)/python benchmarks/bench_modern.py

## exercises: regenerate exercises/ from solutions/
exercises: $(STAMP)
	$(BIN)/attention-lessons exercises

## grade: grade every notebook in $(SUBMISSIONS)/ into grades.csv
grade: $(STAMP)
	$(BIN)/attention-lessons grade $(SUBMISSIONS) --csv grades.csv --feedback feedback --jobs 2

## notebooks: re-execute lessons and solutions in place (maintainers; then commit the outputs)
notebooks: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py notebooks/*.ipynb solutions/*.ipynb

## lock: refresh requirements/lock.txt from a fresh install of pyproject's dependencies
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e ".[dev]"
	{ echo "# Tested lock for \`make\`: exact versions a class gets (Python 3.11, Linux x86_64)."; \
	  echo "# Regenerate with \`make lock\` after changing dependencies in pyproject.toml."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^attention-lessons'; } > requirements/lock.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-colab build dist *.egg-info
