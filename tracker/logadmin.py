"""The admin kit for big log tables, shared by the tracker's and the postbacks' admin.

The postback log (``postbacks.admin.log``) and the inbound log (``tracker.admin.inbound``)
page millions of rows; both build on these pieces, and neither admin imports the other.

- :class:`LogPaginator` reads one row more than a page to know whether a next page exists,
  and estimates the total from ``pg_class.reltuples`` (no filter) or the planner's row
  estimate (filters) on PostgreSQL; deep pages read their ids on an index first.
- :class:`LogChangeList` shows "about N" or "more than N" instead of a count.
- :class:`HttpStatusFilter`: the HTTP status class of a row, one indexed probe per class.
- :func:`csv_cell`, :func:`compact_time`, :func:`status_badge`, :func:`shorten`: cells.
- :class:`ReadOnlyAdminMixin`: a log is viewed and filtered, never edited by hand.

Imports Django only: nothing of the project's models or screens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import EmptyPage, InvalidPage, Page, PageNotAnInteger, Paginator
from django.db import DatabaseError, connections, models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.html import format_html

BADGE_COLOURS = {"delivered": "#2e7d32", "failed": "#c62828", "sending": "#1565c0"}
# The query parameter of the keyset cursor of the "Previous" and "Next" links.
CURSOR_VAR = "c"
# CSV export: at most this many rows per file.
EXPORT_MAX_ROWS = 1_000_000


def status_badge(value: str, label: str) -> str:
    """A coloured status label: green delivered, red failed, blue sending, grey otherwise."""
    return format_html('<b style="color:{}">{}</b>', BADGE_COLOURS.get(value, "#8a6d00"), label)


def shorten(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, with an ellipsis when it was longer."""
    return text if len(text) <= chars else text[: chars - 1] + "…"


# --- Pagination without COUNT(*) ---------------------------------------------------------------


class LogPage(Page):
    """A page that knows whether another follows without knowing the total."""

    def __init__(self, object_list, number, paginator, has_next: bool) -> None:
        super().__init__(object_list, number, paginator)
        self._has_next = has_next

    def has_next(self) -> bool:
        return self._has_next

    def next_page_number(self) -> int:
        if not self._has_next:
            raise EmptyPage(self.paginator.error_messages["no_results"])
        return self.number + 1

    def start_index(self) -> int:
        return (self.number - 1) * self.paginator.per_page + (1 if self.object_list else 0)

    def end_index(self) -> int:
        return (self.number - 1) * self.paginator.per_page + len(self.object_list)


