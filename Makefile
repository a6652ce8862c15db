# poseops: `make demo` sets up and runs the pipeline on the bundled demo project;
# `make test` sets up and runs the whole test suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint repro clean-demo mlflow-ui

$(BIN)/poseops: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(BIN)/poseops

setup: $(BIN)/poseops

# Generate the seeded demo DLC project, bring it under DVC, and run every stage.
demo: setup
	$(BIN)/poseops demo
	$(BIN)/poseops init data/raw/demo --in-place --keep-metadata
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

repro: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

test: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest --durations=30

lint: setup
	$(BIN)/ruff check src tests benchmarks

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000
