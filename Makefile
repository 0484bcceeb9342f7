# The two set-up commands of the README: `make demo` (install, then the main job) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install system-deps browser

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

# The tests open the HTML report in a real headless Chromium: Debian's package, driven by playwright from the test
# extras (its wheel carries its driver: no `playwright install`, no browser download). Only `make test` needs it.
browser:
	@if [ -z "$$GRASPCHECK_CHROMIUM" ] && ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "the browser tests are skipped without Chromium (Debian/Ubuntu: sudo apt-get install chromium)"; \
	  fi; \
	fi

demo: install
	$(BIN)/graspcheck demo

test: install browser
	$(BIN)/python -m pytest
