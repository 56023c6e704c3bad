# Two entry points for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

WEB_STAMP := web/node_modules/.package-lock.json

.PHONY: setup chromium run test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The editor's front-end packages (litegraph.js, pinned by web/package-lock.json).
$(WEB_STAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix web --no-audit --no-fund; \
	else echo "note: npm is missing, so the browser editor cannot be installed; install Node.js + npm, then run: npm ci --prefix web" >&2; fi

# Debian's chromium drives the browser tests (tests/browser); no browser is ever downloaded.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y chromium || echo "note: installing chromium failed; the browser tests will be skipped" >&2; \
	else echo "note: chromium is missing, so the browser tests will be skipped; install it with: sudo apt-get install -y chromium" >&2; fi

setup: $(STAMP) $(WEB_STAMP) chromium

run: $(STAMP) $(WEB_STAMP)
	$(BIN)/python main.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/executor.py

clean:
	rm -rf $(VENV) temp
