"""The tables every conversion writes (conversion, delivery, inbound log) carry only indexes
that a query needs: none that another index already serves, no ``varchar_pattern_ops`` twin
(no query matches a pattern on them). Each index is one more entry written per row by
``/cv``. PostgreSQL only (the ``_like`` twins and the measured write cost are PostgreSQL's).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

HOT_TABLES = ("tracker_conversion", "tracker_inboundrequest", "postbacks_delivery")

pytestmark = pytest.mark.django_db


def indexes() -> list[dict]:
    """Every index of the hot tables: table, name, key columns (with their order and
    operator class), whether unique, and its predicate."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname, i.relname, x.indisunique, pg_get_expr(x.indpred, x.indrelid),
                   ARRAY(
                       SELECT pg_get_indexdef(x.indexrelid, k, true) || ' ' || o.opcname
                           || CASE WHEN x.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
                       FROM generate_series(1, x.indnkeyatts) AS k
                       JOIN pg_opclass o ON o.oid = x.indclass[k - 1]
                   )
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            WHERE t.relname = ANY(%s)
            """,
            [list(HOT_TABLES)],
        )
        return [
            {"table": t, "name": n, "unique": u, "where": w, "keys": list(k)}
            for t, n, u, w, k in cursor.fetchall()
        ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL indexes")
def test_no_pattern_ops_twin_on_the_hot_tables():
    twins = [i["name"] for i in indexes() if any("pattern_ops" in k for k in i["keys"])]
    assert twins == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL indexes")
def test_no_index_on_the_hot_tables_is_served_by_another():
    found = indexes()
    served = [
        (a["name"], b["name"])
        for a in found
        for b in found
        if a is not b
        and a["table"] == b["table"]
        and not a["unique"]
        and a["where"] == b["where"]
        and b["keys"][: len(a["keys"])] == a["keys"]
    ]
    assert served == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL indexes")
def test_the_pipeline_indexes_stay():
    names = {i["name"] for i in indexes()}
    kept = {
        "uniq_conversion_click_dedup",  # /cv's lookup of a click's conversions
        "conversion_method_idx",  # the method filter
        "inbound_channel_idx",  # the method filter of the inbound log
        "inbound_click_id_idx",  # its click ID search
        "inbound_upload_row_idx",  # an upload's rows
        "delivery_status_due_idx",  # the dispatcher's claim and the sweeper
        "delivery_due_idx",
        "delivery_in_flight_idx",
        "delivery_created_idx",  # the delivery log's order
        "postbacks_delivery_idempotency_key_key",  # one delivery per rule and event version
    }
    assert kept <= names


def test_the_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
