# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench soak clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bus-tasks demo

lint: $(STAMP)
	$(BIN)/ruff check bus_tasks workers tests bench
	$(BIN)/mypy bus_tasks workers bench tests

test: lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

bench: $(STAMP)
	$(BIN)/python -m bench

# The whole system on the local RabbitMQ for SOAK_S seconds under churn, kills and dropped
# connections; fails when a task ends wrong or anything grows (docs/soak.md).
SOAK_S ?= 120
soak: $(STAMP)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,bench,soak]'
	cd tests && ../$(BIN)/python -m soak --seconds $(SOAK_S) --plot $(CURDIR)/$(or $(SOAK_PLOT),soak.png)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
