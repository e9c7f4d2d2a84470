"""``manage.py simulate``: drive a running tracker over HTTP with realistic traffic.

Each visit is a click on ``/c/<key>`` with a user agent, an IP and an external ID like a real
visitor's, plus the traffic source's var parameters. Some visits convert through ``/cv``; some
of those conversions are sent twice (the repeat must answer "duplicate") and some get a
malformed call too (it must answer 4xx). The whole plan is drawn up front from one random
generator, so ``--seed`` replays the same traffic.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from tqdm import tqdm

from campaigns.models import Campaign

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TIMEOUT = 10
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
TOKEN_CHARS = string.ascii_letters + string.digits + "-_"
SAMPLE_VALUES = {
    "site": ("msn-en-us", "yahoo-finance", "weather-com", "the-independent", "usatoday"),
    "platform": ("Desktop", "Smartphone", "Tablet"),
}
# Affiliate networks fire postbacks from their servers, with an HTTP library's user agent.
NETWORK_AGENTS = ("Go-http-client/1.1", "Apache-HttpClient/4.5.14 (Java/17.0.9)", "curl/7.88.1")


@dataclass(frozen=True)
class Target:
    """A campaign and the query parameters its traffic source puts in the tracking URL."""

    key: str
    external_id_param: str = "external_id"
    var_params: tuple[str, ...] = ("site",)


@dataclass(frozen=True)
class Postback:
    """One ``/cv`` call and the answer it must get: "ok", "duplicate" or "rejected".

    ``data`` goes out as sent; the visit's click ID is added unless ``data`` has its own.
    """

    method: str
    data: dict[str, str]
    user_agent: str
    expect: str


@dataclass(frozen=True)
class Visit:
    """One click and the postbacks that follow it."""

    key: str
    query: dict[str, str]
    user_agent: str
    ip: str
    postbacks: tuple[Postback, ...] = ()


def fixture_lines(name: str) -> list[str]:
    """The samples in ``tracker/fixtures/<name>``; '#' lines document them and are skipped."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    return [text for line in lines if (text := line.strip()) and not text.startswith("#")]


def load_targets(keys: list[str] | None) -> list[Target]:
    """Campaigns to click, with their sources' parameters so the clicks fill var1..var10.

    Without ``keys``: every active campaign. A key missing from the local database (a remote
    instance) is still clicked, with an ``external_id`` and a ``site`` parameter.
    """
    campaigns = Campaign.objects.select_related("traffic_source").prefetch_related(
        "traffic_source__parameters"
    )
    campaigns = campaigns.filter(key__in=keys) if keys else campaigns.filter(is_active=True)
    try:
        found = {campaign.key: _target(campaign) for campaign in campaigns}
    except DatabaseError:
        found = {}
    if not keys:
        return list(found.values())
    return [found.get(key, Target(key)) for key in dict.fromkeys(keys)]


def _target(campaign: Campaign) -> Target:
    source = campaign.traffic_source
    params = tuple(p.param for p in source.parameters.all() if p.is_enabled)
    return Target(campaign.key, source.external_id_param, params)


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(TOKEN_CHARS, k=length))


def _param_value(rng: random.Random, name: str) -> str:
    if name in SAMPLE_VALUES:
        return rng.choice(SAMPLE_VALUES[name])
    if name.endswith("id"):
        return str(rng.randint(100_000, 99_999_999))
    return _token(rng, 8).lower()


