"""``manage.py simulate`` against the app served over real HTTP by pytest-django's live_server."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Campaign, CampaignOffer, Offer, TrafficSource, TrafficSourceParameter
from tests.conftest import ROOT, _database_url
from tracker.management.commands.simulate import (
    SAMPLE_VALUES,
    Target,
    fixture_lines,
    load_targets,
    plan_visits,
)
from tracker.models import Click, Conversion, InboundRequest

RATES = {"conversion_rate": 0.5, "duplicate_rate": 0.3, "bad_rate": 0.3}


@pytest.fixture
def campaign(transactional_db) -> Campaign:
    """A Taboola-like campaign: external ID in ``external_id``, var1=site, var5=platform."""
    source = TrafficSource.objects.create(
        name="Taboola", external_id_param="external_id", external_id_placeholder="{click_id}"
    )
    for slot, param in ((1, "site"), (5, "platform")):
        TrafficSourceParameter.objects.create(
            traffic_source=source, slot=slot, name=param, param=param, placeholder=f"{{{param}}}"
        )
    offer = Offer.objects.create(
        name="Offer", url="https://offer.example/?s2={cf_click_id}", payout=Decimal("1.50")
    )
    created = Campaign.objects.create(name="Campaign", traffic_source=source)
    CampaignOffer.objects.create(campaign=created, offer=offer)
    return created


def fixture_ips() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The valid addresses of ips.txt."""
    valid = set()
    for line in fixture_lines("ips.txt"):
        try:
            valid.add(ipaddress.ip_address(line))
        except ValueError:
            continue
    return valid


def summary(text: str) -> dict[str, str]:
    """The summary table as {label: value}."""
    rows = (line.rsplit(None, 1) for line in text.strip().splitlines())
    return {label.strip(): value for label, value in rows}


def test_simulate_fills_the_logs_as_planned(live_server, campaign):
    targets = load_targets([campaign.key])
    assert targets == [Target(campaign.key, "external_id", ("site", "platform"))]
    plan = plan_visits(targets, 30, rng=random.Random(1), **RATES)
    expected = Counter(postback.expect for visit in plan for postback in visit.postbacks)
    assert expected["ok"] and expected["duplicate"] and expected["rejected"]

    out = StringIO()
    call_command(
        "simulate",
        base_url=live_server.url,
        campaign=[campaign.key],
        clicks=30,
        seed=1,
        concurrency=4,
        verbosity=0,
        stdout=out,
        **RATES,
    )

    clicks = Click.objects.filter(campaign=campaign)
    assert clicks.count() == 30
    assert Counter(c.user_agent for c in clicks) == Counter(v.user_agent for v in plan)
    assert {c.user_agent for c in clicks} <= set(fixture_lines("user_agents.txt"))
    assert {c.external_id for c in clicks} == {v.query["external_id"] for v in plan}
    assert all(len(c.external_id) >= 40 for c in clicks)
    assert {c.var1 for c in clicks} <= set(SAMPLE_VALUES["site"])
    assert {c.var5 for c in clicks} <= set(SAMPLE_VALUES["platform"])
    assert {ipaddress.ip_address(c.ip) for c in clicks} <= fixture_ips()

    conversions = Conversion.objects.filter(click__campaign=campaign)
    assert conversions.count() == expected["ok"]
    assert conversions.values("txid").distinct().count() == conversions.count()
    assert all(Decimal("0.5") <= c.payout <= Decimal("50") for c in conversions)
    assert {c.conversion_type for c in conversions} <= {"lead", "sale"}

    log = InboundRequest.objects.all()
    assert log.filter(outcome="accepted").count() == expected["ok"]
    duplicates = log.filter(outcome="duplicate")
    assert duplicates.count() == expected["duplicate"]
    assert all(d.conversion_id is not None and d.response_status == 200 for d in duplicates)
    rejected = log.filter(response_status__gte=400)
    assert rejected.count() == expected["rejected"]
    assert all(400 <= r.response_status < 500 and r.error_code for r in rejected)

    assert summary(out.getvalue()) | {"Elapsed seconds": "", "Requests per second": ""} == {
        "Clicks sent": "30",
        "Clicks recorded (302)": "30",
        "Conversions ok": str(expected["ok"]),
        "Conversions duplicate": str(expected["duplicate"]),
        "Conversions rejected (4xx)": str(expected["rejected"]),
        "Unexpected answers": "0",
        "HTTP errors": "0",
        "Elapsed seconds": "",
        "Requests per second": "",
    }


def test_every_fixture_ip_gets_a_click(live_server, campaign, settings):
    """Malformed, private and IPv6 forwarded addresses must not break a click."""
    settings.TRACKER_PROXY_COUNT = 1
    lines = fixture_lines("ips.txt")
    for number, line in enumerate(lines):
        response = requests.get(
            f"{live_server.url}/c/{campaign.key}",
            params={"external_id": f"ip-{number}", "site": "s"},
            headers={"X-Forwarded-For": line},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, line
        click = Click.objects.get(pk=response.cookies["cf_click_id"])
        assert click.external_id == f"ip-{number}"
        try:
            assert ipaddress.ip_address(click.ip) == ipaddress.ip_address(line)
        except ValueError:  # not an IP: the connection's address is kept instead
            assert click.ip == "127.0.0.1"
    assert Click.objects.count() == len(lines)
    assert "not-an-ip" in lines and not any(line.startswith("#") for line in lines)


def test_same_seed_same_traffic():
    targets = [Target("abc"), Target("def", "subid", ("zone_id",))]
    first, again, other = (
        plan_visits(targets, 50, rng=random.Random(seed), **RATES) for seed in (5, 5, 6)
    )
    assert first == again
    assert first != other
    assert {v.key for v in first} == {"abc", "def"}
    assert all(v.query["zone_id"].isdigit() for v in first if v.key == "def")
    txids = [p.data["txid"] for v in first for p in v.postbacks if p.expect == "ok"]
    assert len(txids) == len(set(txids))


def test_unreachable_instance_says_how_to_start_it(db):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError, match="make run"):
        call_command("simulate", base_url=f"http://127.0.0.1:{port}", campaign=["k"], clicks=1)


def test_readme_form_runs_without_debug_or_secret_key(live_server, campaign):
    """`.venv/bin/python manage.py simulate ...` in a second terminal, with no demo settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")
    }
    env["DATABASE_URL"] = _database_url()
    result = subprocess.run(
        [sys.executable, "manage.py", "simulate", "--base-url", live_server.url,
         "--campaign", campaign.key, "--clicks", "5", "--seed", "3", "--verbosity", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["Clicks recorded (302)"] == "5"
    assert Click.objects.filter(campaign=campaign).count() == 5
