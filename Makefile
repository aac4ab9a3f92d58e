# Each target sets itself up: a virtualenv in .venv with what that target needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test lint bench setup-demo setup-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.demo-ready: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[agents]'
	touch $@

$(VENV)/.dev-ready: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[dev,sqlalchemy]'
	touch $@ $(VENV)/.demo-ready

setup-demo: $(VENV)/.demo-ready
setup-dev: $(VENV)/.dev-ready

demo: setup-demo
	$(VENV)/bin/encmem demo

test: setup-dev
	bash scripts/run-tests

lint: setup-dev
	$(VENV)/bin/ruff check encmem backends tests benchmarks
	bash scripts/typecheck

bench: setup-dev
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
