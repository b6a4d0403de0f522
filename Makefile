# Two entry points for a fresh clone: `make quickstart` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a CPU-only machine whose pip would fetch the CUDA build of torch, point this at a CPU wheel index.
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: setup quickstart test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_INDEX_ARGS) -c constraints.txt -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/lit-infer predict --config configs/quickstart.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two test processes: most slow tests wait on the processes they start (ranks, torchrun, stop signals), so two
# overlap well even on two cores. Each test still has its own folders and ports. Tests are handed out one at a time
# as a process becomes free (--maxschedchunk 1), not a file at a time (--dist loadfile kept one process busy with a
# file of a few long tests for minutes after the other had run out). The 30 slowest are listed at the end of the log.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist load --maxschedchunk 1 --durations=30

# The inner loop: tests that start no process and take under a second each (the rest are marked slow).
.PHONY: test-fast
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python -m benchmarks.harness

clean:
	rm -rf $(VENV) outputs .pytest_cache
