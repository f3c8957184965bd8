# The two commands of the README: `make demo` and `make test`. Each sets up
# its own virtual environment and builds the Rust extension in release mode.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY_SOURCES := python cli tests benches

.PHONY: demo test build lint rust-test py-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "maturin>=1.7,<2"

# maturin installs the package's dependencies and the dev extras, then the
# CLI distribution goes in beside it.
build: $(BIN)/python
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --extras dev
	$(BIN)/python -m pip install --quiet -e ./cli

demo: build
	$(BIN)/tokenmill demo -o demo-out

lint: build
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest --mypy-config-file pyproject.toml tokenmill._core

rust-test:
	cargo test --workspace --locked

py-test: build
	$(BIN)/pytest

test: lint rust-test py-test

# As build, with the bench extras (transformers) for the Hugging Face peers.
bench: $(BIN)/python
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --extras dev,bench
	$(BIN)/python -m pip install --quiet -e ./cli
	$(BIN)/python benches/bench_tokenize.py
	$(BIN)/python benches/bench_dedup.py
	$(BIN)/python benches/bench_pack.py
	$(BIN)/python benches/bench_bm25.py
	$(BIN)/python benches/bench_negatives.py
	$(BIN)/python benches/bench_corrupt.py

clean:
	rm -rf $(VENV) target demo-out bench-out