class LogPaginator(Paginator):
    """Pages of a big table without COUNT(*).

    A page is read with one row more than ``per_page``: that row says whether a next page
    exists. ``count`` is exact once the last page is known; otherwise the larger of what is
    known (the rows up to this page, plus one) and, on PostgreSQL, an estimate: the table's
    ``pg_class.reltuples`` when nothing filters the list, the planner's row estimate when
    something does (``estimated`` is then True; ``exact`` says when ``count`` is exact).

    From ``deferred_offset`` on, a page reads its ids first (on the ordering index, an
    index-only scan) and then its rows by id, so OFFSET skips index entries, not rows.
    ``rows`` shapes the queryset rows are read with (columns, annotations).
    """

    deferred_offset = 1000
    object_list: QuerySet[Any]  # a queryset, never a list

    def __init__(
        self,
        object_list: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
        error_messages=None,
        *,
        rows: Callable[[QuerySet], QuerySet] | None = None,
        cursor: str | None = None,
    ) -> None:
        super().__init__(object_list, per_page, 0, allow_empty_first_page, error_messages)
        self.rows = rows or (lambda queryset: queryset)
        self.cursor = cursor
        self.current: LogPage | None = None
        self.exact = False
        self.estimated = False

    def validate_number(self, number) -> int:
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError) as exc:
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from exc
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number) -> LogPage:
        number = self.validate_number(number)
        if self.current is not None and self.current.number == number:
            return self.current
        rows = self._read_after_cursor(number)
        if rows is None:
            offset = (number - 1) * self.per_page
            rows = self._read(offset, self.per_page + 1)
        if not rows and number > 1:
            raise EmptyPage(self.error_messages["no_results"])
        self.current = LogPage(rows[: self.per_page], number, self, len(rows) > self.per_page)
        for name in ("count", "num_pages"):
            self.__dict__.pop(name, None)
        return self.current

    def keyset(self) -> list[tuple[models.Field, bool]] | None:
        """The list's order as (field, descending) pairs when keyset paging can follow it:
        plain columns, all in the same direction (the default orders are)."""
        opts = self.object_list.model._meta
        keys: list[tuple[models.Field, bool]] = []
        for item in self.object_list.query.order_by:
            if not isinstance(item, str):
                return None
            name = item.lstrip("-")
            try:
                field = opts.pk if name == "pk" else opts.get_field(name)
            except FieldDoesNotExist:
                return None
            if not field.concrete or field.is_relation:
                return None
            if field not in [key for key, _ in keys]:  # the admin repeats its ordering
                keys.append((field, item.startswith("-")))
            if field.primary_key:
                break  # a total order: what follows changes nothing
        if not keys or len({descending for _, descending in keys}) != 1:
            return None
        return keys

    def cursor_for(self, page: LogPage, forward: bool) -> str | None:
        """A cursor for the page after ``page`` (``forward``) or before it: the order keys
        of its last (first) row, e.g. ``n1001~2026-11-23T10:00:00+00:00~123``."""
        keys = self.keyset()
        if not keys or not page.object_list:
            return None
        row = page.object_list[-1 if forward else 0]
        values = [field.value_to_string(row) for field, _ in keys]
        if any(not value or "~" in value for value in values):
            return None
        head = f"{'n' if forward else 'p'}{page.number + (1 if forward else -1)}"
        return "~".join([head, *values])

    def _read_after_cursor(self, number: int) -> list | None:
        """Page ``number`` read from the cursor's row on (keyset: as cheap as a first
        page, whatever the depth and the filters); None when there is no cursor for it."""
        keys = self.keyset()
        head, *texts = (self.cursor or "").split("~")
        if not keys or len(texts) != len(keys) or head[:1] not in ("n", "p"):
            return None
        if head[1:] != str(number):
            return None
        try:
            values = [field.to_python(text) for (field, _), text in zip(keys, texts, strict=True)]
        except ValidationError:
            return None
        forward = head[0] == "n"
        op = "lt" if keys[0][1] == forward else "gt"
        beyond = Q()
        for index, (field, _) in enumerate(keys):
            equal = {keys[i][0].name: values[i] for i in range(index)}
            beyond |= Q(**equal, **{f"{field.name}__{op}": values[index]})
        # The first key's bound alone is what the index range scan uses.
        bound = Q(**{f"{keys[0][0].name}__{op}e": values[0]})
        queryset = self.object_list.filter(bound, beyond)
        if forward:
            return list(self.rows(queryset)[: self.per_page + 1])
        rows = list(self.rows(queryset.reverse())[: self.per_page])
        rows.reverse()
        # A page before another one: a next page exists (the one the cursor came from).
        return [*rows, None] if len(rows) == self.per_page else None

    def _read(self, offset: int, limit: int) -> list:
        queryset = self.object_list
        if offset < self.deferred_offset:
            return list(self.rows(queryset)[offset : offset + limit])
        ids = list(queryset.values_list("pk", flat=True)[offset : offset + limit])
        if not ids:
            return []
        return list(self.rows(queryset.filter(pk__in=ids)))

    @cached_property
    def count(self) -> int:
        page = self.current or self.page(1)
        known = (page.number - 1) * self.per_page + len(page.object_list)
        self.exact = not page.has_next()
        if self.exact:
            return known
        estimate = self.estimate()
        self.estimated = estimate is not None and estimate > known
        return estimate if estimate is not None and self.estimated else known + 1

    def estimate(self) -> int | None:
        """The planner's idea of the number of rows (PostgreSQL), or None."""
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        try:
            if not queryset.query.where:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [connection.ops.quote_name(queryset.model._meta.db_table)],
                    )
                    row = cursor.fetchone()
                return row[0] if row and row[0] >= 0 else None
            plan = queryset.order_by().values("pk").explain(format="json")
            return int(json.loads(plan)[0]["Plan"]["Plan Rows"])
        except (DatabaseError, LookupError, TypeError, ValueError):
            return None

    def get_elided_page_range(self, number=1, *, on_each_side=2, on_ends=1) -> Iterator:
        """The first page, the pages around ``number`` and the next one if it exists."""
        page = self.page(number)
        last = page.number + (1 if page.has_next() else 0)
        if last <= on_ends + on_each_side * 2 + 2:
            yield from range(1, last + 1)
            return
        start = max(page.number - on_each_side, 1)
        yield from range(1, min(on_ends, start - 1) + 1)
        if start > on_ends + 1:
            yield self.ELLIPSIS
        yield from range(start, last + 1)


