"""The S2S postback: a traffic source's URL with macros filled in."""

from __future__ import annotations

from postbacks.transports.http import HttpTransport


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
