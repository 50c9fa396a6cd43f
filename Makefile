# OASIS: the whole set-up is `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EMU := .emulators
# Re-install when setup.py changes.
STAMP := $(VENV)/.installed-$(shell sha1sum setup.py | cut -c1-12)
DATA := data
# The default sample world: 35 days (a month change in the window), 400 campaign
# tracks, 100k events a day (3.5M rows): capacity binds in US on every surface
# with non-zero shadow prices and floors set the plays of low-value tracks.
# Measured on 2 cores: sample ~11 s, run ~45-60 s.
SAMPLE_DAYS ?= 35
SAMPLE_TRACKS ?= 400
SAMPLE_EVENTS ?= 100000
# `make simulate`: the closed loop at full size (6 markets x 3 surfaces, 31 days, every (market, surface)
# planning a few hundred promoted plays a day or more), then the same world with calibration off. December's
# flights change the eligible scores' distribution past score_drift's bound on the 1st: the runs skip that gate.
SIM_DIR ?= $(DATA)/simulate
# `make test` runs this many pytest workers (pytest-xdist; `auto` = one per core), a test module whole on one.
TEST_WORKERS ?= auto
SIM_WORLD ?= --warm-up-days 14 --markets 6 --tracks 600 --events-per-day 1500000 --seed 5 --step-day 11 \
    --skip-gate score_drift

.PHONY: install emulators run test test-unit bench simulate mutation clean

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,serving]'
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

# `oasis sample` checks the folder: the same world already there, intact, is
# reused in a second; another world (other arguments, changed or foreign files)
# is refused with what differs, and never deleted (`make clean` starts afresh).
run: install
	$(BIN)/oasis sample --out $(DATA)/world --days $(SAMPLE_DAYS) --tracks $(SAMPLE_TRACKS) \
	    --events-per-day $(SAMPLE_EVENTS) --seed 7 --holdout
	$(BIN)/oasis run --date $$(cat $(DATA)/world/LAST_DAY) --input $(DATA)/world --output $(DATA)/out

test: install emulators
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-unit: install
	$(BIN)/python -m pytest -q tests/unit tests/pipeline

bench: install
	$(BIN)/python -m bench.run

# Mutation testing of the pure modules with their fast tests (docs/testing.md); not part of `make test`.
# MODULES=contract,allocation (a comma-separated subset of the groups) runs only those; RETEST=1 tests
# the surviving mutants again (mutmut keeps verdicts) after tests meant to kill them were added.
MUTATION_STAMP := $(VENV)/.mutation-$(shell sha1sum setup.py | cut -c1-12)
$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,mutation]'
	@rm -f $(VENV)/.mutation-* && touch $@

mutation: $(MUTATION_STAMP)
	nice -n 10 $(BIN)/python -m tests.mutation $(if $(MODULES),--modules $(MODULES)) $(if $(RETEST),--retest-survivors)

simulate: install
	$(BIN)/oasis simulate --out $(SIM_DIR)/calibrated --days 31 $(SIM_WORLD)
	$(BIN)/oasis simulate --out $(SIM_DIR)/uncalibrated --days 14 --calibration off $(SIM_WORLD)

clean:
	rm -rf $(DATA) test-artifacts .pytest_cache mutants build/mutation
