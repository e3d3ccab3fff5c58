# llama-cpp-python, for the test that proves llama.cpp reads steerlab's control-vector GGUFs (tests/test_llamacpp.py).
# Built from source (about 15 minutes on 2 cores); pip keeps the built wheel in its cache, so a rebuild is quick.
# GGML_NATIVE=OFF: the native build compiles AMX kernels that die with "Illegal instruction" on these machines.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)

.PHONY: llama-cpp
llama-cpp: $(LLAMA_CPP_STAMP)

$(LLAMA_CPP_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

TEST_PREREQS += llama-cpp
