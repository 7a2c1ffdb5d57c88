# Quick start:  make demo  (the method in miniature on the synthetic world)  |  make test  (the test suite)
# Both create the virtual environment .venv when it is missing and install requirements.txt into it whenever
# requirements.txt changed (a stamp file named after its hash); both are safe to rerun.
# `make test` also installs Debian's chromium and chromium-driver when /usr/bin/chromium is missing (the web
# page's browser test drives them). Variables: PYTHON (the interpreter that creates .venv, default python3),
# DEMO_ARGS (demo.py's options, default --output_dir demo_out), PYTEST_ARGS (default -q tests).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
DEMO_ARGS ?= --output_dir demo_out
PYTEST_ARGS ?= -q tests
REQUIREMENTS_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('requirements.txt', 'rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.requirements-$(REQUIREMENTS_HASH)

.PHONY: demo test venv browser

# Run inside the activated environment: the scripts the tests start (e.g. train_and_eval_script/*.sh) call `python`.
demo: $(STAMP)
	. $(VENV)/bin/activate && python demo.py $(DEMO_ARGS)

test: $(STAMP) browser
	. $(VENV)/bin/activate && python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# A .venv without a working pip (e.g. an interrupted creation) is created again; the stamp is written only after
# a successful install, so an interrupted install is redone by the next call.
$(STAMP):
	@test -n "$(REQUIREMENTS_HASH)" || { echo "cannot read requirements.txt with $(PYTHON)" >&2; exit 1; }
	@$(VENV_PYTHON) -m pip --version >/dev/null 2>&1 || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv --clear $(VENV); }
	$(VENV_PYTHON) -m pip install -r requirements.txt
	@rm -f $(VENV)/.requirements-*
	@touch $@

browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "no /usr/bin/chromium and no apt-get: install Chromium and its driver by hand for the browser test" >&2; \
	  else \
	    if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	    echo "installing chromium and chromium-driver with apt-get"; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver; \
	  fi; \
	fi
