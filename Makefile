# The two commands: `make demo` and `make test`. Both bootstrap .venv (Python 3.11) when missing.
PYTHON ?= python3.11
TORCH ?= 2.13.0
# FAST=0 skips the torch-scatter / torch-sparse source builds (graphdiff works without them).
FAST ?= 1
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per FAST setting: switching it installs again (FAST=1 then builds the extensions).
STAMP := $(VENV)/.installed-fast$(FAST)
PYTEST_ARGS ?=

.PHONY: demo test lint docs bench clean install data

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==$(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	if [ "$(FAST)" = "1" ]; then \
	  $(PY) -m pip install --no-build-isolation torch-scatter torch-sparse \
	  || echo "warning: torch-scatter/torch-sparse did not build; graphdiff runs without them"; \
	fi
	# Real Fashion-MNIST for the image task's test, from Debian's packages (as root only).
	if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null \
	  && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) > /dev/null \
	  || echo "warning: dataset-fashion-mnist did not install; the test that reads it skips"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m graphdiff demo --out runs/demo

# Lint and the docs build first, so that pytest's summary stays the last thing printed.
test: lint docs
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): the linter, and the formatter's check (`ruff format` fixes).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The API reference from the docstrings; warnings are errors.
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

# One current output per bench under benchmarks/results (about an hour and a half on 2 cores).
RESULTS := benchmarks/results
bench: $(STAMP)
	$(PY) benchmarks/bench_patterns.py > $(RESULTS)/bench_patterns.md.tmp
	mv $(RESULTS)/bench_patterns.md.tmp $(RESULTS)/bench_patterns.md
	$(PY) benchmarks/bench_spectral.py --n 4096 16384 65536 131072 > $(RESULTS)/bench_spectral.md.tmp
	mv $(RESULTS)/bench_spectral.md.tmp $(RESULTS)/bench_spectral.md
	$(PY) benchmarks/bench_layer.py --n 1024 4096 16384 65536 --out $(RESULTS) --plot
	$(PY) benchmarks/bench_model.py --preset small --length 4096 --batch 1 --out $(RESULTS)/bench_model.md
	$(PY) benchmarks/bench_model.py --length 1024 4096 16384 --skip-reference --peers --steps 8 \
	  --out $(RESULTS)/bench_model_peers.md
	$(PY) benchmarks/bench_model.py --profile --length 1024 4096 16384 \
	  --out $(RESULTS)/bench_model_profile.md
	$(PY) benchmarks/bench_memory.py > $(RESULTS)/bench_memory.md.tmp
	mv $(RESULTS)/bench_memory.md.tmp $(RESULTS)/bench_memory.md

# Fashion-MNIST for `graphdiff train --task image` (Debian package, needs root; the install
# step above tries it too).
data:
	apt-get install -y dataset-fashion-mnist

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis build *.egg-info docs/_build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
