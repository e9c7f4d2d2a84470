"""The postbacks dashboard on the admin index: what is broken, at a glance.

- Per traffic source, postbacks delivered and failed in the last 24 hours and 7 days.
- The success rate (delivered / (delivered + failed)) per hour over the last 24 hours and
  per 6 hours over the last 7 days, as server-rendered SVG bars.
- A banner listing the rules deactivated automatically and not yet acknowledged.

The figures come from one aggregate over the deliveries that finished (delivered or failed)
in the last 7 days, grouped by source, status and hour, read from the partial index
``delivery_finished_idx`` (updated_at, traffic source, status) alone; test sends are left
out. They are cached ``CACHE_SECONDS`` (computed every time while the cache is unreachable);
the banner is not cached (it is a query on the rules).
Windows are whole hours: "24 hours" is the current hour and the 23 before it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

from campaigns.models import TrafficSource
from postbacks.models import Delivery, PostbackRule
from tracker import cache

CACHE_KEY = "postbacks:dashboard:v1"
CACHE_SECONDS = 60
DAY_HOURS = 24
WEEK_HOURS = 7 * 24
WEEK_BUCKET_HOURS = 6
# Success rate colours: green from GOOD, amber from FAIR, red below.
GOOD, FAIR = 0.95, 0.80
CHART_WIDTH, CHART_HEIGHT = 720, 120


@dataclass
class Tally:
    delivered: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.failed

    @property
    def rate(self) -> float | None:
        return self.delivered / self.total if self.total else None

    @property
    def rate_text(self) -> str:
        return "-" if self.rate is None else f"{self.rate * 100:.1f} %"

    @property
    def colour(self) -> str:
        return rate_colour(self.rate)

    def add(self, status: str, count: int) -> None:
        if status == Delivery.Status.DELIVERED:
            self.delivered += count
        else:
            self.failed += count


@dataclass
class SourceRow:
    source_id: int | None
    name: str
    day: Tally = field(default_factory=Tally)
    week: Tally = field(default_factory=Tally)


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


def rate_colour(rate: float | None) -> str:
    if rate is None:
        return "#bdbdbd"
    if rate >= GOOD:
        return "#2e7d32"
    return "#f9a825" if rate >= FAIR else "#c62828"


def hour_floor(moment: datetime) -> datetime:
    """The start of ``moment``'s hour in the current time zone, in UTC (for arithmetic)."""
    local = timezone.localtime(moment).replace(minute=0, second=0, microsecond=0)
    return local.astimezone(UTC)


def finished_per_hour(since: datetime) -> list[tuple[int | None, str, datetime, int]]:
    """(traffic source id, status, hour, count) of deliveries finished since ``since``."""
    rows = (
        Delivery.objects.filter(
            status__in=[Delivery.Status.DELIVERED, Delivery.Status.FAILED],
            is_test=False,
            updated_at__gte=since,
        )
        .annotate(hour=TruncHour("updated_at"))
        .values_list("traffic_source_id", "status", "hour")
        .annotate(count=Count("*"))
        .order_by()
    )
    return list(rows)


def chart(buckets: list[tuple[datetime, Tally]], hours: int, label_format: str) -> dict:
    """SVG bars: one per bucket, its height the success rate (grey and short: no data)."""
    slot = CHART_WIDTH / len(buckets)
    bars = []
    for index, (start, tally) in enumerate(buckets):
        rate = tally.rate
        height = CHART_HEIGHT * rate if rate is not None else 4
        start = timezone.localtime(start)
        end = timezone.localtime(start + timedelta(hours=hours))
        title = (
            f"{start:{label_format}}-{end:%H:%M}: {tally.rate_text} "
            f"({tally.delivered:,} delivered, {tally.failed:,} failed)"
            if tally.total
            else f"{start:{label_format}}-{end:%H:%M}: no postbacks"
        )
        bars.append(
            Bar(
                x=round(index * slot + 1, 1),
                y=round(CHART_HEIGHT - max(height, 1), 1),
                width=round(max(slot - 2, 1), 1),
                height=round(max(height, 1), 1),
                colour=rate_colour(rate),
                title=title,
            )
        )
    ticks = [
        {"x": round(index * slot + 2, 1), "label": f"{timezone.localtime(start):{label_format}}"}
        for index, (start, _) in enumerate(buckets)
        if index % max(len(buckets) // 6, 1) == 0
    ]
    return {
        "bars": bars,
        "ticks": ticks,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "guide_good": round(CHART_HEIGHT * (1 - GOOD), 1),
        "guide_fair": round(CHART_HEIGHT * (1 - FAIR), 1),
    }


def compute(now: datetime | None = None) -> dict:
    """The dashboard's figures (plain data, cacheable)."""
    now = now or timezone.now()
    current = hour_floor(now)
    week_start = current - timedelta(hours=WEEK_HOURS - 1)
    day_start = current - timedelta(hours=DAY_HOURS - 1)
    hourly: dict[datetime, Tally] = defaultdict(Tally)
    sources: dict[int | None, SourceRow] = {}
    day_total, week_total = Tally(), Tally()
    for source_id, status, hour, count in finished_per_hour(week_start):
        row = sources.setdefault(source_id, SourceRow(source_id, ""))
        row.week.add(status, count)
        week_total.add(status, count)
        hourly[hour].add(status, count)
        if hour >= day_start:
            row.day.add(status, count)
            day_total.add(status, count)
    names: dict[int | None, str] = dict(
        TrafficSource.objects.filter(pk__in=[pk for pk in sources if pk]).values_list("pk", "name")
    )
    for row in sources.values():
        row.name = names.get(row.source_id, "(no traffic source)")
    rows = sorted(
        sources.values(), key=lambda r: (-r.day.failed, -r.week.failed, -r.week.total, r.name)
    )
    day_buckets = [
        (start, hourly.get(start, Tally()))
        for start in (day_start + timedelta(hours=h) for h in range(DAY_HOURS))
    ]
    week_buckets = []
    for index in range(WEEK_HOURS // WEEK_BUCKET_HOURS):
        start = week_start + timedelta(hours=index * WEEK_BUCKET_HOURS)
        tally = Tally()
        for h in range(WEEK_BUCKET_HOURS):
            hour_tally = hourly.get(start + timedelta(hours=h))
            if hour_tally:
                tally.delivered += hour_tally.delivered
                tally.failed += hour_tally.failed
        week_buckets.append((start, tally))
    return {
        "computed_at": now,
        "day_start": day_start,
        "week_start": week_start,
        "sources": rows,
        "day_total": day_total,
        "week_total": week_total,
        "day_chart": chart(day_buckets, 1, "%H:%M"),
        "week_chart": chart(week_buckets, WEEK_BUCKET_HOURS, "%a %H:%M"),
    }


def figures(now: datetime | None = None) -> dict:
    """:func:`compute`, cached CACHE_SECONDS (``now`` given: not cached). A cache that
    cannot be reached (Redis down) is skipped with a warning: the page still shows."""
    if now is not None:
        return compute(now)
    return cache.get_or_compute(CACHE_KEY, CACHE_SECONDS, compute)


def clear_cache() -> None:
    cache.delete(CACHE_KEY)


def attention_rules() -> list[PostbackRule]:
    """Rules deactivated automatically and not yet acknowledged, newest first."""
    return list(
        PostbackRule.objects.filter(needs_attention=True)
        .only("name", "disabled_reason", "disabled_at")
        .order_by("-disabled_at", "name")
    )
