# Usual targets. Everything runs from a virtualenv in .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VAR_DIR ?= var
WEB_PORT ?= 8000
RECEIVER_PORT ?= 8001
# Local demo settings; each can be overridden in the environment. DEBUG stays off (its error
# pages show settings, database and broker passwords included): WhiteNoise serves the static
# files, the secret key is generated once for this checkout, cookies go over plain http, and
# postbacks may reach the receiver on 127.0.0.1; `make simulate` plays a proxy that forwards
# visitors' IPs in X-Forwarded-For, so the demo trusts one proxy hop.
DEMO_KEY := $(VAR_DIR)/demo-secret-key
DEMO_ENV := SECRET_KEY="$${SECRET_KEY:-$$(cat $(DEMO_KEY))}" \
	SESSION_COOKIE_SECURE=$${SESSION_COOKIE_SECURE:-false} \
	CSRF_COOKIE_SECURE=$${CSRF_COOKIE_SECURE:-false} \
	POSTBACKS_ALLOW_PRIVATE_NETWORKS=$${POSTBACKS_ALLOW_PRIVATE_NETWORKS:-true} \
	TRACKER_PROXY_COUNT=$${TRACKER_PROXY_COUNT:-1} \
	TRACKER_BASE_URL=$${TRACKER_BASE_URL:-http://127.0.0.1:$(WEB_PORT)} WEB_PORT=$(WEB_PORT) \
	RECEIVER_PORT=$(RECEIVER_PORT) \
	METRICS_OPEN=$${METRICS_OPEN:-true}
# prometheus-client's multiprocess directory of `make run` (web and worker processes), cleared
# before they start, as the library asks (README "Health and metrics").
METRICS_DIR := $(VAR_DIR)/prometheus

.PHONY: install run migrate demo test test-slow test-sqlite test-fast lint migrations-check format \
	ci simulate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

$(DEMO_KEY): | $(BIN)/python
	mkdir -p $(VAR_DIR)
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@

migrate: install $(DEMO_KEY)
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput

demo: migrate
	$(DEMO_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(DEMO_ENV) $(BIN)/python manage.py demo_setup --demo --receiver-url http://127.0.0.1:$(RECEIVER_PORT)

## run: install, migrate, load demo data, then start web (gunicorn) + worker + beat + receiver;
## each comes back by itself when it crashes (bin/respawn), Ctrl-C stops them all
run: demo
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	$(DEMO_ENV) PROMETHEUS_MULTIPROC_DIR=$(abspath $(METRICS_DIR)) PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/honcho start

# Test tiers (markers given in tests/conftest.py), each run in parallel: one pytest-xdist
# process per core (at most 4), each with a database, a Redis db (REDIS_URL's, then the next
# ones; see tests/settings.py) and, for the slow tiers, a Celery worker process of its own.
FAST_TIERS := unit or database
SLOW_TIERS := integration or chaos or broker or browser or fuzz
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --maxprocesses 4
# The slow tiers (three processes) and the SQLite run (one) go side by side: the slow tiers
# mostly wait (on worker processes, receivers, retries and restarts) and leave CPU the SQLite
# run uses. The SQLite run takes the Redis db after the slow tiers' (TESTS_REDIS_DB_OFFSET):
# four in all, REDIS_URL's and the next three. The slow tiers are handed out one test at a
# time, longest first (tests/conftest.py).
SLOW_PROCESSES := 3
# pytest keeps the modules it rewrites for its assertion messages (the tests, and the plugins'
# packages) in __pycache__, as Python keeps bytecode; with PYTHONDONTWRITEBYTECODE set (this
# machine's image sets it) each pytest process rewrote ~500 modules again, ~7 s of CPU each.
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/pytest
# COVERAGE=1: line coverage of tracker, campaigns and postbacks over every run, reported at the
# end (then the slow tiers and the SQLite run go one after the other: one coverage file)
COV_ARGS := $(if $(COVERAGE),--cov --cov-append --cov-report=)

## test: the whole suite on PostgreSQL + Redis (127.0.0.1, see README): the unit and
## database tiers in parallel, then the integration, chaos, broker, browser and fuzz tiers
## (real Celery worker processes, receivers, browser), in parallel too, each xdist process
## with a worker of its own, on the test databases the first run made (--reuse-db); beside
## them the delivery engine's tests again on SQLite, the database of the one-command demo
test: install
	$(if $(COVERAGE),$(BIN)/coverage erase)
	$(PYTEST) -q $(XDIST) -m "$(FAST_TIERS)" --create-db --reuse-db $(COV_ARGS)
	$(MAKE) --no-print-directory $(if $(COVERAGE),,-j 2 --output-sync=target) \
		test-slow test-sqlite
	$(if $(COVERAGE),$(BIN)/coverage report)

## test-slow: the integration, chaos, broker, browser and fuzz tiers alone
test-slow: install
	$(PYTEST) -q -n $(SLOW_PROCESSES) --maxschedchunk 1 -m "$(SLOW_TIERS)" --reuse-db $(COV_ARGS)

## test-sqlite: the delivery engine's tests and the admin's on SQLite
test-sqlite: install
	DATABASE_URL=sqlite:///$(VAR_DIR)/test-sqlite.sqlite3 TESTS_REDIS_DB_OFFSET=$(SLOW_PROCESSES) \
		$(PYTEST) -q -p no:cacheprovider -n 1 $(COV_ARGS) \
		tests/postbacks tests/test_admin.py

## test-fast: the inner loop: the unit and database tiers only, in parallel, stopping at the
## first failure (PostgreSQL + Redis; no worker process, browser or fuzzing)
test-fast: install
	$(PYTEST) -q $(XDIST) -m "$(FAST_TIERS)" -x

## lint: the migrations (migrations-check), ruff, then the import layers (import-linter
## contracts in pyproject.toml) and no import cycle nor import inside a function
## (bin/check_imports.py), then the types (mypy with the Django and DRF plugins, [tool.mypy]
## in pyproject.toml)
lint: install migrations-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/python bin/check_imports.py
	$(BIN)/mypy

# The SQL of each migration is what PostgreSQL would run, so the check needs one (any
# database: it reads and writes nothing): MIGRATIONS_CHECK_DATABASE_URL.
MIGRATIONS_CHECK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

## migrations-check: no new migration locks a busy table for long or breaks the running code
## during an upgrade (django-migration-linter, [tool.django_migration_linter] in
## pyproject.toml, where the released migrations that break the rule are listed as accepted),
## nor backfills in the transaction of a schema change (tests/test_migrations.py)
migrations-check: install
	DATABASE_URL=$(MIGRATIONS_CHECK_DATABASE_URL) DJANGO_SETTINGS_MODULE=tests.settings \
		LOG_LEVEL=WARNING $(BIN)/python manage.py lintmigrations --quiet ok ignore
	$(BIN)/pytest -q -p no:cacheprovider tests/test_migrations.py

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ci: lint test

simulate: install $(DEMO_KEY)
	$(DEMO_ENV) $(BIN)/python manage.py simulate

## bench: dispatch, inbound and latency benchmarks (PostgreSQL + Redis on 127.0.0.1; bench/README.md)
bench: install
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/inbound.py
	$(BIN)/python bench/latency.py --rate 200 --seconds 60
	$(BIN)/python bench/latency.py --rate 400 --seconds 30

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache .mypy_cache
