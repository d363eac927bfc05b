# The README's two commands are `make demo` and `make test`; both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-tree test test-all lint bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

# Main job: train the tiny ResNet-BK byte language model on the Python standard library's
# source (2 CPU cores: minutes), print its validation bits per byte, then generate a sample.
# Each run gets its own folder, so running it again never touches an earlier run.
demo: $(STAMP)
	@out=runs/tiny-$$(date +%Y%m%d-%H%M%S); \
	$(VENV)/bin/resnetbk train --preset tiny --out $$out && \
	$(VENV)/bin/resnetbk generate $$out --prompt "def " --bytes 400

# The earlier demo: the stdlib package tree embedded in the Poincaré disk vs Euclidean space.
demo-tree: $(STAMP)
	$(VENV)/bin/resnetbk embed-tree

# Lint, then the default test run (slow tests excluded; GPU tests skip without CUDA).
test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

bench: $(STAMP)
	$(PY) bench/geometry_cpu.py --write-docs
