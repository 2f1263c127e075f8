# The two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
UV_VERSION := 0.13.9
# The CPU build of torch lives in pip's find-links folder on these machines;
# uv does not read pip's configuration, so pass the folder on when it exists.
FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/.*find-links='\([^']*\)'.*/\1/p" | head -n 1)
UV_FIND_LINKS := $(if $(and $(FIND_LINKS),$(wildcard $(FIND_LINKS))),--find-links $(FIND_LINKS),)
PYTEST_ARGS ?=

.PHONY: install run test test-all lint lock chromium bench-queue bench-al bench-scoring bench-meta bench-federated clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is needed (the CPU build of torch is for Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(UV_FIND_LINKS) -r requirements.txt
	touch $@

lock: $(VENV)/.installed
	# uv prefers the pins already in the output file: give it back the local label first, or it
	# resolves torch==2.13.0 from PyPI with gigabytes of CUDA dependencies
	sed -i 's/^torch==\([0-9.]*\)$$/torch==\1+cpu/' requirements.txt
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11 --no-header $(UV_FIND_LINKS)
	# torch==2.13.0 (no local label) matches the local 2.13.0+cpu wheel and stays installable elsewhere
	sed -i 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' requirements.txt

# Debian's chromium for the browser tests (root + apt-get); tests skip, saying why, without it.
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium; browser tests will be skipped"; \
	else echo "chromium is not installed and cannot be installed here; browser tests will be skipped"; fi

run: install
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --no-input -v 0
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py seed_demo
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py runworkbench --port $(PORT)

# ruff, then the import layers (.importlinter) and the types of the packages mypy.ini lists; tests/test_layers.py
# runs the last two inside the suite too, for CI legs that skip `make lint`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy

test: install chromium lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The slow end-to-end tests too (CI runs them when its time budget allows).
test-all: install chromium
	$(BIN)/python -m pytest --run-slow $(PYTEST_ARGS)

bench-queue: install
	$(BIN)/python bench/queue/run.py

bench-scoring: install
	$(BIN)/python bench/scoring/run.py

bench-al: install
	$(BIN)/python -m bench.active_learning.run

bench-meta: install
	$(BIN)/python -m bench.meta_learning.run

bench-federated: install
	$(BIN)/python -m bench.federated.run

clean:
	rm -rf $(VENV) var
