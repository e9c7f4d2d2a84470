"""CRM webhook: the event as a JSON POST, signed with Standard Webhooks, its fields chosen
by the rule's field mapping (or the standard payload).

The request (planned when the event is written; signed at sending time)::

    POST <url_template, macros URL-encoded; the host written out>
    Content-Type: application/json
    Idempotency-Key: <delivery ID>
    webhook-id: <delivery ID>                      the same on every attempt and replay
    webhook-timestamp: <Unix seconds>              per attempt, when the rule has a secret
    webhook-signature: v1,<base64> [v1,<base64>]   per attempt; two during a rotation
    <each line of headers_template>

    <the standard payload, or the field mapping's object: compact UTF-8 JSON>

Success is the rule's "success when" (any 2xx by default); 408, 429 and 5xx are retried,
other answers fail (see :meth:`HttpTransport.classify`). ``http_method``, ``body_format``
and ``body_template`` are not used: the method is always POST and the body always JSON.

**Field mapping** (``rule.field_mapping``): one ``key = value`` per line; blank lines and
lines starting with ``#`` are ignored. The value is a macro, text, or both
(``lead.source = tracker {trafficsource.name}``); dotted keys nest objects
(``lead.payout`` -> ``{"lead": {"payout": ...}}``; no arrays). A key may end with a type:

- no type: a JSON string, ``""`` when empty;
- ``:number``: a JSON number written from the exact decimal text (``{payout}`` 2.35 ->
  ``2.35``, never a float approximation), ``null`` when empty or not a number;
- ``:boolean``: ``true`` for 1/true/yes/on, ``false`` for 0/false/no/off (any case),
  ``null`` otherwise;
- ``:nullable``: a JSON string, ``null`` when empty.

So a value is never typed by its looks: an external ID or a ZIP code made of digits stays
a string unless the key says ``:number``. Example::

    event = {event.type}
    lead.id = {conversion.id}
    lead.status = {status}
    lead.payout:number = {payout}
    lead.is_bot:boolean = {is_bot}
    source = tracker

A mapping without field lines (blank, or comments only) sends the **standard payload**
(:func:`standard_payload`), shaped as the Standard Webhooks spec recommends (``type``,
``timestamp``, then the data):
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from postbacks.choices import HttpMethod, SuccessMode
from postbacks.transports.base import PreparedRequest, parse_headers
from postbacks.transports.http import IDEMPOTENCY_HEADER, HttpTransport
from tracker import macros

if TYPE_CHECKING:
    from postbacks.models import PostbackRule

TYPES = ("string", "number", "boolean", "nullable")
KEY_RE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
MAPPING_MAX_FIELDS = 200
KEY_MAX_DEPTH = 8
KEY_MAX_LENGTH = 200
# Set by this transport (or at sending time): a header line cannot replace them.
RESERVED_HEADERS = {"content-type", "webhook-id", "webhook-timestamp", "webhook-signature"}
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_EXTERNALID_WARNING = set(macros.validate("", context="none")[1])


class Number(str):
    """The exact text of a JSON number (e.g. ``2.35``), written unquoted by :func:`dumps`."""


@dataclass(frozen=True)
class MappedField:
    """One line of a field mapping: ``path`` (the dotted key split), ``type`` (one of
    :data:`TYPES`) and the value's ``template``."""

    line: int
    path: tuple[str, ...]
    type: str
    template: str


def parse_mapping(text: str) -> tuple[list[MappedField], list[str]]:
    """The fields of a field mapping and the errors (sentences naming the line): a line
    without ``=``, a malformed or too deep key, an unknown type, a key given twice, a key
    both a value and an object (``a = x`` with ``a.b = y``), more than
    ``MAPPING_MAX_FIELDS`` fields (the rest is not read). Never raises."""
    fields, errors = _parsed(text or "")
    return list(fields), list(errors)


