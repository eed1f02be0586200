# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and (re)install only when requirements.lock or pyproject.toml changed.
# requirements.lock pins every package (pip-compile of pyproject.toml's [all,dev] extras), so a
# fresh machine gets the environment the README's figures were measured in; `make lock` renews it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HISTOFLOW_DATA ?= $(abspath ../shared/data)
# Pretrained weights cannot be fetched on offline machines; fail fast instead of retrying the hub.
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint docs test-slow test-all bench lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/histoflow demo --data-root "$(HISTOFLOW_DATA)"

# lint first: a layering or style break fails in seconds, before the suite runs; then the docs
# site, so a broken link, a stale README section or a docstring griffe cannot read fails CI
test: setup lint docs
	$(PY) -m pytest -m "not slow" -q

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts examples docs/hooks.py
	$(VENV)/bin/ruff format --check src tests bench scripts examples docs/hooks.py
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# the documentation site (mkdocs.yml; docs/hooks.py generates the CLI and recipe pages), warnings
# as errors; open build/site/index.html
docs: setup
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=src $(VENV)/bin/mkdocs build --strict --site-dir build/site

test-slow: setup
	$(PY) -m pytest -m "slow" -q

test-all: setup lint docs
	$(PY) -m pytest -q

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lock:
	$(PY) -m piptools compile --quiet --extra all --extra dev --strip-extras --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) runs .pytest_cache
