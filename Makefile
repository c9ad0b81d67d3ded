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

# `make run` trains the quickstart into $(RUN_DIR). A second `make run` keeps that run (its
# checkpoints, evaluations and plots) and says how to go on: OVERWRITE=1 trains it again from
# scratch, RUN_DIR=... trains another. ARGS adds overrides, e.g. ARGS="train.max_steps=200".
RUN_DIR ?= runs/quickstart

run: setup
	@if [ -n "$$(ls -A '$(RUN_DIR)' 2>/dev/null)" ] && [ -z "$(OVERWRITE)" ]; then \
		echo "make run: $(RUN_DIR) already holds a run; it is kept. Continue it:" \
			"$(BIN)/genlab resume $(RUN_DIR) (add train.max_steps=N to extend it);" \
			"train it again from scratch: make run OVERWRITE=1;" \
			"train another: make run RUN_DIR=$(RUN_DIR)-2" >&2; \
		exit 2; \
	fi
	$(BIN)/genlab train examples/lm.yaml --run-dir $(RUN_DIR) $(if $(OVERWRITE),--overwrite) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs studies .pytest_cache .ruff_cache
