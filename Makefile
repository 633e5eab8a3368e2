# Everything goes through a local virtualenv built from the pinned lock files,
# so `make demo` and `make test` work on a machine with only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: help install test test-unit lint demo sim bench soak lock clean

help:
	@echo "make demo   - set up, start the simulator, harvest ~200k rows into ./lake, summarise with DuckDB"
	@echo "make test   - set up and run the whole test suite"
	@echo "make test-unit - the fast tests only (no subprocess, Spark or S3 server; < 1 min)"
	@echo "make lint   - ruff + mypy --strict"
	@echo "make sim    - run the API simulator in the foreground"
	@echo "make bench  - run the benchmark harness (bench/)"
	@echo "make bench-pages - page size chosen by rows/s against fixed pages (~8 min)"
	@echo "make bench-scale - the real-scale scenario at 1 M and 10 M rows (~35 min, not in CI)"
	@echo "make bench-month - every one-partition step on a month of 1 M rows (~20 min, not in CI)"
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

# Four workers (pytest-xdist) on a 2-core machine: the suite mostly waits (rate limits,
# signals, a three-minute outage, subprocess start-up), using under one core of two with two
# workers (user+sys 7.7 of 10.5 minutes' wall time). --dist loadfile keeps each file on one
# worker, so a module's fixtures (a harvested lake, a Spark session, a built wheel) are built
# once; tests/support/schedule.py hands the long files out first. PYTEST_WORKERS=0 runs the
# suite serially; PYTEST_DIST=load spreads single tests instead of files. Measured on a clean
# clone (`.ci/run`, 2 cores, nothing else running, 2026-12-02): 1,607 tests in 6 min 23 s
# (6 min 56 s with the install); `make test-unit`: 1,206 tests in 46 s.
PYTEST_WORKERS ?= 4
PYTEST_DIST ?= loadfile
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) $(PYTEST_ARGS)

# The fast tests, chosen by file: each of these files starts no subprocess (no CLI, no simulator
# process), no Spark and no S3 server; the simulator they use runs on the test's own event
# loop. A file list rather than a marker: most other files mix a few quick tests with
# end-to-end ones, and a file that is fast as a whole is the unit a developer reruns. A new
# test file joins the list once all its tests are in-process and quick.
UNIT_TESTS := $(addprefix tests/,test_cli_settings.py test_client.py test_config.py \
	test_config_cmd.py test_decode.py test_layers.py test_lucene.py test_merge.py \
	test_paging.py test_plan.py test_policy.py test_quota.py test_sim_corpus.py test_sim_facts.py \
	test_sim_faults.py test_sim_latency.py test_sim_limits.py test_sim_query.py \
	test_sim_server.py)
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 $(UNIT_TESTS) $(PYTEST_ARGS)

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

# Real scale (bench/scale.py, docs/benchmarks.md "Real scale"): 1 M, then 10 M rows over
# eight years, each through harvest, status, plan, a mixed change, refresh, verify, compact
# and show; ~35 minutes on 2 cores (measured 2026-12-07: 1 M ~2.7, 10 M ~29), not in CI.
# SCALE_ARGS=--reuse takes the saved 1 M run (bench/results/scale-1000000.json) instead.
.PHONY: bench-scale
bench-scale: $(BENCH_STAMP)
	$(BIN)/python -m bench.scale --records 10000000 --also 1000000 $(SCALE_ARGS)

# Every single-partition step of the CLI on one month of a million rows, each step its own
# process, peak RSS measured from outside (bench/month_steps.py, issue 20 item 4; ~20-55
# minutes on 2 cores), not in CI. MONTH_ARGS=--records N for another size.
.PHONY: bench-month
bench-month: $(BENCH_STAMP)
	$(BIN)/python -m bench.month_steps $(MONTH_ARGS)

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
