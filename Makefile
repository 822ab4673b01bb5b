# klhuber: two commands set up and run everything on a machine with Python 3.11, 3.12 or 3.13.
#   make book   create .venv, install the pinned dependencies, execute the notebooks, render the book
#   make test   the same set-up, then ruff and the whole test suite (including a book build)
# Options: PROFILE=quick|full  DEVICE=cpu|cuda  PYTHON=python3.12 (default: the first of
# python3.11, python3.12, python3.13 found on PATH)

SUPPORTED_PYTHONS := python3.11 python3.12 python3.13
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,$(SUPPORTED_PYTHONS),$(shell $(p) -c 'import sys' >/dev/null 2>&1 && echo $(p))))
endif
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DEVICE ?=
PYTEST_WORKERS ?= 2
STAMP := $(VENV)/.klhuber-installed

.PHONY: book html test lint browser venv clean help mutants mutants-resume mutants-recheck

help:
	@echo "Python for .venv: $(if $(PYTHON),$(PYTHON),none of $(SUPPORTED_PYTHONS) found)"
	@echo "make book [PROFILE=quick|full] [DEVICE=cpu|cuda]  execute notebooks + render book/_build/html"
	@echo "make test                                       ruff + pytest (whole suite, incl. a book build)"
	@echo "make html                                       re-render the HTML without executing notebooks"
	@echo "make mutants [MODULES='symbolic ...']           mutation testing per module (mutmut; target: 1 h on 2 cores)"
	@echo "make mutants-resume [MODULES=...]               continue a stopped run (only the unchecked mutants)"
	@echo "make mutants-recheck [MODULES=...]              re-run only the survivors and timeouts against the current tests"
	@echo "make clean                                      remove the build folder (keeps .venv)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@if test -x $(BIN)/python; then \
	  echo "using the existing $(VENV) ($$($(BIN)/python -V))"; \
	elif test -z "$(PYTHON)"; then \
	  echo "error: no supported Python found: install one of $(SUPPORTED_PYTHONS) or set PYTHON=..."; exit 1; \
	elif ! command -v $(PYTHON) >/dev/null; then \
	  echo "error: $(PYTHON) not found (set PYTHON= to one of $(SUPPORTED_PYTHONS))"; exit 1; \
	elif ! $(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'; then \
	  echo "error: $(PYTHON) ($$($(PYTHON) -V 2>&1 | head -n 1)) is not a supported Python: 3.11, 3.12 or 3.13"; exit 1; \
	else \
	  echo "using $(PYTHON) ($$($(PYTHON) -V)) for $(VENV)"; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,dev,detection]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/klhuber book build --profile $(PROFILE) $(if $(DEVICE),--device $(DEVICE))

html: $(STAMP)
	$(BIN)/klhuber book html

lint: $(STAMP)
	$(BIN)/ruff check .

# Headless Chromium for the browser tests (Debian package 'chromium').
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing and this is not root: the browser tests will be skipped (install the 'chromium' package)"; fi

# Unit tests run on $(PYTEST_WORKERS) workers; the whole-book build (marked slow) runs after them
# in one process, since it executes every notebook and wants all cores to itself.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow"
	$(BIN)/python -m pytest -m slow

# Mutation testing (not part of `make test`): each module of tests/mutation/mutation.toml against
# its own fast tests, in build/mutants/<module>; scores in build/mutants/scores.json.
# MODULES= picks some.
MODULES ?=
mutants: $(STAMP)
	nice -n 10 $(BIN)/python tests/mutation/mutants.py --max-children $(PYTEST_WORKERS) $(MODULES)

# continue a stopped run: only the mutants it left unchecked
mutants-resume: $(STAMP)
	nice -n 10 $(BIN)/python tests/mutation/mutants.py --resume --max-children $(PYTEST_WORKERS) $(MODULES)

# re-run only the last run's survivors and timeouts against the tests as they are now (CPU-limited)
mutants-recheck: $(STAMP)
	nice -n 10 $(BIN)/python tests/mutation/mutants.py --recheck --max-children $(PYTEST_WORKERS) $(MODULES)

clean:
	rm -rf book/_build
