# Two commands set everything up: `make demo` and `make test` create the environment when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
export EDGEPLAT_HOME ?= $(CURDIR)/.edgeplat

.PHONY: demo demo-production test test-fast dev bench bench-quick lint fmt lock validate clean

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on this CI image), every process would
# otherwise recompile dagster, pandas & co. from source: about 3 s for each of the many processes the tests and the demo start.
$(STAMP): pyproject.toml edge_sync/pyproject.toml requirements.lock system-packages.txt
	@scripts/install-system-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --reinstall-package edge-sync -e ./edge_sync -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeplat demo

# The same demo on the production stack: PostgreSQL (127.0.0.1:5432), a moto S3 server and an OpenBao
# dev server, started and stopped by the demo (cli/demo/production.py).
demo-production: $(STAMP)
	EDGEPLAT_HOME=$(CURDIR)/.edgeplat-production $(BIN)/edgeplat demo --production

# --max-worker-restart=0: a crashed worker ends the run with a report naming the test. With restarts,
# pytest-xdist 3.8's loadgroup scheduler can hang for good (pytest-xdist#1323, #1378).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup --max-worker-restart=0 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not services" $(PYTEST_ARGS)

dev: $(STAMP)
	$(BIN)/edgeplat dev

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-resolve the pinned dependency set after editing a pyproject.toml (the platform's pulls in the
# device package, ./edge_sync, through [tool.uv.sources]; existing pins are kept where they still fit).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .edgeplat .pytest_cache
