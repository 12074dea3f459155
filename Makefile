# Two entry points: `make demo` (set up, then run the whole pipeline on the
# generated demo dataset) and `make test` (set up, then run the test suite).
# `make demo-train` adds the trained rows (about 16 more minutes on 2 CPU cores).
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.bpcr-installed

.PHONY: demo demo-train test test-quick setup clean

setup: $(STAMP)

# torch and torchvision are pinned here (not in pyproject.toml) so that users
# elsewhere keep general ranges; these two builds work together on CPU and GPU.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bpcr run configs/demo.toml

demo-train: demo
	$(BIN)/bpcr run configs/demo-train.toml

test: $(STAMP)
	$(BIN)/pytest

# The quick suite (under a minute): everything but the tests marked slow.
test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf work
