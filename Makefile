# Two commands on a fresh machine:  make notebooks   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= smoke

.PHONY: install notebooks test lint test-all rehearsal lab benchmarks strip-notebooks clean-runs

# A virtual environment with the package (editable) and its test tools, at the versions in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Every numbered notebook, headless, into papermill_runs/$(PROFILE)/ and figures/$(PROFILE)/.
notebooks: $(STAMP)
	$(BIN)/clipseg-lab notebooks --profile $(PROFILE)

# Lint (ruff, the rule set in pyproject.toml), then unit, parity, learning and notebook smoke tests (the slow
# ones, needing weights or a GPU, are left out).
test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow and not rehearsal" --durations=15

lint: $(STAMP)
	$(BIN)/ruff check clipseg_lab tests benchmarks

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "not rehearsal" --durations=15

# The full profile's every code path on real-size random weights in the real layouts (params/rehearsal.yaml);
# builds its world in a temporary folder and deletes it afterwards. About half an hour on 2 CPU cores.
rehearsal: $(STAMP)
	$(BIN)/python -m pytest -m rehearsal tests/rehearsal -s --durations=0

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,lab]"
	$(BIN)/jupyter lab notebooks/

benchmarks: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

# Source notebooks keep no outputs; executed copies live in papermill_runs/.
strip-notebooks: $(STAMP)
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb
