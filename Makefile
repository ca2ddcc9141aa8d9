# Every target creates or refreshes the virtual environment itself (uv, locked deps).
SHELL := /bin/bash
VENV  := .venv
TOOLS := .tools
UV    := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
export UV_NATIVE_TLS := 1
export UV_PYTHON_DOWNLOADS := never
# Compile site-packages to bytecode once (this machine sets PYTHONDONTWRITEBYTECODE):
# otherwise every process start recompiles ~1,300 modules (~3 s).
export UV_COMPILE_BYTECODE := 1

.PHONY: demo test browser lint fmt schemas eval bench bench-store screenshots fuzz clean

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev
	touch $@

# The demo needs only the runtime packages; --inexact keeps the dev extras if the tests
# installed them (a plain sync would remove them, and the next `make test` reinstall).
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --inexact
	touch $@

## README command 1: the main job on the embedded default (no servers).
demo: $(VENV)/.runtime
	$(VENV)/bin/fraud demo $(ARGS)

## Headless Chromium + chromedriver for the dashboard's browser tests (Debian packages).
APT := $(shell [ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(APT) install -y -q chromium chromium-driver || \
	  { $(APT) update -q && $(APT) install -y -q chromium chromium-driver; }; }

## README command 2: the whole test suite (starts the services it needs itself).
test: $(VENV)/.synced browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

## Long fuzzing run of the parse boundary (Hypothesis, 100,000 examples per property);
## `make test` runs the same properties with the short `ci` profile.
fuzz: $(VENV)/.synced
	$(VENV)/bin/python -m pytest -p no:cacheprovider tests/fuzz/test_parse_fuzz.py \
	  --hypothesis-profile=fuzz --hypothesis-show-statistics -q $(ARGS)

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

fmt: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schemas: $(VENV)/.synced
	$(VENV)/bin/fraud schemas

## Store benchmark: sink rows/s and dashboard query latency at 1M and 5M rows, on the
## embedded chDB and over HTTP (clickhouse-connect -> the chDB-backed test server).
BENCH_DIR := /tmp/fraud-bench-$(shell id -u)
bench-store: $(VENV)/.synced
	rm -rf $(BENCH_DIR) && mkdir -p $(BENCH_DIR)
	$(VENV)/bin/fraud bench-store --url chdb://$(BENCH_DIR)/chdb $(ARGS)
	$(VENV)/bin/python tests/chserver.py --path $(BENCH_DIR)/http --port 18123 & \
	  pid=$$!; sleep 3; \
	  $(VENV)/bin/fraud bench-store --url http://127.0.0.1:18123 $(ARGS); rc=$$?; \
	  kill $$pid; exit $$rc

## Detection quality against the handbook's published results (docs/eval/).
eval: $(VENV)/.synced
	$(VENV)/bin/fraud eval --out docs/eval $(ARGS)

## End-to-end benchmark (docs/benchmarks.md); ARGS=--quick for a one-minute run.
bench: $(VENV)/.synced
	$(VENV)/bin/fraud bench --out docs/benchmarks.md $(ARGS)

## Screenshots of the live demo for the docs (docs/img/*.png).
screenshots: $(VENV)/.synced browser
	$(VENV)/bin/python -m tests.tools.screenshots --out docs/img

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
