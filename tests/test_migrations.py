"""What `make migrations-check` (django-migration-linter) cannot see: a backfill run in the
transaction of a schema change holds that change's lock (ACCESS EXCLUSIVE for an ALTER
TABLE) for the whole backfill. A new migration keeps them apart (README, "Upgrades")."""

from __future__ import annotations

import tomllib

import pytest
from django.db import migrations, models
from django.db.migrations.loader import MigrationLoader

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DATA_OPERATIONS = (migrations.RunPython, migrations.RunSQL)


def accepted() -> set[str]:
    """The released migrations accepted as they are (pyproject.toml)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    return set(config["django_migration_linter"]["ignore_name"])


def changes_schema(operation: migrations.operations.base.Operation) -> bool:
    if isinstance(operation, DATA_OPERATIONS):
        return False
    if isinstance(operation, migrations.SeparateDatabaseAndState):
        return any(changes_schema(inner) for inner in operation.database_operations)
    return True


def backfills_under_a_schema_lock(migration: migrations.Migration) -> bool:
    """A data step (RunPython, RunSQL) in the one transaction of a schema change."""
    return (
        migration.atomic
        and any(isinstance(op, DATA_OPERATIONS) for op in migration.operations)
        and any(changes_schema(op) for op in migration.operations)
    )


def test_no_new_migration_backfills_in_the_transaction_of_a_schema_change():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    apps = config["django_migration_linter"]["include_apps"]
    loader = MigrationLoader(None, ignore_no_migrations=True)
    offenders = [
        f"{app}.{name}"
        for (app, name), migration in sorted(loader.disk_migrations.items())
        if app in apps and name not in accepted() and backfills_under_a_schema_lock(migration)
    ]
    assert not offenders, (
        "a data step in the transaction of a schema change (split the migration, or make it "
        f"atomic = False with the backfill in batches): {offenders}"
    )
    # The accepted ones include the migration this rule comes from.
    assert backfills_under_a_schema_lock(loader.disk_migrations["tracker", "0004_inbound_tracking"])


def probe(*operations: migrations.operations.base.Operation, atomic: bool = True):
    migration = type("Migration", (migrations.Migration,), {"atomic": atomic})(
        "0099_probe", "tracker"
    )
    migration.operations = list(operations)
    return migration


def test_a_column_and_its_backfill_go_in_two_transactions():
    add = migrations.AddField("click", "probe", models.IntegerField(null=True))
    fill = migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)
    state_only = migrations.SeparateDatabaseAndState(state_operations=[add])
    assert backfills_under_a_schema_lock(probe(add, fill))
    assert not backfills_under_a_schema_lock(probe(add, fill, atomic=False))
    assert not backfills_under_a_schema_lock(probe(add))
    assert not backfills_under_a_schema_lock(probe(fill))
    assert not backfills_under_a_schema_lock(probe(state_only, fill))
