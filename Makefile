# Two commands on a fresh clone:
#   make demo   set up .venv and run the whole pipeline on the embedded CPU teacher
#   make test   set up .venv and run the test suite (starts its own teacher server)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test bench clean browser

$(BIN)/distill: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/distill

setup: $(BIN)/distill

demo: setup
	$(BIN)/distill run --workdir work

# The report test opens the HTML in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium is not installed (needs root + apt); the report's browser test will be skipped"

test: setup browser
	if command -v chromium >/dev/null 2>&1; then export DISTILL_REQUIRE_BROWSER=1; fi; $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python scripts/bench_teacher.py

clean:
	rm -rf work .pytest_cache
