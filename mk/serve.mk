# Serve: the browser test drives Debian's chromium (never `playwright install`, which downloads browsers).
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium

chromium:
	@if [ -x $(CHROMIUM) ]; then echo "chromium present at $(CHROMIUM)"; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

TEST_PREREQS += chromium

# `make serve [SERVE_ARGS="--kits DIR --port 8000"]`: the OpenAI-compatible server with the slider page at /.
SERVE_ARGS ?=
.PHONY: serve
serve: setup
	$(PY) -m steerlab serve $(SERVE_ARGS)
