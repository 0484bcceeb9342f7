# The two set-up commands of the README: `make demo` (install, then the main job) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install

install: $(VENV)/.installed

# The virtual environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/python tests/imagegen.py runs/toy-data
	$(BIN)/graspcheck train runs/toy-data --model seednet --img-size 32 --lr 0.01 --epochs 6 --out runs/toy-demo --overwrite

test: install
	$(BIN)/python -m pytest
