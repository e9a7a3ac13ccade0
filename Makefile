# The two commands a newcomer runs on a fresh machine:
#   make demo   set up, fetch the default corpus, run the main job
#   make test   set up, run cargo's and pytest's tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup setup-dev bench wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The package with PyTorch, built in release mode by maturin through pip.
setup: $(BIN)/python
	$(BIN)/pip install --quiet ".[lm]"

# Editable install with PyTorch (fastbpe.lm) and the test and benchmark tools.
setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,lm]"

demo: setup
	$(BIN)/fastbpe demo

# cargo's tests build the crate without the python feature: in a target folder of their own, so
# that they do not replace the extension's build, which pytest's wheel test reuses.
test: setup-dev
	cargo test --release --target-dir target/cargo-test
	$(BIN)/python -m pytest -q

# The wheel, into dist/: abi3 (one for CPython >= 3.10), manylinux for the glibc it was built against.
wheel: setup-dev
	$(BIN)/maturin build --release --interpreter $(BIN)/python --out dist

bench: setup-dev
	$(BIN)/python benches/train_bench.py

clean:
	rm -rf $(VENV) target runs dist
