# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locks (make lock): every version pinned and hashed. make installs LOCK (the runtime and the
# extras LOCKED_EXTRAS), make soak and make fuzz TOOLS_LOCK (those and the soak and fuzz extras),
# the Dockerfile RUNTIME_LOCK; all three pin the same versions.
LOCK := requirements/dev.txt
TOOLS_LOCK := requirements/tools.txt
RUNTIME_LOCK := requirements/runtime.txt
LOCKED_EXTRAS := test bench
# pytest-xdist: the suite's tests isolate themselves (tests/support/parallel.py). Four workers on
# two cores win because the integration tests mostly wait on brokers and subprocesses; loadfile
# runs a module whole on one worker (one glusterd, one browser), in the order tests/conftest.py
# gives (the long integration modules first). PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: run test lint unit bench fuzz soak clean venv lock

venv: $(STAMP)

# The package itself goes in without its dependencies (the lock brought them); pip check fails
# when pyproject.toml asks for something the lock lacks: run make lock then.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Regenerate both locks from pyproject.toml, keeping every pin that still fits (UPGRADE=1: the newest
# versions allowed). Each smaller lock starts from the larger one's pins so that they agree.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import piptools' 2>/dev/null || $(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	mkdir -p requirements
	$(PIP_COMPILE) $(if $(UPGRADE),--upgrade) $(addprefix --extra ,$(LOCKED_EXTRAS) soak fuzz) --output-file $(TOOLS_LOCK) pyproject.toml
	cp $(TOOLS_LOCK) $(LOCK)
	$(PIP_COMPILE) $(addprefix --extra ,$(LOCKED_EXTRAS)) --output-file $(LOCK) pyproject.toml
	cp $(LOCK) $(RUNTIME_LOCK)
	$(PIP_COMPILE) --output-file $(RUNTIME_LOCK) pyproject.toml

run: $(STAMP)
	$(BIN)/bus-tasks demo

lint: $(STAMP)
	$(BIN)/ruff check bus_tasks tests bench
	$(BIN)/ruff format --check bus_tasks tests bench
	$(BIN)/mypy bus_tasks bench tests

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
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install --quiet --require-hashes -r $(TOOLS_LOCK)
	PYTHONPATH=tests $(BIN)/python -m fuzz.run --seconds $(FUZZ_S) $(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS))

# The whole system on the local RabbitMQ for SOAK_S seconds under churn, kills and dropped
# connections; fails when a task ends wrong or anything grows (docs/soak.md).
SOAK_S ?= 120
soak: $(STAMP)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet --require-hashes -r $(TOOLS_LOCK)
	cd tests && ../$(BIN)/python -m soak --seconds $(SOAK_S) --plot $(abspath $(or $(SOAK_PLOT),soak.png))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
