# Hub (the Steer Store): the tests run the store's suite against a real PostgreSQL server as well as SQLite.
# `make postgres` installs Debian's postgresql (binaries only are needed: tests/test_hub_support.py starts a throwaway
# cluster on a free loopback port with initdb/pg_ctl, as the postgres user, and removes it afterwards).
# `make starter-pack` builds >= 20 vectors for the default model from ../shared/datasets into the local store.
POSTGRES_INITDB = $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

.PHONY: postgres starter-pack

postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "PostgreSQL present: $(POSTGRES_INITDB)"; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	fi

TEST_PREREQS += postgres

starter-pack: setup
	$(PY) -m steerlab.hub.starter
