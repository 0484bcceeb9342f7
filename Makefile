# The two set-up commands of the README: `make demo` (install, then the main job) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install system-deps

install: system-deps $(VENV)/.installed

# The virtual environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# MuJoCo renders off-screen through EGL on Mesa's software renderer: no display and no GPU needed.
system-deps:
	@if ! ldconfig -p | grep -q libEGL_mesa.so.0; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri; \
	  else \
	    echo "graspcheck simulate needs EGL with Mesa (Debian/Ubuntu: sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"; \
	  fi; \
	fi

demo: install
	$(BIN)/graspcheck demo

test: install
	$(BIN)/python -m pytest
