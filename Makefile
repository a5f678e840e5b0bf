# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo serve test lint bench clean

install: $(STAMP)

# torch goes first and exactly pinned (constraints.txt): a range would pull several GB of CUDA builds.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/imagine model build-tiny
	$(BIN)/imagine generate "a lighthouse at dawn, oil painting" --out out

# The service in this terminal: the playground on http://127.0.0.1:8080/ (web.host, web.port), every chat adapter
# that has credentials, /healthz, /readyz and /metrics. Ctrl-C stops it.
serve: install
	$(BIN)/imagine serve

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/provenance.py
	$(BIN)/python bench/moderation.py
	$(BIN)/python bench/discord_ack.py
	$(BIN)/python bench/slack_ack.py
	$(BIN)/python bench/job_queue.py
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) out var .pytest_cache
