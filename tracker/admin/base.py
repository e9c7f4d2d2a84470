"""Mixins of the tracker's admin pages; :class:`ReadOnlyAdminMixin` comes from the shared
log-admin kit (:mod:`tracker.logadmin`)."""

import contextlib
import uuid
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest

from tracker.logadmin import AdminMixinBase, ReadOnlyAdminMixin

__all__ = ["ClickSearchMixin", "ReadOnlyAdminMixin"]


class ClickSearchMixin(AdminMixinBase):
    """Search box for exact click ID, external ID or transaction ID, on indexed columns.

    ``click_prefix`` is the lookup path from the model to its Click ("" on Click itself);
    ``txid_lookup`` the path to the conversion's txid, or "" when the model has none.
    """

    click_prefix = ""
    txid_lookup = ""
    search_fields = ("click_id",)  # shows the search box; the lookups are below
    search_help_text = "Exact click ID, external ID or transaction ID (txid)."

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q(**{f"{self.click_prefix}external_id": term})
        if self.txid_lookup:
            query |= Q(**{self.txid_lookup: term})
        with contextlib.suppress(ValueError):
            query |= Q(**{f"{self.click_prefix}pk": uuid.UUID(term)})
        return queryset.filter(query), False
