# Everything goes through a local virtualenv built from the pinned lock files,
# so `make demo` and `make test` work on a machine with only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: help install test lint demo sim bench soak lock clean

help:
	@echo "make demo   - set up, start the simulator, harvest ~200k rows into ./lake, summarise with DuckDB"
	@echo "make test   - set up and run the whole test suite"
	@echo "make lint   - ruff + mypy --strict"
	@echo "make sim    - run the API simulator in the foreground"
	@echo "make bench  - run the benchmark harness (bench/)"
	@echo "make soak   - run SEEDS (default 10) more seeded seasons of refreshes (tests/season.py)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip passes setuptools' "Editable installation" notice on as a warning, --quiet or not
# (even -qq): the editable install filters out that one warning; errors and every other
# warning still show.
$(STAMP): $(BIN)/python requirements/test.lock pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements/test.lock
	$(BIN)/python -W "ignore:Editable installation:UserWarning" -m pip install --quiet --no-deps -e .
	touch $@

$(BENCH_STAMP): $(STAMP) requirements/bench.lock
	$(BIN)/python -m pip install --quiet -r requirements/bench.lock
	touch $@

install: $(STAMP)

# Two workers (pytest-xdist): the suite is mostly waiting on subprocesses and sockets, so
# two halve its time on a 2-core machine; override with PYTEST_WORKERS=0 to run it serially.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check harvester tests bench
	$(BIN)/ruff format --check harvester tests bench
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m harvester.demo

sim: $(STAMP)
	$(BIN)/harvester simulate $(SIM_ARGS)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The chosen page against fixed pages on a simulator whose pages take longer the larger
# they are (bench/page_size.py; ~6 minutes; figures in docs/benchmarks.md).
.PHONY: bench-pages
bench-pages: $(STAMP)
	$(BIN)/python -m bench.page_size $(BENCH_ARGS)

# Seeded seasons of daily refreshes beyond the suite's fixed seeds: 16 steps each, checked
# row for row after every step; a failing seed prints the steps that reproduce it.
SEEDS ?= 10
FIRST_SEED ?= 100
soak: $(STAMP)
	$(BIN)/python -m tests.season $(SEEDS) $(FIRST_SEED)

# Regenerate the pinned lock files (needs network to PyPI; uses uv for resolution only).
lock:
	$(PYTHON) -m pip install --quiet --user uv || true
	$(PYTHON) -m uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements/test.lock
	$(PYTHON) -m uv pip compile pyproject.toml --extra test --extra bench --python-version 3.11 -o requirements/bench.lock

clean:
	rm -rf $(VENV) lake .pytest_cache .mypy_cache .ruff_cache
