# Benchmarks: `make bench` runs bench/run_all.py in .venv. The reference libraries (repeng, steering-vectors) pin
# transformers<5 / numpy<2, so they get their own virtualenv; bench/refs/*.py run inside it as subprocesses.
REFS_VENV  := bench/.venv-refs
REFS_STAMP := $(REFS_VENV)/.installed

.PHONY: bench-refs bench-quick

bench-refs: $(REFS_STAMP)

# torch goes first, pinned, so pip takes the CPU build on disk and nothing pulls a CUDA build. A failed install
# does not stop `make bench`: the error is kept in install-failed.log and the results show it instead of a number.
$(REFS_STAMP): bench/refs/requirements.txt
	mkdir -p $(REFS_VENV)
	if { $(PYTHON) -m venv $(REFS_VENV) && \
	     $(REFS_VENV)/bin/python -m pip install --quiet torch==2.13.0 && \
	     $(REFS_VENV)/bin/python -m pip install --quiet -r bench/refs/requirements.txt; } 2> $(REFS_VENV)/install.log; \
	then rm -f $(REFS_VENV)/install-failed.log && touch $(REFS_STAMP); \
	else mv $(REFS_VENV)/install.log $(REFS_VENV)/install-failed.log; \
	     echo "bench-refs: install failed; see $(REFS_VENV)/install-failed.log (the results record it)"; fi

bench: bench-refs

bench-quick: setup bench-refs
	$(PY) -m bench.run_all --quick
