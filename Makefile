# make demo / make test / make bench — each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv dev demo test lint bench clean

# `make demo` installs only what the daemon needs; the test and bench extras (pytest, mypy,
# the vendor SDK the benchmarks compare against, ...) come with `make test` / `make lint`.
$(BIN)/printfleet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(BIN)/printfleet
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $@

venv: $(BIN)/printfleet

dev: $(VENV)/.dev

demo: venv
	$(BIN)/printfleet demo $(DEMO_ARGS)

test: dev
	$(BIN)/python -m pytest

lint: dev
	$(BIN)/ruff check daemon tests
	$(BIN)/ruff format --check daemon tests
	$(BIN)/mypy

# Under 15 minutes on 2 cores; the scale rows build 7be2331's daemon once into .bench-cache/.
# `make bench BENCH_ARGS="scale --no-write"` runs one module without touching BENCHMARKS.md.
bench: dev
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .bench-cache
