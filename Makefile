# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create or reuse the project-local virtual environment .venv with pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m simulation.demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf runs .cache .flwr_home .pytest_cache
