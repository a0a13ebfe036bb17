# Two entry points that work on a fresh machine with only python3:
#   make demo  - virtualenv, install, train small GANs on built-in data, export, serve
#   make test  - virtualenv, install, lint, run the whole test suite
#   make compose-test - the real `docker compose up` of the CPU stack (installs and starts Docker; root)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean compose-test

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

# Installs Debian's docker.io and debootstrap if missing and starts dockerd (deploy/local/ensure-docker.sh), then
# builds the local images and runs tests/deploy/test_compose_up.py. GAN_REQUIRE_DOCKER=1 turns a skip into a failure.
compose-test: install
	bash deploy/local/ensure-docker.sh
	$(BIN)/python -m pytest -q -m compose tests/deploy/test_compose_up.py

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
