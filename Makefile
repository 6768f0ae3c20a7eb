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

.PHONY: demo test bench clean install data

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
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m graphdiff demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_patterns.py
	$(PY) benchmarks/bench_layer.py
	$(PY) benchmarks/bench_spectral.py

# Optional: Fashion-MNIST for `graphdiff train --task image` (Debian package, needs root).
data:
	apt-get install -y dataset-fashion-mnist

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
