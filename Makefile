# hoststamp: the two commands are `make run` and `make test`; everything else is set up by them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip
ARGS   ?=

.PHONY: run test bench lint sysdeps nativedeps venv install install-test keys clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(BIN)/python

# runtime install (editable, so `make run` always runs this checkout); it compiles the native parts
# (agent/_native) when nativedeps could provide a compiler and the libraries' headers, and goes on without them
$(VENV)/.installed: pyproject.toml setup.py $(wildcard agent/_native/*.c) | $(BIN)/python nativedeps
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py $(wildcard agent/_native/*.c) | $(BIN)/python nativedeps
	$(PIP) install -q -e '.[test]'
	touch $(VENV)/.installed $@

# what the native parts are built with: a C compiler, libsodium's headers (the signer) and OpenSSL's (the
# guest restamper). Installed only when missing.
nativedeps:
	@missing=""; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	test -f /usr/include/sodium.h || missing="$$missing libsodium-dev"; \
	test -f /usr/include/openssl/sha.h || missing="$$missing libssl-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	    || echo "warning: could not install$$missing; the agent will run without its native parts"; \
	fi

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# system packages the tests use: fuse (fusermount + libfuse2 for fusepy), iproute2 (netns, veth),
# systemd (systemd-analyze). Installed only when missing; needs root, as CI is.
sysdeps:
	@missing=""; \
	command -v fusermount >/dev/null 2>&1 || missing="$$missing fuse"; \
	ldconfig -p 2>/dev/null | grep -q 'libfuse.so.2' || missing="$$missing libfuse2"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	    || echo "warning: could not install$$missing; tests needing them will be skipped"; \
	fi

keys: install
	@test -f keys/host.key || $(BIN)/hoststamp keys generate --dir keys

# not echoed: `make run ARGS="--once --sink stdout:"` prints only the events on stdout
run: install keys
	@$(BIN)/hoststamp run $(ARGS)

test: install-test sysdeps
	$(BIN)/python -m pytest -q $(ARGS)

bench: install-test
	$(BIN)/python -m benchmarks $(ARGS)

lint: install-test
	$(BIN)/ruff check agent tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var build *.egg-info