def _malformed(rng: random.Random, good: Postback) -> Postback:
    """A broken copy of a conversion postback, as networks do send them."""
    data = dict(good.data)
    match rng.choice(("payout", "unknown_click", "invalid_click", "status")):
        case "payout":
            data["payout"] = rng.choice(("12,50", "USD 3", "1e12", "NaN"))
        case "unknown_click":
            data["click_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        case "invalid_click":
            data["click_id"] = rng.choice(("{click_id}", "#s2#", _token(rng, 20)))
        case _:
            data["status"] = rng.choice(("won", "{status}", "9"))
    return replace(good, data=data, expect="rejected")


def plan_visits(
    targets: list[Target],
    clicks: int,
    *,
    conversion_rate: float,
    duplicate_rate: float,
    bad_rate: float,
    rng: random.Random,
) -> list[Visit]:
    """Draw every visit before sending anything, so a seed gives the same traffic each run."""
    user_agents, ips = fixture_lines("user_agents.txt"), fixture_lines("ips.txt")
    visits = []
    for number in range(1, clicks + 1):
        target = rng.choice(targets)
        query = {target.external_id_param: _token(rng, rng.randint(40, 80))}
        query |= {name: _param_value(rng, name) for name in target.var_params}
        postbacks: list[Postback] = []
        if rng.random() < conversion_rate:
            data = {
                "payout": f"{rng.uniform(0.5, 50):.2f}",
                "txid": f"T-{number:06d}-{_token(rng, 10)}",
                "ct": rng.choice(("lead", "sale")),
                "status": "approved",
            }
            good = Postback(rng.choice(("GET", "POST")), data, rng.choice(NETWORK_AGENTS), "ok")
            postbacks.append(good)
            if rng.random() < duplicate_rate:
                postbacks.append(replace(good, expect="duplicate"))
            if rng.random() < bad_rate:
                postbacks.append(_malformed(rng, good))
        visits.append(
            Visit(target.key, query, rng.choice(user_agents), rng.choice(ips), tuple(postbacks))
        )
    return visits


def click_id_of(response: requests.Response) -> str | None:
    """The cookie carries the click ID; the offer URL in Location is the fallback."""
    cookie = response.cookies.get(settings.CLICK_COOKIE_NAME)
    if cookie:
        return cookie
    match = UUID_RE.search(response.headers.get("Location", ""))
    return match.group(0) if match else None


def answer_of(response: requests.Response) -> str:
    """Sort a ``/cv`` answer as "ok", "duplicate", "rejected" (4xx) or "error"."""
    if 400 <= response.status_code < 500:
        return "rejected"
    if response.status_code != 200:
        return "error"
    try:
        status = response.json().get("status")
    except ValueError:
        return "error"
    return status if status in ("ok", "duplicate") else "error"


class Simulator:
    """Sends planned visits from many threads; requests sessions are not thread-safe."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def run(self, visit: Visit) -> Counter[str]:
        """Click, then send the visit's postbacks with the click ID the tracker gave."""
        tally: Counter[str] = Counter(clicks_sent=1, requests=1)
        session = self.session
        session.cookies.clear()  # A new visitor: no cookie from the previous visit.
        try:
            response = session.get(
                f"{self.base_url}/c/{visit.key}",
                params=visit.query,
                headers={"User-Agent": visit.user_agent, "X-Forwarded-For": visit.ip},
                allow_redirects=False,
                timeout=TIMEOUT,
            )
        except requests.RequestException:
            tally["http_errors"] += 1
            return tally
        click_id = click_id_of(response)
        if response.status_code != 302 or click_id is None:
            tally["http_errors" if response.status_code >= 500 else "unexpected"] += 1
            return tally
        tally["clicks_recorded"] += 1
        for postback in visit.postbacks:
            tally["requests"] += 1
            answer = self._send(session, postback, click_id)
            tally["http_errors" if answer == "error" else answer] += 1
            if answer not in (postback.expect, "error"):
                tally["unexpected"] += 1
        return tally

    def _send(self, session: requests.Session, postback: Postback, click_id: str) -> str:
        data = {"click_id": click_id, **postback.data}
        as_query = postback.method == "GET"
        try:
            response = session.request(
                postback.method,
                f"{self.base_url}/cv",
                params=data if as_query else None,
                data=None if as_query else data,
                headers={"User-Agent": postback.user_agent},
                timeout=TIMEOUT,
            )
        except requests.RequestException:
            return "error"
        return answer_of(response)


def check_reachable(base_url: str) -> None:
    """Fail fast with a hint instead of reporting one connection error per click."""
    try:
        requests.head(f"{base_url}/admin/login/", timeout=5, allow_redirects=False)
    except requests.RequestException as exc:
        raise CommandError(
            f"Cannot reach the tracker at {base_url} ({exc.__class__.__name__}). "
            "Start it with `make run`, or point --base-url at a running instance."
        ) from exc


def summary_table(tally: Counter[str], elapsed: float) -> str:
    """The run's counts, one aligned row each."""
    rows = [
        ("Clicks sent", tally["clicks_sent"]),
        ("Clicks recorded (302)", tally["clicks_recorded"]),
        ("Conversions ok", tally["ok"]),
        ("Conversions duplicate", tally["duplicate"]),
        ("Conversions rejected (4xx)", tally["rejected"]),
        ("Unexpected answers", tally["unexpected"]),
        ("HTTP errors", tally["http_errors"]),
        ("Elapsed seconds", f"{elapsed:.2f}"),
        ("Requests per second", f"{tally['requests'] / elapsed if elapsed else 0:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value:>9}" for label, value in rows)


def _rate(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1.")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number.")
    return number


class Command(BaseCommand):
    help = "Send realistic clicks and conversions to a running tracker and summarise the answers."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--base-url", default=settings.TRACKER_BASE_URL, help="Default: %(default)s."
        )
        parser.add_argument(
            "--campaign",
            action="append",
            metavar="KEY",
            help="Campaign key to click (repeatable). Default: every active campaign.",
        )
        parser.add_argument("--clicks", type=_positive, default=200, help="Visits to send.")
        parser.add_argument(
            "--conversion-rate", type=_rate, default=0.3, help="Share of clicks that convert."
        )
        parser.add_argument("--concurrency", type=_positive, default=8, help="Threads.")
        parser.add_argument("--seed", type=int, help="Replay the same traffic.")
        parser.add_argument(
            "--duplicate-rate",
            type=_rate,
            default=0.05,
            help="Share of conversions sent twice with the same txid (expect 'duplicate').",
        )
        parser.add_argument(
            "--bad-rate",
            type=_rate,
            default=0.02,
            help="Share of conversions that also get a malformed /cv call (expect 4xx).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base_url = str(options["base_url"]).rstrip("/")
        targets = load_targets(options["campaign"])
        if not targets:
            raise CommandError("No active campaign: run `make demo` or pass --campaign KEY.")
        check_reachable(base_url)
        visits = plan_visits(
            targets,
            options["clicks"],
            conversion_rate=options["conversion_rate"],
            duplicate_rate=options["duplicate_rate"],
            bad_rate=options["bad_rate"],
            rng=random.Random(options["seed"]),
        )
        simulator = Simulator(base_url)
        tally: Counter[str] = Counter()
        started = time.perf_counter()
        with (
            ThreadPoolExecutor(max_workers=options["concurrency"]) as pool,
            tqdm(total=len(visits), unit="click", disable=options["verbosity"] == 0) as bar,
        ):
            for future in as_completed([pool.submit(simulator.run, v) for v in visits]):
                tally.update(future.result())
                bar.set_postfix(conversions=tally["ok"], errors=tally["http_errors"], refresh=False)
                bar.update()
        self.stdout.write(summary_table(tally, time.perf_counter() - started))
        if not tally["clicks_recorded"]:
            raise CommandError("No click was recorded: check the campaign keys and the server log.")
