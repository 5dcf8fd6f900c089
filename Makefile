# Each target sets itself up: a .venv with the local CPU torch wheel first, then the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench lint setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned: the CPU wheel lies on local disk; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -e ".[test]"
	# Animal-MNIST (an OOD set): its metadata pulls TensorFlow, so it installs without dependencies.
	$(BIN)/pip install --no-deps animal-mnist==0.4
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/clearmamba demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
