# Two commands on a fresh machine (Python 3.11, make, git):
#   make run    the service on the embedded default, with demo executions
#   make test   lint, types, layer contracts and the whole test suite
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
UV_VERSION := 0.13.9

.PHONY: run demo test lint unit bench clean

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

test: lint
	$(VENV)/bin/pytest --basetemp=$(CURDIR)/.pytest_tmp

unit: $(VENV)/.synced
	$(VENV)/bin/pytest tests/unit

bench: $(VENV)/.synced
	$(VENV)/bin/python -m bench.run

clean:
	rm -rf $(TOOLS) $(VENV) .pytest_cache .mypy_cache .ruff_cache
