# The README's two commands are `make demo` and `make test`; both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

# Main job: embed the Python standard library's package tree in the Poincaré disk and
# compare it with a Euclidean embedding of the same dimension and budget.
demo: $(STAMP)
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
