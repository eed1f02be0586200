# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and (re)install histoflow only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HISTOFLOW_DATA ?= $(abspath ../shared/data)
# Pretrained weights cannot be fetched on offline machines; fail fast instead of retrying the hub.
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-slow test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/histoflow demo --data-root "$(HISTOFLOW_DATA)"

test: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m "slow" -q

test-all: setup
	$(PY) -m pytest -q

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
