# Two commands on a fresh clone:
#   make demo   set up .venv and run the whole pipeline on the embedded CPU teacher
#   make test   set up .venv and run the test suite (starts its own teacher server)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test bench clean

$(BIN)/distill: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/distill

setup: $(BIN)/distill

demo: setup
	$(BIN)/distill run --workdir work

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python scripts/bench_teacher.py

clean:
	rm -rf work .pytest_cache
