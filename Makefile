# make run   : set up a local virtualenv and run the sinusoid experiment (no download)
# make table : the MAML Omniglot table (experiments.fewshot.table), resumed where it stopped
# make test  : set up the virtualenv and run the test suite (what CI runs)
# make lint  : ruff (lint + format check) and pyright (types), the gates CI runs first
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run run-full table lint format docs test test-slow bench bench-peers clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'  # the library with every extra: data, plots, experiments, test
	touch $@

run: install
	$(PY) -m experiments.sinusoid.main

run-full: install
	$(PY) -m experiments.sinusoid.main --full --workdir runs/sinusoid_full

table: install  # the MAML Omniglot table: 4 settings x seeds 0, 1, 2, second order, 60,000 iterations each; resumes
	$(PY) -m experiments.fewshot.table --workdir runs/table

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright --pythonpath $(PY)

format: install  # rewrites files: imports sorted, code formatted
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install  # the API site, warnings as errors: HTML in build/docs, then every page's code run
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html -d build/docs/.doctrees docs/site build/docs
	$(VENV)/bin/sphinx-build -W --keep-going -q -b doctest -d build/docs/.doctrees docs/site build/doctest

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) -m benchmarks.harness

bench-peers: install  # needs PyTorch (and learn2learn): docs/benchmarks/peers_install.md
	$(PY) -m benchmarks.peers --out docs/benchmarks/peers_cpu.json

clean:
	rm -rf $(VENV) runs .pytest_cache
