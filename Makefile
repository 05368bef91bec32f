# The two commands of the README, plus the pieces they are made of. Every target sets itself up from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit install model clean

demo: $(STAMP)  ## start the embedded stack and a worker, replay the sample stream, print a summary
	$(BIN)/moderation demo

test: lint unit  ## lint, type-check and run the default test suite (what CI runs)

lint: $(STAMP)
	$(BIN)/ruff check moderation tests
	$(BIN)/ruff format --check moderation tests
	$(BIN)/mypy moderation tests

unit: $(STAMP)
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[embedded,dev]'
	touch $(STAMP)

clean:
	-$(BIN)/moderation down
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
