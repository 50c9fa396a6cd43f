# OASIS: the whole set-up is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EMU := .emulators
# Re-install when setup.py changes.
STAMP := $(VENV)/.installed-$(shell sha1sum setup.py | cut -c1-12)
DATA := data
SAMPLE_DAYS ?= 35
SAMPLE_TRACKS ?= 400
SAMPLE_EVENTS ?= 40000

.PHONY: install emulators run test test-unit bench clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

# Emulators live in virtual environments of their own (their pins clash with ours).
emulators: $(EMU)/bq/.installed $(EMU)/gcs/.installed

$(EMU)/bq/.installed:
	@mkdir -p $(EMU)/bq/home
	@test -x $(EMU)/bq/venv/bin/python || $(PYTHON) -m venv $(EMU)/bq/venv
	$(EMU)/bq/venv/bin/pip install -q bqemulator==1.4.0 'numpy<3' duckdb==1.5.5 \
	    duckdb-extensions==1.5.5 duckdb-extension-spatial==1.5.5
	HOME=$(abspath $(EMU)/bq/home) $(EMU)/bq/venv/bin/python -c \
	    "import duckdb_extensions; duckdb_extensions.import_extension('spatial')"
	@touch $@

$(EMU)/gcs/.installed:
	@test -x $(EMU)/gcs/venv/bin/python || $(PYTHON) -m venv $(EMU)/gcs/venv
	$(EMU)/gcs/venv/bin/pip install -q gcp-storage-emulator==2026.7.19
	@touch $@

run: install
	@if [ ! -f $(DATA)/world/.complete ]; then \
	  $(BIN)/oasis sample --out $(DATA)/world --days $(SAMPLE_DAYS) --tracks $(SAMPLE_TRACKS) \
	    --events-per-day $(SAMPLE_EVENTS) --seed 7 --holdout && touch $(DATA)/world/.complete; fi
	$(BIN)/oasis run --date $$(cat $(DATA)/world/LAST_DAY) --input $(DATA)/world --output $(DATA)/out

test: install emulators
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q tests/unit tests/pipeline

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(DATA) test-artifacts .pytest_cache
