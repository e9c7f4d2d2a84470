# Usual targets. Everything runs from a virtualenv in .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local demo defaults; override on the command line or in the environment.
DEMO_ENV := DEBUG=$${DEBUG:-true} POSTBACKS_ALLOW_PRIVATE_NETWORKS=$${POSTBACKS_ALLOW_PRIVATE_NETWORKS:-true}

.PHONY: install run migrate demo test lint format ci simulate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput

demo: migrate
	$(DEMO_ENV) $(BIN)/python manage.py demo_setup

## run: install, migrate, load demo data, then start web + worker + beat + demo receiver
run: demo
	$(DEMO_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

## test: the whole suite (needs PostgreSQL and Redis on 127.0.0.1, see README)
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ci: lint test

simulate: install
	$(DEMO_ENV) $(BIN)/python manage.py simulate

bench: install
	$(BIN)/python bench/dispatch.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
