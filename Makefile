# Each target sets itself up: a virtualenv in .venv with what that target needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test test-fast test-min lint bench setup-demo setup-dev clean

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

# The inner loop: everything but the tests marked slow, pg, redis or crash, no servers, and a
# quarter of the property tests' examples.
test-fast: setup-dev
	ENCMEM_TEST_EXAMPLE_SCALE=0.25 bash scripts/run-tests --no-servers -m "not slow and not pg and not redis and not crash"

# The suite in a second virtualenv holding the lowest version of every dependency pyproject.toml allows.
test-min:
	bash scripts/test-min

lint: setup-dev
	$(VENV)/bin/ruff check encmem backends tests benchmarks
	bash scripts/typecheck

bench: setup-dev
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-min build *.egg-info .pytest_cache .mypy_cache .ruff_cache
