"""The S2S postback: a traffic source's URL with macros filled in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postbacks.choices import HttpMethod
from postbacks.transports.base import PreparedRequest
from postbacks.transports.http import IDEMPOTENCY_HEADER, HttpTransport
from tracker import macros

if TYPE_CHECKING:
    from postbacks.models import PostbackRule


class S2SPostback(HttpTransport):
    """Server-to-server postback: the traffic source's URL with macros filled in, as a GET,
    or a POST with a form or JSON body; templated headers either way."""

    kind = "s2s"
    label = "S2S postback (HTTP GET or POST)"  # a choice label: changing it needs a migration
    fields = (
        "http_method", "url_template", "body_format", "body_template", "headers_template",
        "success_mode", "success_pattern",
    )  # fmt: skip
    signed = True

    def prepare(self, rule: PostbackRule | str, context: dict[str, str]) -> PreparedRequest:
        """See :meth:`HttpTransport.prepare`; the older call ``prepare(url_template,
        context)`` still renders a plain GET."""
        if not isinstance(rule, str):
            return super().prepare(rule, context)
        headers = {IDEMPOTENCY_HEADER: context["delivery.id"]} if context.get("delivery.id") else {}
        return PreparedRequest(
            HttpMethod.GET, macros.render(rule, context, escape="url"), headers=headers
        )
