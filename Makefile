# ptyopt — two commands on a fresh machine: `make demo` and `make test`.
# GPU users: make setup TORCH_SPEC="torch" TORCH_INDEX="--index-url <the CUDA wheel index of your torch build>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= sim,dev,io
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptyopt-installed

.PHONY: setup test browser demo demo-data lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: setup browser
	$(BIN)/python -m pytest

# Chromium for the HTML screenshot tests (tests/html_check.py): installed with apt-get where it is missing and
# this runs as root on Debian/Ubuntu; never fails the target (the tests skip themselves without a browser)
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the HTML screenshot tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } || \
		echo "could not install chromium: the HTML screenshot tests will be skipped"; \
	else echo "chromium not found (install it as root: apt-get install chromium): the HTML screenshot tests will be skipped"; fi

demo: setup
	$(BIN)/ptyopt demo --out demo_out --overwrite

# regenerate the dataset shipped inside the package (abTEM, about 15 s)
demo-data: setup
	$(BIN)/ptyopt simulate --preset sto-demo --out src/ptyopt/data/examples/sto-demo.h5 --no-cache

lint: setup
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
