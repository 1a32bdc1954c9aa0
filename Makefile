# Two commands on a fresh clone (README "Set-up in two commands"):
#
#   make quickstart   the virtual environment, torch, the project; then `smoothcert quickstart`
#   make test         the same set-up; then the test suite, `python -m pytest -q` (what CI runs)
#
# Variables (make VAR=value ...):
#   PYTHON      the interpreter that creates the environment            [python3]
#   VENV        the virtual environment's folder                        [.venv]
#   TORCH_SPEC  what `pip install` gets for torch: a requirement and any pip options
#               [torch==2.13.0, the CPU build on this project's machines and CI], e.g. a CUDA build:
#               make test TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cu126'
#   TORCH       skip: install no torch (keep the one the environment has, e.g. your own CUDA build)
#   QUICKSTART  arguments of `smoothcert quickstart`                     [--out quickstart]
#   PYTEST      arguments of pytest                                      [-q]
#
# .ci/run runs the same steps as `make test` (it does not rely on make being installed).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH ?= install
QUICKSTART ?= --out quickstart
PYTEST ?= -q

BIN := $(VENV)/bin
STAMP := $(VENV)/.smoothcert-setup
# what the set-up installed: redone when it changes (another TORCH_SPEC, TORCH, or pyproject.toml)
WANT = $(TORCH) $(TORCH_SPEC) $(shell cksum < pyproject.toml)

.PHONY: setup quickstart test clean-venv

setup:
	@if [ -x $(BIN)/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$(WANT)" ]; then \
		echo "$(VENV) is set up (make clean-venv to start afresh)"; else $(MAKE) --no-print-directory install; fi

.PHONY: install
install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifneq ($(TORCH),skip)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
endif
	$(BIN)/python -m pip install --quiet -e ".[test]"
	echo "$(WANT)" > $(STAMP)

quickstart: setup
	$(BIN)/smoothcert quickstart $(QUICKSTART)

test: setup
	$(BIN)/python -m pytest $(PYTEST)

clean-venv:
	rm -rf $(VENV)
