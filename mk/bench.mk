# Benchmarks: `make bench` runs bench/run_all.py in .venv. The reference libraries (repeng, steering-vectors) pin
# transformers<5 / numpy<2, so they get their own virtualenv; bench/refs/*.py run inside it as subprocesses.
REFS_VENV  := bench/.venv-refs
REFS_STAMP := $(REFS_VENV)/.installed

.PHONY: bench-refs bench-quick

bench-refs: $(REFS_STAMP)

$(REFS_STAMP): bench/refs/requirements.txt
	$(PYTHON) -m venv $(REFS_VENV)
	$(REFS_VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so the CPU build on disk is used and nothing pulls a CUDA build.
	$(REFS_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(REFS_VENV)/bin/python -m pip install --quiet -r bench/refs/requirements.txt
	touch $(REFS_STAMP)

bench: bench-refs

bench-quick: setup bench-refs
	$(PY) -m bench.run_all --quick
