# NIAS: `make up` starts every service locally; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: up unit test test-unit bench chaos venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: constraints.txt requirements-dev.txt pyproject.toml */pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

up: venv
	$(PY) tools/launcher.py

# One processing unit and its consumer, in the foreground, for this host to serve a backend elsewhere:
# set NIAS_AMQP_URL, NIAS_BACKEND_URL, NIAS_INTERNAL_TOKEN and NIAS_UNIT_NAME (docs/deployment.md, "Add a host").
unit: venv
	$(PY) -m process_unit.standalone

# Test files run in TEST_WORKERS processes (each file's tests stay in one, so a module's stack is
# started once); TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench.py
	$(PY) bench/log_pump.py

chaos: venv
	$(PY) bench/chaos.py

clean:
	rm -rf $(VENV) shared-volume/*
