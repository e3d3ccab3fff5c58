# llama.cpp for the tests that prove it reads steerlab's control-vector GGUFs: llama-cpp-python for the C API
# (tests/test_llamacpp.py) and llama.cpp's own `llama-completion` tool, run with the flags `steerlab export` prints
# (tests/test_llamacpp_cli.py). Both come from the same llama.cpp: the one vendored in the llama-cpp-python sdist.
# GGML_NATIVE=OFF: the native build compiles AMX kernels that die with "Illegal instruction" on these machines.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)

.PHONY: llama-cpp llama-cpp-tools
llama-cpp: $(LLAMA_CPP_STAMP)

# Built from source (about 15 minutes on 2 cores); pip keeps the built wheel in its cache, so a rebuild is quick.
$(LLAMA_CPP_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

# llama-completion (the non-interactive tool; llama-cli is chat-only in this version), statically linked so the one
# binary (11 MB) is all that is kept: the sources and the build folder go once it is copied out, and `make test` finds
# it next time. Only that target is built (ggml, llama, common): 10 CPU-minutes, so ~5-6 min wall on 2 quiet cores
# plus the sdist download (38 min wall was measured under a load average of 12 on 2 cores).
# It compiles ggml a second time: llama-cpp-python could link a shared libllama built here (CMAKE_ARGS=-DLLAMA_BUILD=OFF)
# but then finds it only through LLAMA_CPP_LIB_PATH, set in every process that imports it; not worth 5 minutes.
# No server, no OpenSSL, no prebuilt web UI: nothing in the build reaches the network after the sdist download.
# (No LLAMA_CURL flag: this llama.cpp has dropped curl, and the option only prints a deprecation warning.)
LLAMA_CPP_TOOLS := $(VENV)/llama.cpp-$(LLAMA_CPP_VERSION)
LLAMA_COMPLETION := $(LLAMA_CPP_TOOLS)/bin/llama-completion
LLAMA_CPP_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_USE_PREBUILT_UI=OFF
LLAMA_CPP_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

llama-cpp-tools: $(LLAMA_COMPLETION)

# Like pip's wheel cache, the built binary is kept in the user's cache, keyed by version and flags, so a fresh clone
# on the same machine copies it instead of compiling ggml again.
LLAMA_CPP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/steerlab/llama.cpp-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CPP_CMAKE_ARGS)' | sha256sum | cut -c1-12)

$(LLAMA_COMPLETION): | $(STAMP)
	rm -rf $(LLAMA_CPP_TOOLS) && mkdir -p $(LLAMA_CPP_TOOLS)/bin
	if [ -x $(LLAMA_CPP_CACHE)/llama-completion ]; then cp $(LLAMA_CPP_CACHE)/llama-completion $@; \
	else $(MAKE) --no-print-directory llama-cpp-build && mkdir -p $(LLAMA_CPP_CACHE) && \
	     cp $@ $(LLAMA_CPP_CACHE)/llama-completion.tmp && mv $(LLAMA_CPP_CACHE)/llama-completion.tmp $(LLAMA_CPP_CACHE)/llama-completion; fi

.PHONY: llama-cpp-build
llama-cpp-build:
	@# cmake from PyPI when the machine has none (scikit-build-core does the same for the pip build).
	command -v cmake >/dev/null || $(PIP) install --quiet cmake
	$(PIP) download --quiet --no-binary :all: --no-deps --dest $(LLAMA_CPP_TOOLS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	tar -xzf $(LLAMA_CPP_TOOLS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_CPP_TOOLS) \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S $(LLAMA_CPP_TOOLS)/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp \
		-B $(LLAMA_CPP_TOOLS)/build $(LLAMA_CPP_CMAKE_ARGS) >$(LLAMA_CPP_TOOLS)/cmake.log 2>&1 \
		|| { tail -40 $(LLAMA_CPP_TOOLS)/cmake.log; exit 1; }
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(LLAMA_CPP_TOOLS)/build --target llama-completion -j$(LLAMA_CPP_JOBS) \
		>$(LLAMA_CPP_TOOLS)/build.log 2>&1 || { tail -40 $(LLAMA_CPP_TOOLS)/build.log; exit 1; }
	cp $(LLAMA_CPP_TOOLS)/build/bin/llama-completion $(LLAMA_COMPLETION).tmp && mv $(LLAMA_COMPLETION).tmp $(LLAMA_COMPLETION)
	rm -rf $(LLAMA_CPP_TOOLS)/build $(LLAMA_CPP_TOOLS)/llama_cpp_python-$(LLAMA_CPP_VERSION) $(LLAMA_CPP_TOOLS)/*.tar.gz

TEST_PREREQS += llama-cpp llama-cpp-tools
