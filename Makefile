# Two commands on a fresh machine (Python 3.11, make, git):
#   make run    the service on the embedded default, with demo executions
#   make test   lint (code, types, layer contracts, Dockerfiles) and the whole test suite
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
UV_VERSION := 0.13.9

.PHONY: run demo test lint unit bench browser clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $@

run: $(VENV)/.synced
	$(VENV)/bin/export-service serve --embedded --demo

demo: $(VENV)/.synced
	$(VENV)/bin/export-service demo

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/cfn-lint infra/template.yaml
	$(VENV)/bin/hadolint Dockerfile Dockerfile.dev

# Debian's chromium and chromedriver, for the web console's browser test (as root on a
# Debian or Ubuntu machine; elsewhere install them yourself, or that one test is skipped).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing: the console's browser test will be skipped"; fi

# Test files run in parallel (pytest-xdist), each whole file on one worker, the longest
# first (tests/conftest.py): most of the suite's time is spent waiting on leases and
# timeouts, not CPU. TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 3

test: lint browser
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --basetemp=$(CURDIR)/.pytest_tmp --durations=40

unit: $(VENV)/.synced
	$(VENV)/bin/pytest tests/unit

# every benchmark (about an hour on 2 cores), then bench/README.md's tables and charts
bench: $(VENV)/.synced
	$(VENV)/bin/python -m bench.run

clean:
	rm -rf $(TOOLS) $(VENV) .pytest_cache .mypy_cache .ruff_cache
