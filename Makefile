# genpercept-repro: `make reproduce` regenerates results/, `make test` runs the tests. Both bootstrap .venv.
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= default
ONLY    ?=
JOBS    ?=
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup reproduce test lint clean help prior

help:
	@echo "make reproduce [PROFILE=smoke|default|paper] [ONLY=04] [JOBS=2]   run notebooks into results/"
	@echo "make test                                                 pytest (incl. smoke runs of every notebook)"
	@echo "make prior                                                rebuild the shipped toy SD (data/toy_sd, ~1-2 h)"
	@echo "make lint | make clean"

# The pip section of environment.yml is the requirements list (torch pinned to the CPU wheel first).
$(STAMP): pyproject.toml environment.yml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@sed -n '/^ *- pip:/,$$p' environment.yml | sed -n 's/^ *- \(.*\)$$/\1/p' | grep -v '^pip:' > $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name genpercept --display-name "Python (genpercept)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/genpercept reproduce --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(JOBS),--jobs $(JOBS))

# One pytest worker a core, a test file a unit of work (tests/conftest.py starts the files that run notebooks
# first, the two that run every notebook one on each worker). TEST_ARGS= runs the suite in one process.
TEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check genpercept_lib tests scripts

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The toy Stable Diffusion shipped in data/toy_sd/ (built once; resumable: a killed build continues from its last
# checkpoint). Only needed to change it: the default profile loads the committed one.
prior: $(STAMP)
	$(BIN)/python scripts/build_toy_sd.py
