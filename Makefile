# One entry point for set-up, demo, tests and lints. Every target creates the virtualenv and
# builds the native module first, so each works on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-installed

.PHONY: demo payments test test-rust test-python test-benches lint format build loom bench crash torture clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import tomllib; d = tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']; print('\n'.join(d['dev'] + d['kafka']))" > $(VENV)/dev-requirements.txt
	$(BIN)/pip install --quiet -r $(VENV)/dev-requirements.txt
	$(PY) -m venv $(VENV)-quix
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['quix']))" > $(VENV)-quix/requirements.txt
	$(VENV)-quix/bin/pip install --quiet -r $(VENV)-quix/requirements.txt
	touch $(STAMP)

build: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --quiet

demo: build
	$(BIN)/python examples/demo.py

payments: build
	$(BIN)/python examples/payments.py --store payments-data

test: lint test-rust test-python test-benches

test-rust:
	cargo test --workspace --quiet
	RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --test loom_ring --release --quiet
	RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --lib --release --quiet crc_worker

test-python: build
	$(BIN)/python -m pytest -q --durations=10

# The benchmarks are not a gate: CI runs them once, tiny, to prove they still run.
test-benches: build
	$(BIN)/python benches/compare.py --quick
	TIDELOG_BENCH_SCALE=quick $(BIN)/python -m pytest benches/python -q --benchmark-only -p no:cacheprovider

lint: build
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy
	$(BIN)/mypy examples
	$(BIN)/python -m mypy.stubtest tidelog._core

format:
	cargo fmt --all
	$(BIN)/ruff format python tests benches examples
	$(BIN)/ruff check --fix python tests benches examples

loom:
	RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --test loom_ring --release
	RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --lib --release crc_worker
	RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --lib --release producer::shed

crash: build
	$(BIN)/python -m pytest -q -m crash

# Random SIGKILL rounds over every write path, checked after each round (tests/torture/).
# `make torture ROUNDS=1000`; KINDS selects some of append,batch,buffer,producer,commit,
# queue,txn,fork,scratch,compact; TORTURE_ARGS passes more (--seed, --window, --fsync, --dir).
ROUNDS ?= 100
KINDS ?= append,batch,buffer,producer,commit,queue,txn,fork,scratch,compact
torture: build
	$(BIN)/python tests/torture/torture.py --rounds $(ROUNDS) --kinds $(KINDS) $(TORTURE_ARGS)

bench: build
	$(BIN)/python -m pytest benches -q --benchmark-only --benchmark-json=benches/results/latest.json

clean:
	rm -rf $(VENV) $(VENV)-quix target
