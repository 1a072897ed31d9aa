# Every target does its own set-up (idempotent), so `make run` and `make test` work on a
# fresh machine that has only Rust and Python 3.
SHELL := /bin/bash
CACHE ?= $(or $(SAM2_TUI_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sam2-tui)
VENV  := $(CACHE)/venv
export SAM2_TUI_CACHE := $(CACHE)
export LIBTORCH_USE_PYTORCH := 1
export PYTHON_SYS_EXECUTABLE := $(VENV)/bin/python
export SAM2_TUI_PYTHON := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
# Parity tests compare fp32 numbers; keep the thread count fixed so runs are repeatable.
export RUST_TEST_THREADS ?= 1

.PHONY: setup setup-test build run test bench clean-cache

setup:
	@./scripts/setup.sh >/dev/null

setup-test:
	@./scripts/setup.sh --test >/dev/null

build: setup
	cargo build --release

run: build
	./scripts/demo.sh

# Style and layering first (seconds), then clippy, then every test of every crate.
test: setup-test
	cargo fmt --all --check
	python3 scripts/check_architecture.py
	cargo clippy --release --workspace --all-targets -- -D warnings
	cargo clippy --release --workspace --no-default-features -- -D warnings
	cargo test --release --workspace --config "target.'cfg(unix)'.runner = ['$(CURDIR)/scripts/test_watchdog.sh']" -- --test-threads=1

bench: build
	./target/release/sam2-tui bench --sizes tiny
