# Self-bootstrapping: `make demo` and `make test` work on a fresh machine with python3 and make.
# `make test` also needs npm (Node.js 20+) for the MCP reference server the tests run, the PostgreSQL
# server binaries for the session store tests, and Chromium with its driver for the inspector's browser
# test: installed with apt-get when missing and running as root (as CI does), else it says what to install.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# MCP servers the tests run (tests/agents/mcp): installed from a pinned lockfile into a git-ignored directory.
MCP_NPM := tests/agents/mcp/npm
MCP_DIR := .mcp
MCP_STAMP := $(MCP_DIR)/.installed
# PostgreSQL server binaries (initdb, pg_ctl) for the tests' throwaway cluster (tests/pg.py).
PG_STAMP := $(VENV)/.postgresql-found
# Headless Chromium and its driver (Debian's) for the inspector's browser test (tests/streams/test_inspector_browser.py).
BROWSER_STAMP := $(VENV)/.chromium-found

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint typecheck unit bench bench-quick bench-served bench-tokens bench-durable bench-compare bench-tracing clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,mcp,postgres,otel]'
	touch $(STAMP)

$(MCP_STAMP): $(MCP_NPM)/package.json $(MCP_NPM)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing nodejs and npm (apt-get) for the MCP reference server the tests run"; \
			apt-get install -y -qq nodejs npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }; \
		else \
			echo "make: npm (Node.js 20 or later) is needed to install the MCP reference server the tests run;" >&2; \
			echo "      install Node.js and npm (e.g. apt-get install nodejs npm), then run make again." >&2; \
			exit 1; \
		fi; }
	mkdir -p $(MCP_DIR)
	cp $(MCP_NPM)/package.json $(MCP_NPM)/package-lock.json $(MCP_DIR)/
	npm ci --prefix $(MCP_DIR) --no-audit --no-fund --loglevel=error
	touch $(MCP_STAMP)

$(PG_STAMP): $(STAMP)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing postgresql (apt-get) for the session store tests"; \
			apt-get install -y -qq postgresql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql; }; \
		else \
			echo "make: the PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are needed by the session store tests;" >&2; \
			echo "      install the Debian package postgresql (apt-get install postgresql), then run make again." >&2; \
			exit 1; \
		fi; }
	touch $(PG_STAMP)

$(BROWSER_STAMP): $(STAMP)
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make: installing chromium and chromium-driver (apt-get) for the inspector's browser test"; \
			apt-get install -y -qq chromium chromium-driver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; \
		else \
			echo "make: Chromium and its driver (/usr/bin/chromium, /usr/bin/chromedriver) are needed by the inspector's browser test;" >&2; \
			echo "      install the Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver), then run make again." >&2; \
			exit 1; \
		fi; }
	touch $(BROWSER_STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

test: lint typecheck unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP) $(MCP_STAMP) $(PG_STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Benchmarks against openai-agents and pydantic-ai (installed into bench/.venv-peers by the runner).
bench: $(BENCH_STAMP)
	$(PY) bench/run.py

bench-quick: $(BENCH_STAMP)
	$(PY) bench/run.py --quick

# W1 with opentelemetry-api installed and no SDK configured, against tracing absent, in one process (target: <= 1.05)
bench-tracing: $(STAMP)
	$(PY) bench/w1_tracing.py

# W1 of this tree against an earlier commit, alternating in one run: make bench-compare REV=8094c21
bench-compare: $(STAMP)
	$(PY) bench/w1_compare.py --rev $(REV)

# W5 alone (served mode, ~5 minutes), merged into bench/results.json and BENCHMARKS.md.
bench-served: $(BENCH_STAMP)
	$(PY) bench/run.py --only w5

# W6 alone (token stream, ~3 minutes), merged into bench/results.json and BENCHMARKS.md.
bench-tokens: $(BENCH_STAMP)
	$(PY) bench/run.py --only w6

# W1 durable alone (W1 on SQLite, PostgreSQL and openai-agents' SQLiteSession, ~3 minutes), merged into
# bench/results.json and BENCHMARKS.md. Its PostgreSQL column needs the server binaries (Debian `postgresql`).
bench-durable: $(BENCH_STAMP)
	$(PY) bench/run.py --only w1_durable

clean:
	rm -rf $(VENV) $(MCP_DIR) .mypy_cache .pytest_cache .ruff_cache
