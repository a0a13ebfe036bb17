# Two entry points that work on a fresh machine with only python3:
#   make demo  - virtualenv, install, serve the committed release models (DEMO_TRAIN=1: train small GANs first)
#   make test  - virtualenv, install, lint, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the CPU wheel on the build machines and satisfies the project's
	# range, so the editable install below adds nothing from PyTorch's multi-GB CUDA builds.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[train,export,serve,dev]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
