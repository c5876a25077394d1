# Self-bootstrapping: `make demo` and `make test` work on a fresh machine with python3 and make.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint typecheck unit bench bench-quick bench-served bench-tokens bench-compare clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

test: lint typecheck unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Benchmarks against openai-agents and pydantic-ai (installed into bench/.venv-peers by the runner).
bench: $(BENCH_STAMP)
	$(PY) bench/run.py

bench-quick: $(BENCH_STAMP)
	$(PY) bench/run.py --quick

# W1 of this tree against an earlier commit, alternating in one run: make bench-compare REV=8094c21
bench-compare: $(STAMP)
	$(PY) bench/w1_compare.py --rev $(REV)

# W5 alone (served mode, ~5 minutes), merged into bench/results.json and BENCHMARKS.md.
bench-served: $(BENCH_STAMP)
	$(PY) bench/run.py --only w5

# W6 alone (token stream, ~3 minutes), merged into bench/results.json and BENCHMARKS.md.
bench-tokens: $(BENCH_STAMP)
	$(PY) bench/run.py --only w6

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
