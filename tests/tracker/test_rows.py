"""``tracker.rows``: the prebuilt INSERT and the row reader of the ``/cv`` path give what the
ORM gives (primary keys, defaults, auto_now_add, converted values, errors, rollback)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from postbacks.models import Delivery
from tests import factories
from tracker import rows
from tracker.models import Click, Conversion, InboundRequest

pytestmark = pytest.mark.django_db


def test_insert_sets_the_keys_and_what_save_sets():
    click = factories.click()
    made = [
        Conversion(click=click, dedup_key=f"t:{n}", txid=str(n), payout=Decimal("1.25"))
        for n in range(3)
    ]
    rows.insert(made)
    assert all(c.pk and not c._state.adding for c in made)
    stored = {c.pk: c for c in Conversion.objects.filter(click=click)}
    assert sorted(stored) == sorted(c.pk for c in made)
    first = stored[made[0].pk]
    assert (first.txid, first.payout, first.status, first.method) == (
        "0",
        Decimal("1.250000"),
        "approved",
        "s2s",
    )
    assert first.created_at == made[0].created_at is not None  # auto_now_add, as save() sets it


def test_insert_writes_json_and_addresses_like_the_orm():
    row = InboundRequest(
        endpoint="/cv", method="GET", ip="2001:db8::1", response_status=200, outcome="accepted"
    )
    rows.insert([row])
    delivery = Delivery(
        event_type="conversion", idempotency_key="k1", kind="s2s", url="https://x.example/",
        headers={"X-Token": "a\u00e9"}, due_at=row.created_at,
    )  # fmt: skip
    rows.insert([delivery])
    assert InboundRequest.objects.get(pk=row.pk).ip == "2001:db8::1"
    assert Delivery.objects.get(pk=delivery.pk).headers == {"X-Token": "a\u00e9"}


def test_a_refused_insert_raises_and_rolls_the_block_back():
    click = factories.click()
    rows.insert([Conversion(click=click, dedup_key="t:T")])
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert([InboundRequest(endpoint="/cv", method="GET", response_status=200)])
        rows.insert([Conversion(click=click, dedup_key="t:T")])
    assert InboundRequest.objects.count() == 0 and Conversion.objects.count() == 1


def test_instance_reads_a_row_as_the_orm_does():
    click = factories.click(ip="192.0.2.7", is_bot=True, var3="v3")
    with connection.cursor() as cursor:
        pk = Click._meta.pk.get_db_prep_value(click.pk, connection)
        cursor.execute(
            f"SELECT {rows.columns(Click, 'c')}, 7 FROM tracker_click c WHERE id = %s", [pk]
        )
        read = rows.instance(Click, cursor.fetchone())
    loaded = Click.objects.get(pk=click.pk)
    fields = [f.attname for f in Click._meta.concrete_fields]
    assert {f: getattr(read, f) for f in fields} == {f: getattr(loaded, f) for f in fields}
    assert read.is_bot is True and read.created_at.tzinfo is not None
    assert not read._state.adding
