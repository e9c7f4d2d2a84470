"""Mixins shared by the tracker's and the postback log's admin pages."""

import contextlib
import uuid

from django.db.models import Q


class ReadOnlyAdminMixin:
    """Log tables: viewable and filterable, never edited by hand."""

    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ClickSearchMixin:
    """Search box for exact click ID, external ID or transaction ID, on indexed columns.

    ``click_prefix`` is the lookup path from the model to its Click ("" on Click itself);
    ``txid_lookup`` the path to the conversion's txid, or "" when the model has none.
    """

    click_prefix = ""
    txid_lookup = ""
    search_fields = ("click_id",)  # shows the search box; the lookups are below
    search_help_text = "Exact click ID, external ID or transaction ID (txid)."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q(**{f"{self.click_prefix}external_id": term})
        if self.txid_lookup:
            query |= Q(**{self.txid_lookup: term})
        with contextlib.suppress(ValueError):
            query |= Q(**{f"{self.click_prefix}pk": uuid.UUID(term)})
        return queryset.filter(query), False
