"""API tokens in admin: created here (the full token shown once), revoked here; stored
hashed (djangorestframework-api-key's admin, with the user each token acts as)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from tracker.models import APIToken

# The library's own key model (no user) is not used: only APIToken authenticates.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(APIToken)
class APITokenAdmin(APIKeyModelAdmin):
    # The base class's tuples are typed with their own lengths: these differ on purpose.
    list_display = ("prefix", "name", "user", "created", "last_used_at", "expiry_date",  # type: ignore[assignment]
                    "_has_expired", "revoked")  # fmt: skip
    list_filter = ("revoked", "created")  # type: ignore[assignment]
    search_fields = ("name", "prefix", "user__username")  # type: ignore[assignment]
    autocomplete_fields = ("user",)
    fields = ("name", "user", "expiry_date", "revoked", "prefix", "last_used_at")

    def save_model(  # type: ignore[override]  # this admin's rows are APITokens
        self, request: HttpRequest, obj: APIToken, form: Any, change: bool
    ) -> None:
        """On creation, the full token in a message, once (only its hash is stored)."""
        if change:
            obj.save()
            return
        key = APIToken.objects.assign_key(obj)
        obj.save()
        messages.warning(
            request,
            f"API token for {obj.user}: {key} - copy it now, it is not shown again. "
            f"Send it as the header 'Authorization: Token {key}'.",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = (*super().get_readonly_fields(request, obj), "last_used_at")
        if obj is not None:
            fields = (*fields, "user")  # a token keeps its user; make a new one instead
        return fields
