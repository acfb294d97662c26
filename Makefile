# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist: the suite's tests isolate themselves (tests/support/parallel.py). Four workers on
# two cores win because the integration tests mostly wait on brokers and subprocesses; loadfile
# runs a module whole on one worker (one glusterd, one browser), in the order tests/conftest.py
# gives (the long integration modules first). PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: run test lint unit bench fuzz soak clean venv

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
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not integration"

bench: $(STAMP)
	$(BIN)/python -m bench

# Every parser of outside input under atheris for FUZZ_S seconds per target (FUZZ_TARGETS: some of
# them, comma-separated); keeps the corpus and any crasher under tests/fuzz/ (docs/fuzzing.md).
FUZZ_S ?= 60
FUZZ_TARGETS ?=
fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[fuzz]'
	PYTHONPATH=tests $(BIN)/python -m fuzz.run --seconds $(FUZZ_S) $(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS))

# The whole system on the local RabbitMQ for SOAK_S seconds under churn, kills and dropped
# connections; fails when a task ends wrong or anything grows (docs/soak.md).
SOAK_S ?= 120
soak: $(STAMP)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,bench,soak]'
	cd tests && ../$(BIN)/python -m soak --seconds $(SOAK_S) --plot $(CURDIR)/$(or $(SOAK_PLOT),soak.png)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