class LogChangeList(ChangeList):
    """A changelist on :class:`LogPaginator`: no count; "Previous" and "Next" carry a
    keyset cursor (``c``), page numbers an offset."""

    def __init__(self, request, *args, **kwargs) -> None:
        self.cursor = request.GET.get(CURSOR_VAR) or None
        super().__init__(request, *args, **kwargs)

    def get_filters_params(self, params=None):
        # The cursor is no filter, nor part of the links this list builds.
        self.params.pop(CURSOR_VAR, None)
        self.filter_params.pop(CURSOR_VAR, None)
        return super().get_filters_params(params)

    def get_results(self, request) -> None:
        # The log admins' get_paginator gives a LogPaginator for their own rows.
        paginator = cast(
            LogPaginator,
            self.model_admin.get_paginator(request, self.queryset, self.list_per_page),
        )
        paginator.cursor = self.cursor
        try:
            page = paginator.page(self.page_num)
        except InvalidPage as exc:
            raise IncorrectLookupParameters from exc
        self.paginator = paginator
        self.page = page
        self.result_list = page.object_list
        self.result_count = paginator.count
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = False
        self.multi_page = page.has_next() or page.has_previous()

    @property
    def count_text(self) -> str:
        """How many rows the list has, as known: "12", "about 2,016,061", "more than 100"."""
        number = number_format(self.result_count, force_grouping=True)
        if self.paginator.exact:
            return number
        if self.paginator.estimated:
            return f"about {number}"
        return f"more than {number_format(self.result_count - 1, force_grouping=True)}"

    @property
    def previous_url(self) -> str:
        if self.page.number == 2:
            return self.get_query_string(remove=["p"])
        cursor = self.paginator.cursor_for(self.page, forward=False)
        return self.get_query_string({"p": self.page.number - 1, CURSOR_VAR: cursor})

    @property
    def next_url(self) -> str:
        cursor = self.paginator.cursor_for(self.page, forward=True)
        return self.get_query_string({"p": self.page.number + 1, CURSOR_VAR: cursor})

    @property
    def page_range(self) -> list:
        return list(self.paginator.get_elided_page_range(self.page.number))

    @property
    def short_count(self) -> str:
        """The count in a phrase: "12", "~2,016,061", "100+"."""
        number = number_format(self.result_count, force_grouping=True)
        if self.paginator.exact:
            return number
        if self.paginator.estimated:
            return f"~{number}"
        return f"{number_format(self.result_count - 1, force_grouping=True)}+"

    @property
    def export_text(self) -> str:
        if not self.paginator.exact and self.result_count > EXPORT_MAX_ROWS:
            return f"Export the first {number_format(EXPORT_MAX_ROWS, force_grouping=True)} rows"
        return f"Export these {self.short_count} rows"


class ExportChangeList(LogChangeList):
    """The filtered, searched and ordered queryset of a changelist, without reading a page."""

    def get_results(self, request) -> None:
        self.result_list = []


# --- Filters -------------------------------------------------------------------------------------


class HttpStatusFilter(admin.SimpleListFilter):
    """HTTP status class; only the classes present are offered (one indexed probe each)."""

    title = "HTTP status"
    parameter_name = "http"
    field = "status_code"
    classes = [
        ("2xx", "2xx success"),
        ("3xx", "3xx redirect"),
        ("4xx", "4xx client error"),
        ("5xx", "5xx server error"),
        ("none", "No response (timeout, connection error)"),
    ]

    def lookups(self, request, model_admin):
        table = model_admin.model._default_manager
        return [
            (value, label)
            for value, label in self.classes
            if value == self.value() or self.filter(table.all(), value).exists()
        ]

    def filter(self, queryset: QuerySet, value: str | None) -> QuerySet:
        if value == "none":
            return queryset.filter(**{f"{self.field}__isnull": True})
        if value and value[0] in "2345":
            low = int(value[0]) * 100
            return queryset.filter(**{f"{self.field}__gte": low, f"{self.field}__lt": low + 100})
        return queryset

    def queryset(self, request, queryset):
        return self.filter(queryset, self.value())


class LastHttpStatusFilter(HttpStatusFilter):
    title = "last HTTP status"
    field = "last_status_code"


# --- CSV -----------------------------------------------------------------------------------------


FORMULA_STARTS = frozenset("=+-@\t\r")


def csv_cell(value) -> object:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with '."""
    if value.__class__ is str and value and value[0] in FORMULA_STARTS:
        return "'" + value
    return value


# --- Columns -----------------------------------------------------------------------------------


def compact_time(value) -> str:
    """``MM-DD HH:MM:SS`` in the current time zone (list columns must fit 1400 px); the
    year only when it is not this one."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    fmt = "%m-%d %H:%M:%S" if local.year == timezone.localtime().year else "%Y-%m-%d %H:%M"
    return format_html('<span title="{}">{}</span>', local.isoformat(), local.strftime(fmt))


if TYPE_CHECKING:
    # The admin mixins below are mixed into ModelAdmin: typed as one, they may use its API.
    AdminMixinBase = admin.ModelAdmin[Any]
else:
    AdminMixinBase = object


class ReadOnlyAdminMixin(AdminMixinBase):
    """Log tables: viewable and filterable, never edited by hand."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
