# Two entry points: `make demo` (set up, then run the whole pipeline on the
# generated demo dataset) and `make test` (set up, then run the test suite).
# `make demo-train` adds the trained rows (about 16 more minutes on 2 CPU cores).
# `make recipes` runs the placed teams' recipes (configs/recipes/) with their offline stand-ins.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.bpcr-installed

.PHONY: demo demo-train recipes test test-quick setup clean

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

# Every recipe of configs/recipes/ with its [offline] stand-in (`bpcr run RECIPE --stand-in`) on the demo's work
# folder, then leaderboard-recipes.md: each recipe's final run (named after its file) and the demo's plain
# single-network baseline, lite0-gem, ranked by the private half, each compared with the baseline.
RECIPES  = 2018-2nd 2018-3rd 2019-1st 2020-1st 2020-2nd
BASELINE = submissions/lite0-gem.csv

recipes: demo
	for recipe in $(RECIPES); do $(BIN)/bpcr run configs/recipes/$$recipe.toml --stand-in || exit 1; done
	$(BIN)/bpcr score $(RECIPES:%=submissions-recipes/%.csv) $(BASELINE) --gt ground_truth/demo.csv \
		--baseline $(BASELINE) --leaderboard leaderboard-recipes.md

test: $(STAMP)
	$(BIN)/pytest

# The quick suite (under a minute): everything but the tests marked slow.
test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf work
