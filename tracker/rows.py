"""Rows of the ``/cv`` hot path, written and read with statements built once.

The ORM compiles every query anew: for the few statements of one conversion (the click
lookup, the conversion, delivery and inbound-log INSERTs) that compiling cost more CPU than
PostgreSQL spent running them. These helpers keep the ORM's value conversions (``pre_save``
and ``get_db_prep_save`` on write, the backend's and the fields' converters on read) and
skip the compiling: a model's INSERT is built once per database and model. They run on the
connection's cursor, so query logging and Django's error wrapping (``IntegrityError``,
``DataError``) are those of the ORM.

No model signal is sent: none of the models written here has a receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Field, Model

_M = TypeVar("_M", bound=Model)

Converter = Callable[[Any, Any, Any], Any]
Insert = tuple[str, str, str, list[Field]]
# Column number, its expression and its converters.
Conversions = list[tuple[int, Any, list[Converter]]]
_inserts: dict[tuple[str, type[Model]], Insert | None] = {}
_readers: dict[tuple[str, type[Model]], tuple[list[str], Conversions]] = {}


def _insert_statement(model: type[Model], using: str) -> Insert | None:
    """(head, one row's placeholders, RETURNING clause, fields) of ``model``'s INSERT, or
    None when the database cannot return the new ids of a multi-row INSERT or a field needs
    its own placeholder (then the ORM writes)."""
    key = (using, model)
    if key not in _inserts:
        connection = connections[using]
        meta = model._meta
        fields = [f for f in meta.concrete_fields if f is not meta.auto_field]
        usable = (
            meta.auto_field is not None
            and connection.features.can_return_rows_from_bulk_insert
            and not any(hasattr(f, "get_placeholder") for f in fields)
        )
        if usable:
            qn = connection.ops.quote_name
            head = (
                f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(_column(f)) for f in fields)}) "
                "VALUES "
            )
            # The backends that return rows from a bulk insert have it; the base class not.
            ops = connection.ops
            returning, _ = ops.return_insert_columns([meta.auto_field])  # type: ignore[attr-defined]
            _inserts[key] = head, f"({', '.join(['%s'] * len(fields))})", returning, fields
        else:
            _inserts[key] = None
    return _inserts[key]


def insert(objs: Sequence[Model], using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT ``objs`` (new instances of one model with an auto-increment primary key) in one
    statement (batched at the database's parameter limit, as ``bulk_create`` does) and set
    their primary keys.

    ``auto_now_add`` fields and defaults are applied as by ``save()``. Raises Django's
    ``IntegrityError`` / ``DataError`` / ``DatabaseError``; inside an atomic block a failure
    marks it for rollback, as the ORM does.
    """
    if not objs:
        return
    model = type(objs[0])
    statement = _insert_statement(model, using)
    if statement is None:
        model._base_manager.using(using).bulk_create(objs)
        return
    head, row, returning, fields = statement
    connection = connections[using]
    size = max(1, connection.ops.bulk_batch_size(fields, objs))  # SQLite's parameter limit
    for start in range(0, len(objs), size):
        batch = objs[start : start + size]
        params = [
            field.get_db_prep_save(field.pre_save(obj, True), connection)
            for obj in batch
            for field in fields
        ]
        sql = f"{head}{', '.join([row] * len(batch))} {returning}"
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(sql, params)
            ids = cursor.fetchall()
        for obj, (pk,) in zip(batch, ids, strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = using


def columns(model: type[Model], alias: str, using: str = DEFAULT_DB_ALIAS) -> str:
    """The SELECT list of every concrete column of ``model``, qualified with the table alias
    ``alias``, in the order :func:`instance` reads them."""
    qn = connections[using].ops.quote_name
    return ", ".join(f"{alias}.{qn(_column(f))}" for f in model._meta.concrete_fields)


def _column(field: Field[Any, Any]) -> str:
    """A concrete field's column (``Field.column`` is None only on non-concrete fields)."""
    if field.column is None:
        raise ValueError(f"{field} has no column")
    return field.column


def instance(model: type[_M], values: Sequence[Any], using: str = DEFAULT_DB_ALIAS) -> _M:
    """A ``model`` instance from a row selected with :func:`columns` (its first values),
    converted as the ORM converts them (e.g. SQLite's text to UUID and datetime)."""
    key = (using, model)
    if key not in _readers:
        connection = connections[using]
        fields = model._meta.concrete_fields
        converters = []
        for n, field in enumerate(fields):
            col = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if found:
                converters.append((n, col, found))
        _readers[key] = [f.attname for f in fields], converters
    names, converters = _readers[key]
    values = list(values[: len(names)])
    if converters:
        connection = connections[using]
        for n, col, found in converters:
            for convert in found:
                values[n] = convert(values[n], col, connection)
    return model.from_db(using, names, values)


_new_inserts: dict[tuple[str, type[Model]], tuple[str, str, str, list[Field]]] = {}


def insert_new(objs: Sequence[_M], using: str = DEFAULT_DB_ALIAS) -> list[_M]:
    """INSERT those of ``objs`` (instances of one model whose primary key is set in Python,
    e.g. a click's UUID) that are not in the table yet, in one statement per batch, and
    return them; a row whose key exists is left as it is (``ON CONFLICT DO NOTHING``).

    Values are written as they stand on the objects: no ``pre_save``, so ``auto_now_add``
    times made earlier (when the event happened) are kept. Raises Django's
    ``IntegrityError`` / ``DataError`` / ``DatabaseError`` as :func:`insert` does.
    """
    if not objs:
        return []
    model = type(objs[0])
    key = (using, model)
    connection = connections[using]
    if key not in _new_inserts:
        meta = model._meta
        qn = connection.ops.quote_name
        fields = list(meta.concrete_fields)
        names = ", ".join(qn(_column(f)) for f in fields)
        head = f"INSERT INTO {qn(meta.db_table)} ({names}) VALUES "
        tail = f"ON CONFLICT ({qn(_column(meta.pk))}) DO NOTHING RETURNING {qn(_column(meta.pk))}"
        _new_inserts[key] = head, f"({', '.join(['%s'] * len(fields))})", tail, fields
    head, row, tail, fields = _new_inserts[key]
    pk = model._meta.pk
    size = max(1, connection.ops.bulk_batch_size(fields, objs))
    written: list[_M] = []
    for start in range(0, len(objs), size):
        batch = objs[start : start + size]
        by_key = {pk.get_db_prep_value(obj.pk, connection): obj for obj in batch}
        params = [
            field.get_db_prep_save(getattr(obj, field.attname), connection)
            for obj in batch
            for field in fields
        ]
        sql = f"{head}{', '.join([row] * len(batch))} {tail}"
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(sql, params)
            inserted = cursor.fetchall()
        for (value,) in inserted:
            obj = by_key[value]
            obj._state.adding = False
            obj._state.db = using
            written.append(obj)
    return written
