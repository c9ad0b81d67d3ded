# The two commands of the README:  `make run` (set up, then train the quickstart model)
# and `make test` (set up, then run the test suite; .ci/run calls it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.genlab-installed
# The CPU build where there is no GPU: on this project's machines torch==2.13.0 resolves to a
# local CPU wheel. Elsewhere, point pip at a CPU wheel index (PIP_EXTRA_INDEX_URL) if needed.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

run: setup
	$(BIN)/genlab train examples/lm.yaml --run-dir runs/quickstart --overwrite

test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs studies .pytest_cache .ruff_cache
