# Set-up is part of every target: the first run creates .venv and installs medclass with its dependencies.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Real datasets live beside the repository (../shared/data) unless MEDCLASS_DATA says otherwise.
export MEDCLASS_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@# The web page's browser test drives Debian's chromium; install it when we can (root with apt).
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: install chromium (apt-get install chromium) for the browser test"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/medclass train -c configs/breastmnist.yaml

test: install
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
