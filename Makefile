# attention-lessons — everything goes through a local virtual environment in .venv,
# installed from the tested lock (requirements/lock.txt) so a whole class gets the same versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_ARGS ?=
SUBMISSIONS ?= submissions

.PHONY: install lab test colab bench exercises grade notebooks lock clean

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## lab: set everything up and open the course in JupyterLab
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb $(LAB_ARGS)

## test: set everything up and run the whole test suite (package, notebooks via nbval, grading,
## the course in a real browser, hygiene)
test: $(STAMP)
	bash scripts/install_browser.sh
	$(BIN)/python -m pytest
	$(BIN)/python scripts/colab_stack.py

## colab: only the Colab-like stack test (Python 3.13 with Colab's TensorFlow, Keras, ipykernel, ipywidgets)
colab:
	$(PYTHON) scripts/colab_stack.py

## bench: performance benchmarks; results are written to benchmarks/*.md (commit them)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mha.py
	$(BIN)/python benchmarks/grading_throughput.py
	$(BIN)/python benchmarks/bench_long.py

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