@lru_cache(maxsize=256)
def _parsed(text: str) -> tuple[tuple[MappedField, ...], tuple[str, ...]]:
    """:func:`parse_mapping`, cached: :meth:`CrmWebhook.prepare` runs it for every event."""
    fields: list[MappedField] = []
    errors: list[str] = []
    leaves: dict[tuple[str, ...], int] = {}  # key -> its line
    objects: dict[tuple[str, ...], tuple[int, str]] = {}  # a leaf's parent -> (line, leaf)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(fields) == MAPPING_MAX_FIELDS:
            errors.append(f"Line {number}: at most {MAPPING_MAX_FIELDS} fields.")
            break
        key, sep, template = line.partition("=")
        prefix = f"Line {number}: "
        if not sep:
            errors.append(f"{prefix}write key = value (e.g. lead.payout:number = {{payout}}).")
            continue
        key, _, kind = key.partition(":")
        key, kind = key.strip(), kind.strip() or "string"
        if not KEY_RE.fullmatch(key) or len(key) > KEY_MAX_LENGTH:
            errors.append(
                f"{prefix}{key[:80]!r} is not a key: letters, digits, '_' or '-', dotted for "
                "nested objects (e.g. lead.payout)."
            )
            continue
        if kind not in TYPES:
            errors.append(f"{prefix}unknown type :{kind[:40]}; use :number, :boolean or :nullable.")
            continue
        path = tuple(key.split("."))
        if len(path) > KEY_MAX_DEPTH:
            errors.append(f"{prefix}{key} nests more than {KEY_MAX_DEPTH} levels.")
            continue
        clash = _clash(path, leaves, objects)
        if clash:
            errors.append(f"{prefix}{clash}")
            continue
        leaves[path] = number
        for size in range(1, len(path)):
            objects.setdefault(path[:size], (number, key))
        fields.append(MappedField(number, path, kind, template.strip()))
    return tuple(fields), tuple(errors)


def _clash(
    path: tuple[str, ...],
    leaves: dict[tuple[str, ...], int],
    objects: dict[tuple[str, ...], tuple[int, str]],
) -> str:
    key = ".".join(path)
    if path in leaves:
        return f"{key} is already given on line {leaves[path]}."
    for size in range(1, len(path)):
        if path[:size] in leaves:
            parent = ".".join(path[:size])
            return f"{key} nests under {parent}, a value on line {leaves[path[:size]]}."
    if path in objects:
        line, other = objects[path]
        return f"{key} is an object on line {line} ({other})."
    return ""


def _line_of(message: str) -> int:
    found = re.match(r"Line (\d+)", message)
    return int(found.group(1)) if found else 0


def typed(text: str, kind: str) -> str | Number | bool | None:
    """A rendered value as the JSON value of its ``kind`` (see the module docstring)."""
    if kind == "string":
        return text
    value = text.strip()
    if kind == "nullable":
        return text if value else None
    if kind == "boolean":
        folded = value.lower()
        return True if folded in _TRUE else False if folded in _FALSE else None
    return to_number(value)


def to_number(text: str) -> Number | None:
    """The JSON number for ``text`` (``"2.350"`` -> ``2.35``, ``"1e3"`` -> ``1000``);
    None when it is empty, not a decimal number, or beyond 10^±30."""
    if not _NUMBER_RE.fullmatch(text) or len(text) > 64:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if value and abs(value.adjusted()) > 30:
        return None
    return Number(macros.format_value(value))


def render_mapping(fields: list[MappedField], context: dict[str, str]) -> dict[str, Any]:
    """The JSON object of ``fields`` filled from ``context`` (macros not escaped here:
    :func:`dumps` escapes the JSON)."""
    payload: dict[str, Any] = {}
    for item in fields:
        node = payload
        for part in item.path[:-1]:
            node = node.setdefault(part, {})
        text = macros.render(item.template, context, escape="none")
        node[item.path[-1]] = typed(text, item.type)
    return payload


