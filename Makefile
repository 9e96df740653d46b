# classroom-relay: everything runs from a virtual environment this Makefile creates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := relay policy classroom_client instructor_console

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "classroom-relay needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## make demo: a temporary facility, a relay and a scripted lesson (Ctrl-C to stop).
demo: $(STAMP)
	$(BIN)/classroom-relay demo

## make test: lint, type check, then every test.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(PACKAGES)

unit: $(STAMP)
	$(BIN)/pytest -q

## make bench: benchmarks, each with a baseline measured in the same run.
bench: $(STAMP)
	$(BIN)/classroom-relay bench chat
	$(BIN)/classroom-relay bench audit
	$(BIN)/classroom-relay bench editor
	$(BIN)/classroom-relay bench screen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
