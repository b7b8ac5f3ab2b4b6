# NIAS: `make up` starts every service locally; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: up test test-unit bench chaos venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: constraints.txt requirements-dev.txt pyproject.toml */pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

up: venv
	$(PY) tools/launcher.py

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench.py

chaos: venv
	$(PY) bench/chaos.py

clean:
	rm -rf $(VENV) shared-volume/*