def standard_payload(context: dict[str, str]) -> dict[str, Any]:
    """The payload of a rule without a field mapping (empty values are ``null``)::

        {"type": "conversion.created" | "conversion.status_changed" | "click.created"
                 | "impression.created",
         "timestamp": "2026-01-02T03:04:05Z",      # when the event happened (UTC)
         "delivery_id": "<uuid>",                  # = webhook-id
         "conversion": {"id": 42, "txid", "type", "status", "previous_status",
                        "rejection_reason", "rejection_reason_label", "payout": 2.35,
                        "currency", "params": {"param1": ...}} | null,
         "click": {"id", "time": 1767322445, "external_id", "ip", "user_agent", "referrer",
                   "country", "country_name", "region", "city", "device", "os", "os_version",
                   "browser", "browser_version", "brand", "model", "language", "isp",
                   "asn": 3320, "carrier", "connection_type", "is_bot": false,
                   "lander_id": 7, "vars": {"var1": ...}, "parameters": {"site": ...}},
         "campaign": {"id": 3, "name"}, "offer": {"id", "name"} | null,
         "traffic_source": {"id", "name"}, "affiliate_network": {"id", "name"} | null}

    An impression's visit is under ``impression`` instead of ``click`` (without ``id``).
    ``params``, ``vars`` and ``parameters`` hold only the values sent.
    """

    def text(name: str) -> str | None:
        return context.get(name) or None

    def number(name: str) -> Number | None:
        return to_number(context.get(name) or "")

    def entity(prefix: str) -> dict[str, Any] | None:
        if not context.get(f"{prefix}.id"):
            return None
        return {"id": number(f"{prefix}.id"), "name": text(f"{prefix}.name")}

    event = context.get("event.type") or "conversion"
    kind = "conversion" if event in ("conversion", "event") else event
    action = "status_changed" if context.get("status.previous") else "created"
    conversion = None
    if context.get("conversion.id"):
        params = {f"param{i}": context.get(f"param{i}") for i in range(1, 21)}
        conversion = {
            "id": number("conversion.id"),
            "txid": text("transaction.id"),
            "type": text("conversion.type"),
            "status": text("status"),
            "previous_status": text("status.previous"),
            "rejection_reason": text("rejection_reason"),
            "rejection_reason_label": text("rejection_reason.label"),
            "payout": number("payout"),
            "currency": text("payout_currency"),
            "params": {name: value for name, value in params.items() if value},
        }
    visit: dict[str, Any] = (
        {} if kind == "impression" else {"id": text("click.id"), "time": number("click.timestamp")}
    )
    visit.update({
        "external_id": text("externalid"), "ip": text("ip"), "user_agent": text("user_agent"),
        "referrer": text("referrer"), "country": text("country"),
        "country_name": text("countryname"), "region": text("region"), "city": text("city"),
        "device": text("device"), "os": text("os"), "os_version": text("osversion"),
        "browser": text("browser"), "browser_version": text("browserversion"),
        "brand": text("brand"), "model": text("model"), "language": text("language"),
        "isp": text("isp"), "asn": number("asn"), "carrier": text("carrier"),
        "connection_type": text("connection.type"), "is_bot": typed(
            context.get("is_bot", ""), "boolean"), "lander_id": number("lander.id"),
        "vars": {f"var{i}": context[f"var{i}"] for i in range(1, 11) if context.get(f"var{i}")},
        "parameters": {
            name.removeprefix(macros.NAMED_VAR_PREFIX): value
            for name, value in context.items()
            if name.startswith(macros.NAMED_VAR_PREFIX) and value
        },
    })  # fmt: skip
    return {
        "type": f"{kind}.{action}",
        "timestamp": text("datetime"),
        "delivery_id": text("delivery.id"),
        "conversion": conversion,
        "impression" if kind == "impression" else "click": visit,
        "campaign": entity("campaign"),
        "offer": entity("offer"),
        "traffic_source": entity("trafficsource"),
        "affiliate_network": entity("affiliatenetwork"),
    }


