# symbolic_l2o: `make run` (the pipeline) and `make test` (the checks CI runs) on a fresh machine with Python 3.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The virtual environment is rebuilt whenever the pinned stack or the package metadata changes.
ENV_HASH := $(shell cat constraints.txt setup.py settings.ini | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(ENV_HASH)
RUN ?= runs/$(shell date +%Y%m%d-%H%M%S)
NOTEBOOKS := $(sort $(wildcard nbs/[0-9]*.ipynb))

.PHONY: venv test run bench export clean-nbs

venv: $(STAMP)

$(STAMP):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

export: $(STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# Notebooks clean, package in sync with the notebooks, notebook lessons, then tests/.
test: $(STAMP)
	$(BIN)/nbdev_clean
	@git diff --quiet -- nbs && test -z "$$(git status --porcelain -- nbs)" || \
	  { git status --short -- nbs; echo "FAIL: notebooks are not clean: nbdev_clean changed them; commit the cleaned notebooks"; exit 1; }
	$(BIN)/nbdev_export
	@test -z "$$(git status --porcelain -- symbolic_l2o pyproject.toml)" || \
	  { git status --short -- symbolic_l2o pyproject.toml; echo "FAIL: symbolic_l2o/ is out of sync with the notebooks: run nbdev_export and commit"; exit 1; }
	$(BIN)/nbdev_test --n_workers 2
	$(PY) -m pytest tests/

# The pipeline: every numbered notebook, executed headless into one run directory.
run: $(STAMP)
	@mkdir -p $(RUN)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb -> $(RUN)/$$(basename $$nb)"; \
	  $(BIN)/papermill --cwd nbs --progress-bar "$$nb" "$(RUN)/$$(basename $$nb)" || \
	    { echo "FAIL: $$nb failed; open $(RUN)/$$(basename $$nb) to see where"; exit 1; }; \
	done
	@echo "Run written to $(RUN)"

bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json
