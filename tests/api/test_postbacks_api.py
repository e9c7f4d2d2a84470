"""The postbacks API: rule CRUD validated like the admin form, the delivery log (filters,
cursor pagination), replay and cancel, the macro catalogue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postbacks.masking import mask_header_lines as mask_headers_template
from postbacks.masking import unmask_header_lines as unmask_headers_template
from postbacks.models import Attempt, Delivery, PostbackRule
from tests import factories
from tracker.models import Conversion, RejectionReason

pytestmark = pytest.mark.django_db

RULES = "/api/v1/postback-rules/"
DELIVERIES = "/api/v1/deliveries/"
ATTEMPTS = "/api/v1/attempts/"
URL = "https://trc.example/postback?click-id={externalid}&revenue={payout}"


def rule_body(**fields) -> dict:
    return {"name": "Taboola lead", "url_template": URL, **fields}


# --- Rules -------------------------------------------------------------------------------


def test_rule_crud(api):
    answer = api.post(RULES, rule_body(conversion_types=[" lead", "Sale", "lead"]), format="json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["event_type"] == "conversion" and body["is_active"] is True
    assert body["conversion_types"] == ["lead", "Sale"]
    assert body["campaigns"] == [] and body["warnings"] == []
    url = f"{RULES}{body['id']}/"

    assert api.get(url).json()["name"] == "Taboola lead"
    listed = api.get(RULES).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]

    answer = api.patch(url, {"delay_seconds": 3600, "payout_currency": "eur"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["payout_currency"] == "EUR"
    rule = PostbackRule.objects.get()
    assert rule.delay_seconds == 3600 and rule.conversion_types == ["lead", "Sale"]

    answer = api.put(url, rule_body(name="Renamed", http_method="POST"), format="json")
    assert answer.status_code == 200, answer.content
    rule.refresh_from_db()
    # DRF's PUT: fields left out keep their values.
    assert (rule.name, rule.http_method, rule.delay_seconds) == ("Renamed", "POST", 3600)
    # The URL a rule needs depends on its destination kind: an S2S rule without one is a 400.
    answer = api.put(url, {"name": "No URL", "url_template": ""}, format="json")
    assert answer.status_code == 400
    assert answer.json()["detail"]["url_template"] == ["Enter the destination URL."]

    assert api.delete(url).status_code == 204
    assert not PostbackRule.objects.exists()


def test_unknown_macro_is_a_400_naming_it(api):
    answer = api.post(RULES, rule_body(url_template=URL + "&x={clikcid}"), format="json")
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid"
    assert "{clikcid}" in " ".join(body["detail"]["url_template"])
    answer = api.post(
        RULES,
        rule_body(headers_template="X-Id: {nosuchmacro}"),
        format="json",
    )
    assert answer.status_code == 400
    assert "{nosuchmacro}" in str(answer.json()["detail"])
    assert not PostbackRule.objects.exists()


def test_form_only_checks_apply_too(api):
    """Checks of the admin form beyond the model: ``{var:...}`` of the chosen sources."""
    source = factories.traffic_source()  # defines {var:site}
    ok = api.post(
        RULES,
        rule_body(url_template=URL + "&s={var:site}", traffic_sources=[source.pk]),
        format="json",
    )
    assert ok.status_code == 201, ok.content
    bad = api.post(
        RULES,
        rule_body(url_template=URL + "&s={var:nope}", traffic_sources=[source.pk]),
        format="json",
    )
    assert bad.status_code == 400
    assert "url_template" in bad.json()["detail"]


def test_unknown_fields_and_bad_values_are_refused(api):
    answer = api.post(RULES, rule_body(colour="red"), format="json")
    assert answer.status_code == 400
    assert answer.json()["detail"] == {"colour": ["Unknown field."]}
    answer = api.post(RULES, rule_body(statuses=["nope"], delay_seconds=10**9), format="json")
    assert answer.status_code == 400
    assert set(answer.json()["detail"]) == {"statuses", "delay_seconds"}
    answer = api.post(RULES, rule_body(payout_currency="XYZ"), format="json")
    assert answer.status_code == 400 and "payout_currency" in answer.json()["detail"]
    answer = api.post(RULES, rule_body(conversion_types=["a,b"]), format="json")
    assert answer.status_code == 400 and "conversion_types" in answer.json()["detail"]


def test_warnings_are_returned(api):
    answer = api.post(
        RULES, rule_body(url_template="https://trc.example/pb?v={payout}"), format="json"
    )
    assert answer.status_code == 201, answer.content
    assert any("externalid" in warning for warning in answer.json()["warnings"])


def test_scope_by_ids(api):
    source = factories.traffic_source()
    camp = factories.campaign(source)
    off = camp.campaign_offers.first().offer
    reason = RejectionReason.objects.get_or_create(code="fraud")[0]
    body = rule_body(
        campaigns=[camp.pk],
        offers=[off.pk],
        traffic_sources=[source.pk],
        affiliate_networks=[off.affiliate_network_id],
        rejection_reasons=[reason.pk],
        statuses=["rejected"],
    )
    answer = api.post(RULES, body, format="json")
    assert answer.status_code == 201, answer.content
    rule = PostbackRule.objects.get()
    assert list(rule.campaigns.values_list("pk", flat=True)) == [camp.pk]
    assert list(rule.offers.values_list("pk", flat=True)) == [off.pk]
    assert list(rule.traffic_sources.values_list("pk", flat=True)) == [source.pk]
    assert list(rule.rejection_reasons.values_list("pk", flat=True)) == [reason.pk]
    url = f"{RULES}{rule.pk}/"
    # A PATCH of other fields keeps the scope; an empty list clears it.
    assert api.patch(url, {"name": "x"}, format="json").json()["campaigns"] == [camp.pk]
    assert api.patch(url, {"offers": []}, format="json").json()["offers"] == []
    answer = api.patch(url, {"campaigns": [999999]}, format="json")
    assert answer.status_code == 400 and "campaigns" in answer.json()["detail"]


# --- Secret headers: write-only ----------------------------------------------------------

SECRETS = (
    "Authorization: Bearer abc123\n"
    "X-Source: {trafficsource.name}\n"
    "x-api-key: k-1\n"
    "Cookie: sid=c-2\n"
    "X-Hub-Signature: {externalid:sha256}"
)
MASKED = (
    "Authorization: ***\nX-Source: {trafficsource.name}\nx-api-key: ***\nCookie: ***\n"
    "X-Hub-Signature: ***"
)


def test_secret_header_values_are_masked_and_the_rest_is_kept():
    assert mask_headers_template(SECRETS) == MASKED
    for name in (
        "Authorization", "Proxy-Authorization", "cookie", "X-Auth-Token", "X-Access-TOKEN",
        "X-Client-Secret", "X-Api-Key", "apikey", "X-Signature", "X-Password",
    ):  # fmt: skip
        assert mask_headers_template(f"{name}: v\r\nX-A: 1") == f"{name}: ***\r\nX-A: 1", name
    for name in ("X-Source", "Content-Language", "Accept", "Idempotency-Key", "Set-Cookie2"):
        assert mask_headers_template(f"{name}: v") == f"{name}: v", name
    assert mask_headers_template("Authorization:\n\nbroken line") == "Authorization:\n\nbroken line"


def test_masked_header_values_written_back_keep_the_stored_ones():
    stored = "X-Token: a\nAuthorization: Bearer b\nX-Token: c"
    assert unmask_headers_template(mask_headers_template(stored), stored) == stored
    sent = "authorization: ***\nX-Token: new\nX-Token: ***"  # any case; the n-th X-Token
    assert (
        unmask_headers_template(sent, stored) == "authorization: Bearer b\nX-Token: new\nX-Token: a"
    )


def test_rule_secret_headers_are_write_only(api):
    answer = api.post(RULES, rule_body(headers_template=SECRETS), format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["headers_template"] == MASKED
    url = f"{RULES}{answer.json()['id']}/"
    assert api.get(url).json()["headers_template"] == MASKED
    assert api.get(RULES).json()["results"][0]["headers_template"] == MASKED
    assert PostbackRule.objects.get().headers_template == SECRETS

    # What was read, written back with one header changed: the secrets are kept.
    read = api.get(url).json()
    body = {k: v for k, v in read.items() if k not in ("id", "warnings")}
    body["headers_template"] = MASKED.replace("{trafficsource.name}", "fixed")
    answer = api.put(url, body, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["headers_template"] == MASKED.replace("{trafficsource.name}", "fixed")
    assert PostbackRule.objects.get().headers_template == SECRETS.replace(
        "{trafficsource.name}", "fixed"
    )

    # A new value replaces the stored one; a header left out is removed.
    answer = api.patch(url, {"headers_template": "Authorization: Bearer new\nCookie: ***"})
    assert answer.status_code == 200, answer.content
    rule = PostbackRule.objects.get()
    assert rule.headers_template == "Authorization: Bearer new\nCookie: sid=c-2"


def test_a_masked_value_without_a_stored_one_is_a_400(api):
    answer = api.post(RULES, rule_body(headers_template="Authorization: ***"), format="json")
    assert answer.status_code == 400
    [message] = answer.json()["detail"]["headers_template"]
    assert message.startswith("Line 1 (Authorization): *** keeps the saved value")
    rule = factories.rule(URL, headers_template="Authorization: Bearer abc123")
    answer = api.patch(
        f"{RULES}{rule.pk}/",
        {"headers_template": "Authorization: ***\nX-Api-Key: ***"},
        format="json",
    )
    assert answer.status_code == 400
    [message] = answer.json()["detail"]["headers_template"]
    assert message.startswith("Line 2 (X-Api-Key): ")
    rule.refresh_from_db()
    assert rule.headers_template == "Authorization: Bearer abc123"


def test_a_rule_access_token_is_write_only(api):
    rule = factories.rule(URL, access_token="EAAB-s3cret")
    row = api.get(f"{RULES}{rule.pk}/").json()
    assert "access_token" not in row and "s3cret" not in str(row)
    answer = api.patch(f"{RULES}{rule.pk}/", {"name": "Renamed"}, format="json")
    assert answer.status_code == 200 and "access_token" not in answer.json()
    rule.refresh_from_db()
    assert rule.access_token == "EAAB-s3cret"  # kept


def test_rule_filters(api):
    factories.rule(URL, name="a", event_type="click")
    factories.rule(URL, name="b", is_active=False)
    names = lambda query: [r["name"] for r in api.get(RULES + query).json()["results"]]  # noqa: E731
    assert names("") == ["a", "b"]
    assert names("?event_type=click") == ["a"]
    assert names("?is_active=false") == ["b"]
    assert names("?kind=s2s") == ["a", "b"]


def test_deactivating_or_deleting_a_rule_cancels_its_waiting_deliveries(api):
    rule = factories.rule(URL)
    waiting = factories.delivery("https://trc.example/pb", rule=rule, due_in=600)
    answer = api.patch(f"{RULES}{rule.pk}/", {"is_active": False}, format="json")
    assert answer.status_code == 200
    waiting.refresh_from_db()
    assert waiting.status == Delivery.Status.CANCELLED
    other = factories.rule(URL, name="other")
    waiting = factories.delivery("https://trc.example/pb", rule=other, due_in=600)
    assert api.delete(f"{RULES}{other.pk}/").status_code == 204
    waiting.refresh_from_db()
    assert waiting.status == Delivery.Status.CANCELLED


def test_switching_a_rule_back_on_clears_its_failure_streak_and_banner(api):
    rule = factories.rule(
        URL, is_active=False, needs_attention=True, consecutive_failures=20,
        disabled_at=timezone.now(), disabled_reason="HTTP 500",
    )  # fmt: skip
    answer = api.patch(f"{RULES}{rule.pk}/", {"name": "Renamed"}, format="json")
    assert answer.status_code == 200 and answer.json()["needs_attention"] is True
    answer = api.patch(f"{RULES}{rule.pk}/", {"is_active": True}, format="json")
    assert answer.status_code == 200
    assert (answer.json()["needs_attention"], answer.json()["consecutive_failures"]) == (False, 0)
    rule.refresh_from_db()
    assert rule.is_active and not rule.needs_attention and rule.consecutive_failures == 0


def test_read_only_user_reads_but_cannot_write(api_for):
    rule = factories.rule(URL)
    client = api_for("view_postbackrule")
    assert client.get(RULES).status_code == 200
    assert client.get(f"{RULES}{rule.pk}/").status_code == 200
    assert client.post(RULES, rule_body(), format="json").status_code == 403
    answer = client.patch(f"{RULES}{rule.pk}/", {"name": "x"}, format="json")
    assert answer.status_code == 403 and answer.json()["error"] == "permission_denied"
    assert client.delete(f"{RULES}{rule.pk}/").status_code == 403
    assert api_for().get(RULES).status_code == 403


# --- Delivery log ------------------------------------------------------------------------


class World:
    """``da``: rule A, source A, failed, five days old, click ext-a, txid tx-a, attempts
    a1 (404) and a2 (no answer, slow); ``db``: rule B, source B, delivered, click ext-b,
    txid tx-b, attempts b1 (500) and b2 (200); ``ds``: rule A, scheduled, no attempt."""

    def __init__(self) -> None:
        now = timezone.now()
        self.source_a = factories.traffic_source("Source A")
        self.source_b = factories.traffic_source("Source B")
        self.offer_a = factories.offer("Offer A")
        self.offer_b = factories.offer("Offer B")
        self.campaign_a = factories.campaign(self.source_a, self.offer_a, name="Campaign A")
        self.campaign_b = factories.campaign(self.source_b, self.offer_b, name="Campaign B")
        self.rule_a = factories.rule("https://a.example/?c={externalid}", name="Rule A")
        self.rule_b = factories.rule("https://b.example/?c={externalid}", name="Rule B")
        self.click_a = factories.click(self.campaign_a, external_id="ext-a")
        self.click_b = factories.click(self.campaign_b, external_id="ext-b")
        conversion_a = Conversion.objects.create(click=self.click_a, txid="tx-a")
        conversion_b = Conversion.objects.create(click=self.click_b, txid="tx-b")
        self.da = factories.delivery(
            "https://a.example/?c=ext-a&token=s3cret", rule=self.rule_a, click=self.click_a,
            conversion=conversion_a, traffic_source=self.source_a, status="failed",
            attempt_count=2, max_attempts=2, last_status_code=404,
            headers={"Authorization": "Bearer s3cret", "X-Hub-Signature": "s3cret", "X-Src": "a"},
        )  # fmt: skip
        self.db = factories.delivery(
            "https://b.example/?c=ext-b", rule=self.rule_b, click=self.click_b,
            conversion=conversion_b, traffic_source=self.source_b, status="delivered",
            attempt_count=2, last_status_code=200,
        )  # fmt: skip
        self.ds = factories.delivery(
            "https://a.example/?c=ext-a", rule=self.rule_a, click=self.click_a,
            traffic_source=self.source_a, due_in=3600,
        )  # fmt: skip
        Delivery.objects.filter(pk=self.da.pk).update(created_at=now - timedelta(days=5))

        def attempt(delivery, number, ago, code, outcome, ms=50):
            return Attempt.objects.create(
                delivery=delivery, number=number, started_at=now - ago, method="GET",
                url=delivery.url.replace("s3cret", "***"), status_code=code, outcome=outcome,
                duration_ms=ms,
            )  # fmt: skip

        self.a1 = attempt(self.da, 1, timedelta(days=4), 404, "failed")
        self.a2 = attempt(self.da, 2, timedelta(days=3), None, "retry", 1500)
        self.b1 = attempt(self.db, 1, timedelta(hours=2), 500, "retry")
        self.b2 = attempt(self.db, 2, timedelta(hours=1), 200, "delivered")

    def names(self, answer) -> set[str]:
        assert answer.status_code == 200, answer.content
        path = answer.wsgi_request.path
        kinds = ("a1", "a2", "b1", "b2") if path.startswith(ATTEMPTS) else ("da", "db", "ds")
        labels = {getattr(self, name).pk: name for name in kinds}
        return {labels[row["id"]] for row in answer.json()["results"]}


@pytest.fixture
def world() -> World:
    return World()


def test_delivery_filters(api, world):
    ago = (timezone.now() - timedelta(days=1)).isoformat()
    cases = [
        ({}, {"da", "db", "ds"}),
        ({"created_after": ago}, {"db", "ds"}),
        ({"created_before": ago}, {"da"}),
        ({"rule": world.rule_a.pk}, {"da", "ds"}),
        ({"traffic_source": world.source_b.pk}, {"db"}),
        ({"offer": world.offer_b.pk}, {"db"}),
        ({"campaign": world.campaign_a.pk}, {"da", "ds"}),
        ({"status": "failed"}, {"da"}),
        ({"status": ["failed", "scheduled"]}, {"da", "ds"}),
        ({"http": "4xx"}, {"da"}),
        ({"http": "none"}, {"ds"}),
        ({"last_status_code": 200}, {"db"}),
        ({"click_id": str(world.click_b.pk)}, {"db"}),
        ({"external_id": "ext-a"}, {"da", "ds"}),
        ({"txid": "tx-b"}, {"db"}),
        ({"txid": "nope"}, set()),
    ]
    for query, expected in cases:
        assert world.names(api.get(DELIVERIES, query)) == expected, query
    assert api.get(DELIVERIES, {"status": "bogus"}).status_code == 400


def test_attempt_filters(api, world):
    ago = (timezone.now() - timedelta(days=1)).isoformat()
    cases = [
        ({}, {"a1", "a2", "b1", "b2"}),
        ({"created_after": ago}, {"b1", "b2"}),
        ({"created_before": ago}, {"a1", "a2"}),
        ({"delivery": world.db.pk}, {"b1", "b2"}),
        ({"rule": world.rule_a.pk}, {"a1", "a2"}),
        ({"traffic_source": world.source_b.pk}, {"b1", "b2"}),
        ({"offer": world.offer_a.pk}, {"a1", "a2"}),
        ({"campaign": world.campaign_b.pk}, {"b1", "b2"}),
        ({"outcome": "retry"}, {"a2", "b1"}),
        ({"status_code": 404}, {"a1"}),
        ({"http": "5xx"}, {"b1"}),
        ({"http": "none"}, {"a2"}),
        ({"slow": "true"}, {"a2"}),
        ({"click_id": str(world.click_a.pk)}, {"a1", "a2"}),
        ({"external_id": "ext-b"}, {"b1", "b2"}),
        ({"txid": "tx-a"}, {"a1", "a2"}),
    ]
    for query, expected in cases:
        assert world.names(api.get(ATTEMPTS, query)) == expected, query


def test_log_rows_hide_secrets(api, world):
    row = api.get(f"{DELIVERIES}{world.da.pk}/").json()
    assert "s3cret" not in str(row)
    # Which headers were sent shows; the values of secret ones do not.
    assert row["headers"] == {"Authorization": "***", "X-Hub-Signature": "***", "X-Src": "a"}
    listed = api.get(DELIVERIES, {"txid": "tx-a"}).json()["results"]
    assert listed[0]["headers"] == row["headers"]
    assert row["external_id"] == "ext-a" and row["txid"] == "tx-a"
    row = api.get(f"{ATTEMPTS}{world.a1.pk}/").json()
    assert "s3cret" not in row["url"] and row["rule"] == world.rule_a.pk


@pytest.mark.parametrize("path", [DELIVERIES, ATTEMPTS])
def test_log_lists_read_a_fixed_number_of_queries(api, world, path):
    api.get(path)  # warm up (token, permissions)
    with CaptureQueriesContext(connection) as few:
        api.get(path, {"page_size": 1})
    with CaptureQueriesContext(connection) as many:
        api.get(path, {"page_size": 100})
    assert len(many) == len(few)


@pytest.mark.parametrize("path", [DELIVERIES, ATTEMPTS])
def test_cursor_pagination_follows_next_without_duplicates(api, world, path):
    for _ in range(3):
        factories.delivery("https://c.example/", rule=world.rule_a)
    seen: list[int] = []
    answer = api.get(path, {"page_size": 2})
    pages = 0
    while True:
        body = answer.json()
        assert answer.status_code == 200 and "count" not in body
        seen += [row["id"] for row in body["results"]]
        pages += 1
        # Rows written between two pages show up on none of the later ones.
        new = factories.delivery("https://c.example/", rule=world.rule_a)
        Attempt.objects.create(
            delivery=new, number=1, started_at=timezone.now(), method="GET",
            url=new.url, outcome="delivered",
        )  # fmt: skip
        if not body["next"]:
            break
        answer = api.get(body["next"])
    assert pages > 1
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    expected = 6 if path == DELIVERIES else 4
    assert len(seen) == expected


def test_log_permissions(api_for, world):
    viewer = api_for("view_delivery")
    assert viewer.get(DELIVERIES).status_code == 200
    assert viewer.get(ATTEMPTS).status_code == 403
    assert viewer.post(f"{DELIVERIES}{world.ds.pk}/cancel/").status_code == 403
    assert api_for("view_delivery", "add_delivery").post(DELIVERIES, {}).status_code == 405
    assert api_for("view_attempt").get(ATTEMPTS).status_code == 200


# --- Replay and cancel ---------------------------------------------------------------------


def test_replay_and_cancel_one(api_for, world):
    client = api_for("change_delivery", "view_delivery")
    answer = client.post(f"{DELIVERIES}{world.da.pk}/replay/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "scheduled"
    world.da.refresh_from_db()
    assert world.da.status == "scheduled" and world.da.max_attempts == 3

    answer = client.post(f"{DELIVERIES}{world.db.pk}/replay/")
    assert answer.status_code == 409 and answer.json()["error"] == "not_replayable"

    answer = client.post(f"{DELIVERIES}{world.ds.pk}/cancel/")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    answer = client.post(f"{DELIVERIES}{world.ds.pk}/cancel/")
    assert answer.status_code == 409 and answer.json()["error"] == "not_cancellable"
    assert client.post(f"{DELIVERIES}999999/cancel/").status_code == 404


def test_bulk_replay_and_cancel(api, world):
    answer = api.post(
        f"{DELIVERIES}replay/", {"ids": [world.da.pk, world.db.pk, 999999]}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"requested": 3, "done": 1, "skipped": [world.db.pk, 999999]}
    world.da.refresh_from_db()
    assert world.da.status == "scheduled"

    answer = api.post(f"{DELIVERIES}cancel/", {"ids": [world.da.pk, world.db.pk]}, format="json")
    assert answer.json() == {"requested": 2, "done": 1, "skipped": [world.db.pk]}
    assert Delivery.objects.get(pk=world.da.pk).status == "cancelled"

    too_many = api.post(f"{DELIVERIES}replay/", {"ids": list(range(1, 1002))}, format="json")
    assert too_many.status_code == 400 and "ids" in too_many.json()["detail"]
    assert api.post(f"{DELIVERIES}replay/", {"ids": []}, format="json").status_code == 400


# --- Macros --------------------------------------------------------------------------------


def test_macro_catalogue_for_any_authenticated_user(api_for, client):
    answer = api_for().get("/api/v1/macros/")
    assert answer.status_code == 200
    macros = answer.json()
    entry = next(m for m in macros if m["name"] == "externalid")
    assert set(entry) == {"name", "group", "description", "aliases", "recorded", "deprecated"}
    assert client.get("/api/v1/macros/").status_code == 401
