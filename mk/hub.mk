# Hub (the Steer Store): the tests run the store's suite against a real PostgreSQL server as well as SQLite.
# `make postgres` installs Debian's postgresql (binaries only are needed: tests/test_hub_support.py starts a throwaway
# cluster on a free loopback port with initdb/pg_ctl, as the postgres user, and removes it afterwards).
# `make starter-pack` rebuilds the shipped starter pack (src/steerlab/data/starter/, one vector per recipe in
# src/steerlab/hub/starter_recipes.py) from ../shared/datasets (or $STEERLAB_DATASETS) on the default model: missing
# files are built (STARTER_ARGS=--force rebuilds all; same data, same bytes), the pack is signed with the publisher
# key under $STEERLAB_HOME/keys (made on first use; the private key is never committed) and installed into the local
# store. A fresh machine needs none of it: the committed pack verifies with the public key in its manifest.
POSTGRES_INITDB = $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

STARTER_ARGS ?=

.PHONY: postgres starter-pack

postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "PostgreSQL present: $(POSTGRES_INITDB)"; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	fi

TEST_PREREQS += postgres

starter-pack: setup
	$(PY) -m steerlab.hub.starter $(STARTER_ARGS)