def dumps(value: Any) -> str:
    """Compact JSON of ``value`` (dicts, strings, :class:`Number`, booleans, None), UTF-8
    text with control characters escaped and lone surrogates replaced by ``?``, so the
    bytes sent are exactly the text signed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, str):
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"Cannot write {type(value).__name__} as JSON")


class CrmWebhook(HttpTransport):
    """CRM webhook: the event as a signed JSON POST (see the module docstring)."""

    kind = "webhook"
    label = "CRM webhook (signed JSON POST)"  # a choice label: changing it needs a migration
    fields = (
        "url_template",
        "field_mapping",
        "headers_template",
        "success_mode",
        "success_pattern",
    )
    signed = True

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        """Errors keyed ``url_template`` (http(s), host written out, macros known),
        ``field_mapping`` (each line parses, keys unique and not clashing, macros known:
        each error names its line), ``headers_template`` (one ``Name: value`` per line,
        not one this transport sets) and ``success_pattern``. Warnings: a body template
        that is not used, an http:// URL, no signing secret, deprecated macros."""
        errors: dict[str, list[str]] = {}
        warnings: list[str] = []

        def check(name: str, template: str, context: str, prefix: str = "") -> None:
            found, warned = macros.validate(template, context=context, known_vars=known_vars)
            errors.setdefault(name, []).extend(prefix + e for e in found)
            warnings.extend(prefix + w for w in warned if w not in _EXTERNALID_WARNING)

        url = rule.url_template or ""
        errors["url_template"] = self._url_errors(url)
        if not errors["url_template"]:
            check("url_template", url, "url")
            if url.lower().startswith("http://"):
                warnings.append(
                    "The URL is http://: the payload (IP, user agent, payout) travels "
                    "unencrypted; prefer https://."
                )
        fields, errors["field_mapping"] = parse_mapping(rule.field_mapping or "")
        for item in fields:
            check("field_mapping", item.template, "none", f"Line {item.line}: ")
        errors["field_mapping"].sort(key=_line_of)
        for number, name, value in parse_headers(rule.headers_template or ""):
            problem = self._header_name_error(name)
            if not problem and name.lower() in RESERVED_HEADERS:
                problem = f"{name} is set by the CRM webhook and cannot be templated."
            if problem:
                errors.setdefault("headers_template", []).append(f"Line {number}: {problem}")
                continue
            if name.lower() == IDEMPOTENCY_HEADER.lower():
                warnings.append(
                    f"Line {number} ({name}): replaces the delivery ID the receiver "
                    "deduplicates on (webhook-id still carries it)."
                )
            check("headers_template", value, "header", f"Line {number} ({name}): ")
        errors["success_pattern"] = self._success_errors(rule, warnings)
        if (rule.body_template or "").strip():
            warnings.append(
                "The body template is not used: a CRM webhook sends the field mapping "
                "(or the standard payload) as JSON."
            )
        if not rule.signing_secret:
            warnings.append(
                "Not signed: generate a signing secret so the CRM can check each request "
                "comes from this tracker (and call the status sync back)."
            )
        errors = {name: messages for name, messages in errors.items() if messages}
        if errors:
            raise ValidationError(errors)
        return list(dict.fromkeys(warnings))

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """The POST for one event: the mapping's JSON object, or :func:`standard_payload`
        when the mapping has no field line (blank, or comments only); mapping or header
        lines refused by :meth:`validate` are skipped. Never raises for a template."""
        fields, _errors = parse_mapping(rule.field_mapping or "")
        payload = render_mapping(fields, context) if fields else standard_payload(context)
        headers = {"Content-Type": "application/json"}
        delivery_id = context.get("delivery.id", "")
        if delivery_id:
            headers[IDEMPOTENCY_HEADER] = delivery_id
            headers["webhook-id"] = delivery_id
        for _number, name, value in parse_headers(rule.headers_template or ""):
            if self._header_name_error(name) or name.lower() in RESERVED_HEADERS:
                continue  # refused by validate(); never sent
            for existing in [key for key in headers if key.lower() == name.lower()]:
                del headers[existing]
            headers[name] = macros.render(value, context, escape="header").strip()
        return PreparedRequest(
            HttpMethod.POST,
            macros.render(rule.url_template or "", context, escape="url"),
            dumps(payload),
            headers,
            rule.success_mode or SuccessMode.STATUS,
            rule.success_pattern or "",
        )
