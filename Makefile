# ptyopt — two commands on a fresh machine: `make demo` and `make test`.
# GPU users: make setup TORCH_SPEC="torch" TORCH_INDEX="--index-url <the CUDA wheel index of your torch build>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= sim,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptyopt-installed

.PHONY: setup test demo demo-data lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/ptyopt demo --out demo_out --overwrite

# regenerate the dataset shipped inside the package (abTEM, about 15 s)
demo-data: setup
	$(BIN)/ptyopt simulate --preset sto-demo --out src/ptyopt/data/examples/sto-demo.h5 --no-cache

lint: setup
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
