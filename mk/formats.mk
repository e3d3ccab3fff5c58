# llama.cpp for the tests that prove it reads steerlab's control-vector GGUFs: llama-cpp-python for the C API
# (tests/test_llamacpp.py) and llama.cpp's own `llama-completion` tool, run with the flags `steerlab export` prints
# (tests/test_llamacpp_cli.py). Both use ONE build of the llama.cpp vendored in the llama-cpp-python sdist: shared
# libraries (libllama, libggml*) plus the tool, kept as bin/ and lib/ (13 MB) under $(LLAMA_CPP); pip no longer
# compiles llama.cpp a second time for its own wheel.
# GGML_NATIVE=OFF: the native build compiles AMX kernels that die with "Illegal instruction" on these machines.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP := $(VENV)/llama.cpp-$(LLAMA_CPP_VERSION)-shared
LLAMA_COMPLETION := $(LLAMA_CPP)/bin/llama-completion
LLAMA_CPP_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)-shared
LLAMA_CPP_SRC := $(VENV)/llama.cpp-$(LLAMA_CPP_VERSION)-src
LLAMA_CPP_SDIST := $(LLAMA_CPP_SRC)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz

.PHONY: llama-cpp llama-cpp-tools llama-cpp-build
llama-cpp: $(LLAMA_CPP_STAMP)
llama-cpp-tools: $(LLAMA_COMPLETION)

# One download of the sdist serves both the build and the pip install; pip's HTTP cache makes a second one quick.
LLAMA_CPP_FETCH = [ -f $(LLAMA_CPP_SDIST) ] || $(PIP) download --quiet --no-binary :all: --no-deps \
	--dest $(LLAMA_CPP_SRC) "llama-cpp-python==$(LLAMA_CPP_VERSION)"

# The Python bindings without compiling anything: -DLLAMA_BUILD=OFF makes the sdist's CMakeLists skip llama.cpp, so
# the wheel holds no library and llama_cpp loads libllama.so from LLAMA_CPP_LIB_PATH, which tests/test_llamacpp.py
# sets to $(LLAMA_CPP)/lib before its import (a process that imports llama_cpp without it fails to find the library).
# Installed from the downloaded file, not by name: pip's wheel cache is keyed by where the sdist came from, not by
# CMAKE_ARGS, so by name it would reuse a full wheel built earlier. The old install (own libraries) goes first.
$(LLAMA_CPP_STAMP): $(STAMP) | $(LLAMA_COMPLETION)
	$(LLAMA_CPP_FETCH)
	$(PIP) uninstall --quiet --yes llama-cpp-python
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(PIP) install --quiet $(LLAMA_CPP_SDIST)
	rm -rf $(LLAMA_CPP_SRC) $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION) $(VENV)/llama.cpp-$(LLAMA_CPP_VERSION)
	touch $@

# llama-completion is the non-interactive tool (llama-cli is chat-only in this version). Only its target is built
# (ggml, llama, common and the tool itself); RPATH $ORIGIN/../lib lets the tool and the libraries find each other
# from $(LLAMA_CPP) once the sources and the build folder are gone.
# No server, no OpenSSL, no prebuilt web UI: nothing in the build reaches the network after the sdist download.
# (No LLAMA_CURL flag: this llama.cpp has dropped curl, and the option only prints a deprecation warning.)
LLAMA_CPP_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON -DLLAMA_OPENSSL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
	-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH=\$$ORIGIN/../lib
LLAMA_CPP_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Like pip's wheel cache, bin/ and lib/ are kept in the user's cache, keyed by version and flags, so a fresh clone on
# the same machine copies them instead of compiling.
LLAMA_CPP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/steerlab/llama.cpp-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CPP_CMAKE_ARGS)' | sha256sum | cut -c1-12)

$(LLAMA_COMPLETION): | $(STAMP)
	if [ -x $(LLAMA_CPP_CACHE)/bin/llama-completion ]; then \
	     rm -rf $(LLAMA_CPP) && mkdir -p $(LLAMA_CPP) && cp -a $(LLAMA_CPP_CACHE)/bin $(LLAMA_CPP_CACHE)/lib $(LLAMA_CPP)/; \
	else $(MAKE) --no-print-directory llama-cpp-build && mkdir -p $(dir $(LLAMA_CPP_CACHE)) && \
	     rm -rf $(LLAMA_CPP_CACHE).tmp && cp -a $(LLAMA_CPP) $(LLAMA_CPP_CACHE).tmp && \
	     rm -rf $(LLAMA_CPP_CACHE) && mv $(LLAMA_CPP_CACHE).tmp $(LLAMA_CPP_CACHE); fi
	$@ --version >/dev/null 2>&1 || { echo "$@ does not run (missing libraries?)"; rm -rf $(LLAMA_CPP); exit 1; }

# Measured on 2 cores under a load average of 15 (other jobs running): 3.5 min for the sdist download (pip prepares its
# metadata) and 61 min for the compile; the pip install without compiling then takes about 2 min, and a fresh clone
# that finds the cache copies bin/ and lib/ in under a second.
llama-cpp-build: | $(STAMP)
	@# cmake from PyPI when the machine has none (scikit-build-core does the same for the pip build).
	command -v cmake >/dev/null || $(PIP) install --quiet cmake
	$(LLAMA_CPP_FETCH)
	rm -rf $(LLAMA_CPP_SRC)/llama_cpp_python-$(LLAMA_CPP_VERSION) $(LLAMA_CPP_SRC)/build
	tar -xzf $(LLAMA_CPP_SDIST) -C $(LLAMA_CPP_SRC) llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S $(LLAMA_CPP_SRC)/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp \
		-B $(LLAMA_CPP_SRC)/build $(LLAMA_CPP_CMAKE_ARGS) >$(LLAMA_CPP_SRC)/cmake.log 2>&1 \
		|| { tail -40 $(LLAMA_CPP_SRC)/cmake.log; exit 1; }
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(LLAMA_CPP_SRC)/build --target llama-completion -j$(LLAMA_CPP_JOBS) \
		>$(LLAMA_CPP_SRC)/build.log 2>&1 || { tail -40 $(LLAMA_CPP_SRC)/build.log; exit 1; }
	rm -rf $(LLAMA_CPP).tmp && mkdir -p $(LLAMA_CPP).tmp/bin $(LLAMA_CPP).tmp/lib
	cp -a $(LLAMA_CPP_SRC)/build/bin/llama-completion $(LLAMA_CPP).tmp/bin/
	cp -a $(LLAMA_CPP_SRC)/build/bin/*.so* $(LLAMA_CPP).tmp/lib/
	rm -rf $(LLAMA_CPP) && mv $(LLAMA_CPP).tmp $(LLAMA_CPP)
	@# The sdist stays for the pip install; the sources and the build folder go.
	rm -rf $(LLAMA_CPP_SRC)/build $(LLAMA_CPP_SRC)/llama_cpp_python-$(LLAMA_CPP_VERSION)

TEST_PREREQS += llama-cpp llama-cpp-tools
