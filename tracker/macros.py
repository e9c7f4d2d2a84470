"""Macro (token) catalogue, context and renderer for postback templates and offer URLs.

It lives in the tracker, below the postbacks app: recording a click fills the offer URL with
it, the visit views fill lander URLs, and the Google Ads upload file formats payouts with it.
It imports nothing of the project at runtime (the tracker's models are named for types only).

Names follow ClickFlare's token table (``{externalid}``, ``{click.id}``, ``{transaction.id}``,
``{campaign.id}``...) plus the spellings other trackers and networks use for the same data
(``{external_id}`` Keitaro/Binom, ``{clickid}`` Voluum/Binom, ``{subid}`` Keitaro, ``{txid}``,
``{revenue}`` Keitaro, ``{sum}`` Affise, ``{event_name}`` Everflow...).

Grammar::

    macro    = "{" name *( ":" modifier ) [ "|" default ] "}"
    name     = letter *( letter / digit / "_" / "." / "-" )   ; externalid, click.id
             / "var:" 1*( letter / digit / "_" / "." / "-" )  ; var:site: a prefix
    modifier = "raw" / "md5" / "sha1" / "sha256" / mapping
    mapping  = pair *( "," pair )
    pair     = key "=" [ value ] / "*=" [ value ]
    default  = any text without "{" and "}"

Modifiers cannot contain ``:``, ``|``, ``{`` or ``}``; mapping keys and values neither ``,``
nor ``=``; spaces around modifiers and pairs are ignored. A value goes through the
modifiers left to right:

- a mapping replaces a listed value (exact, case-sensitive match); ``*=x`` replaces every
  other value, the empty one included; without ``*`` unlisted values pass unchanged;
- a hash gives the lower-case hex digest of the value's exact UTF-8 bytes (no trimming, no
  lower-casing: normalise upstream if the receiver wants that); an empty value stays empty;
- then, if the result is empty, the default is used;
- finally the text is escaped for where it lands (``render(escape=...)``) unless ``:raw``.

Examples: ``{payout|0}``, ``{externalid:raw}``, ``{ip:md5}``, ``{var:site}``,
``{status:approved=1,rejected=0,*=2}``, ``{status:approved=1,rejected=0|0}``,
``{param1:sha256:raw}``.

Unknown macros, and known ones with a malformed modifier, are left verbatim so the mistake
shows in the postback log instead of vanishing; :func:`validate` reports both before saving.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from django.core.exceptions import ValidationError

if TYPE_CHECKING:
    from tracker.models import Click, Conversion, Impression

NAMED_VAR_PREFIX = "var:"
HASHES = ("md5", "sha1", "sha256")
MACRO_RE = re.compile(
    r"\{(?P<name>var:[A-Za-z0-9_.\-]*|(?!var:)[A-Za-z][A-Za-z0-9_.\-]*)"
    r"(?P<modifiers>(?::[^:|{}]*)*)(?:\|(?P<default>[^{}]*))?\}"
)
_DOUBLED_RE = re.compile(r"\{\{\s*([A-Za-z][^{}]*?)\s*\}\}")


@dataclass(frozen=True)
class Macro:
    """One catalogue entry. ``recorded=False``: not recorded yet, renders empty.
    ``deprecated``: advice for a spelling kept only for old templates."""

    name: str
    group: str
    description: str
    aliases: tuple[str, ...] = ()
    recorded: bool = True
    deprecated: str = ""


def _not_recorded(group: str, *names: tuple[str, str]) -> list[Macro]:
    return [Macro(name, group, f"{text} Not recorded yet.", recorded=False) for name, text in names]


# fmt: off
_TS, _CLICK, _VISITOR, _CONV, _ELEMENTS, _EVENT = (
    "Traffic source", "Click", "Visitor", "Conversion", "Campaign", "Event",
)
_MACROS: list[Macro] = [
    Macro("externalid", _TS, "The traffic source's click ID from the campaign URL.",
          ("external_id", "externalId", "external_transaction_id")),
    *(Macro(f"var{i}", _TS, f"Custom variable {i} from the campaign URL.") for i in range(1, 11)),
    Macro("trafficsource.id", _TS, "Traffic source ID."),
    Macro("trafficsource.name", _TS, "Traffic source name."),
    Macro("trafficsource.externalid_param", _TS, "The campaign URL parameter the external ID "
          "comes in, e.g. fbclid, gclid, ttclid."),
    Macro("click.id", _CLICK, "Our click ID (UUID), as put in offer URLs.",
          ("click_id", "cf_click_id", "clickid", "subid")),
    Macro("click.timestamp", _CLICK, "Unix time of the click, seconds."),
    Macro("ip", _CLICK, "Visitor IP address."),
    Macro("user_agent", _CLICK, "Visitor user agent."),
    Macro("referrer", _CLICK, "Referring page URL.", ("referer",)),
    Macro("referrerdomain", _CLICK, "Host name of the referring page, e.g. news.example."),
    Macro("country", _VISITOR, "Country code (ISO 3166-1 alpha-2), e.g. US.",
          ("country_code", "geo")),
    Macro("countryname", _VISITOR, "Country name, e.g. United States.", ("country_name",)),
    Macro("region", _VISITOR, "Region (state, province), e.g. England. Needs a MaxMind City "
          "database."),
    Macro("city", _VISITOR, "City. Needs a MaxMind City database."),
    Macro("os", _VISITOR, "Operating system, e.g. iOS, Android, Windows.", ("os_name",)),
    Macro("osversion", _VISITOR, "Operating system version, e.g. 17.1.2.", ("os_version",)),
    Macro("browser", _VISITOR, "Browser or in-app browser, e.g. Chrome Mobile, Facebook.",
          ("browser_name",)),
    Macro("browserversion", _VISITOR, "Browser version, e.g. 120.0.0.0.", ("browser_version",)),
    Macro("device", _VISITOR, "Device type: desktop, mobile, tablet, tv, console, wearable, "
          "bot or other.", ("device_type",)),
    Macro("brand", _VISITOR, "Device brand, e.g. Samsung.", ("device_brand",)),
    Macro("model", _VISITOR, "Device model, e.g. SM-S911B.", ("device_model",)),
    Macro("language", _VISITOR, "Preferred browser language (Accept-Language), e.g. en-US."),
    Macro("isp", _VISITOR, "Internet service provider (the network's AS name without a "
          "MaxMind ISP database)."),
    Macro("asn", _VISITOR, "Autonomous system number. Needs a MaxMind ASN or ISP database."),
    Macro("carrier", _VISITOR, "Mobile carrier. Needs a MaxMind ISP database."),
    Macro("connection.type", _VISITOR, "Connection type, e.g. Cable/DSL, Cellular. Needs a "
          "MaxMind Connection-Type database.", ("connection_type",)),
    Macro("is_bot", _VISITOR, "1 when the user agent is a bot, crawler or HTTP library, "
          "else 0."),
    Macro("transaction.id", _CONV, "Transaction ID sent by the affiliate network (txid).",
          ("txid", "transaction_id")),
    Macro("payout", _CONV, "Conversion payout, e.g. 2.35.", ("revenue", "sum")),
    Macro("payout_currency", _CONV, "Payout currency, ISO 4217, e.g. USD.", ("currency",)),
    Macro("conversion.id", _CONV, "Our conversion ID."),
    Macro("conversion.type", _CONV, "Conversion type (ct), e.g. lead, sale.",
          ("ct", "event_name")),
    Macro("status", _CONV, "Conversion status: approved, pending, rejected or refunded."),
    Macro("status.previous", _CONV, "Status before a status change; empty otherwise."),
    Macro("rejection_reason", _CONV, "Rejection reason code of a rejected conversion."),
    Macro("rejection_reason.label", _CONV, "Label of that rejection reason, e.g. Fraud."),
    *_not_recorded(_CONV, ("conversion.cost", "Conversion cost (CPA or RevShare model).")),
    *(Macro(f"param{i}", _CONV, f"Conversion parameter {i} sent by the network.",
            (f"conversionParameter{i}",)) for i in range(1, 21)),
    Macro("campaign.id", _ELEMENTS, "Campaign ID."),
    Macro("campaign.name", _ELEMENTS, "Campaign name."),
    Macro("offer.id", _ELEMENTS, "Offer ID."),
    Macro("offer.name", _ELEMENTS, "Offer name."),
    Macro("lander.id", _ELEMENTS, "Lander ID; empty when the click went straight to the offer."),
    Macro("affiliatenetwork.id", _ELEMENTS, "Affiliate network ID."),
    Macro("affiliatenetwork.name", _ELEMENTS, "Affiliate network name."),
    Macro("event.type", _EVENT, "What fired: impression, click, conversion or event."),
    Macro("timestamp", _EVENT, "Unix time of the event, seconds."),
    Macro("datetime", _EVENT, "Time of the event, ISO 8601 UTC, e.g. 2026-01-02T03:04:05Z."),
    Macro("delivery.id", _EVENT, "This postback's delivery ID (UUID), the same on every attempt "
          "and replay: receivers deduplicate on it (also the Idempotency-Key header)."),
]
# fmt: on
# Visitor macro -> the Visit field it reads (see tracker.enrichment).
VISIT_FIELDS: dict[str, str] = {
    "country": "country_code",
    "countryname": "country_name",
    "region": "region",
    "city": "city",
    "os": "os",
    "osversion": "os_version",
    "browser": "browser",
    "browserversion": "browser_version",
    "device": "device_type",
    "brand": "device_brand",
    "model": "device_model",
    "language": "language",
    "isp": "isp",
    "carrier": "carrier",
    "connection.type": "connection_type",
}
_NAMED_VAR = Macro("var:<name>", _TS, "Custom variable by its parameter name, e.g. {var:site}.")
# Deprecated spelling -> canonical name (ClickFlare replaced {campaign.cpa} by {conversion.cost}).
DEPRECATED: dict[str, str] = {"campaign.cpa": "conversion.cost"}
# Every accepted spelling (canonical, alias, deprecated) -> its entry; var:<name> is a prefix.
CATALOGUE: dict[str, Macro] = {
    spelling: macro for macro in _MACROS for spelling in (macro.name, *macro.aliases)
}
CATALOGUE.update({old: CATALOGUE[new] for old, new in DEPRECATED.items()})
_SPELLINGS = {m.name: [s for s, macro in CATALOGUE.items() if macro is m] for m in _MACROS}
_DEPRECATED_MACROS = [
    Macro(old, CATALOGUE[new].group, f"Old spelling of {{{new}}}.",
          recorded=CATALOGUE[new].recorded,
          deprecated=f"Use {{{new}}}.")
    for old, new in DEPRECATED.items()
]  # fmt: skip


def catalogue() -> list[dict[str, Any]]:
    """Every canonical macro for admin and API, in catalogue order: ``{"name", "group",
    "description", "aliases", "recorded", "deprecated"}`` (``deprecated`` is "" or advice)."""
    macros = (*_MACROS, _NAMED_VAR, *_DEPRECATED_MACROS)
    return [{**asdict(macro), "aliases": list(macro.aliases)} for macro in macros]


def help_text() -> str:
    """Plain-text summary of macros and modifiers (no HTML: the admin escapes it)."""

    def spell(names: list[str]) -> str:
        shown = []
        for name in names:
            numbered = re.fullmatch(r"(var|param|conversionParameter)(\d+)", name)
            if numbered is None:
                shown.append(f"{{{name}}}")
            elif numbered.group(2) == "1":
                stem = numbered.group(1)
                shown.append(f"{{{stem}1}}..{{{stem}{10 if stem == 'var' else 20}}}")
        return ", ".join(shown)

    groups: dict[str, list[str]] = {}
    for macro in _MACROS:
        if macro.recorded:
            groups.setdefault(macro.group, []).append(macro.name)
    groups[_TS].append(_NAMED_VAR.name)
    parts = [f"{group}: {spell(names)}." for group, names in groups.items()]
    unrecorded = spell([m.name for m in _MACROS if not m.recorded])
    parts.append(f"Not recorded yet (render empty): {unrecorded}.")
    parts.append(f"Also accepted: {spell([a for m in _MACROS for a in m.aliases])}.")
    parts.append(
        "Modifiers: {name:raw} (not escaped), {name:md5}, {name:sha1}, {name:sha256} (hex digest "
        "of the exact value), {status:approved=1,rejected=0,*=2} (value mapping), {payout|0} "
        "(default when empty); they chain, e.g. {status:approved=1,rejected=0|0}."
    )
    return "Macros. " + " ".join(parts)


def format_value(value: object) -> str:
    """Text for one macro value: Decimals without trailing zeros, None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    return str(value)


def find_macros(template: str) -> list[str]:
    """Macro names in ``template``, in order, without modifiers or default, e.g.
    ``['externalid', 'var:site', 'status']``."""
    return [match.group("name") for match in MACRO_RE.finditer(template)]


def _is_named_var(name: str) -> bool:
    return name.startswith(NAMED_VAR_PREFIX) and len(name) > len(NAMED_VAR_PREFIX)


def unknown_macros(template: str) -> list[str]:
    """Names in ``template`` that are neither catalogue spellings nor ``var:<name>``."""
    return [n for n in find_macros(template) if n not in CATALOGUE and not _is_named_var(n)]


def _loaded(obj: object, field: str) -> Any:
    """``obj.<field>`` when reading it costs no query: a Django relation only when already
    loaded (select_related, prefetch or assigned), anything else by plain attribute."""
    if obj is None:
        return None
    meta = getattr(obj, "_meta", None)
    if meta is not None and not meta.get_field(field).is_cached(obj):
        return None
    return getattr(obj, field, None)


def build_context(
    click: Click | None = None,
    conversion: Conversion | None = None,
    *,
    impression: Impression | None = None,
    event_type: str = "",
    previous_status: str = "",
) -> dict[str, str]:
    """Every macro's value for an event as text, not escaped, under every accepted spelling
    plus ``var:<name>`` for the traffic source's named parameters.

    The visit is ``click``, else ``impression`` (no offer), else ``conversion.click``.
    ``previous_status`` fills ``{status.previous}`` for a status change; ``event.type``
    defaults to event (a status change), conversion, impression or click. Reads the visit's
    offer and traffic source with its parameters (both loaded on the click and ``/cv``
    paths); the campaign and network names only when already loaded, never by a query
    (``/cv`` does not load the campaign: ``{campaign.name}`` is then empty). Missing
    optional attributes (fakes, fields not added yet) give empty values.
    ``delivery.id`` is left empty: the planner sets it per delivery.
    """
    visit = click if click is not None else impression
    if visit is None and conversion is not None:
        visit = getattr(conversion, "click", None)
    if not event_type and conversion is not None:
        event_type = "event" if previous_status else "conversion"
    elif not event_type:
        event_type = "impression" if click is None and impression is not None else "click"
    values: dict[str, object] = {"event.type": event_type, "status.previous": previous_status}
    named: dict[str, str] = {}
    when = None
    if visit is not None:
        campaign = _loaded(visit, "campaign")
        offer = getattr(visit, "offer", None)
        network = _loaded(offer, "affiliate_network")
        source = getattr(visit, "traffic_source", None)
        parameters = getattr(source, "parameters", None)
        for param in parameters.all() if parameters is not None else ():
            value = getattr(visit, f"var{param.slot}", "")
            named[NAMED_VAR_PREFIX + param.name] = format_value(value)
        values.update({
            "externalid": getattr(visit, "external_id", ""),
            "click.id": None if visit is impression else visit.pk,
            "ip": getattr(visit, "ip", ""),
            "user_agent": getattr(visit, "user_agent", ""),
            "referrer": getattr(visit, "referrer", ""),
            "referrerdomain": getattr(visit, "referrer_domain", "")
            or _host(getattr(visit, "referrer", "")),
            **{name: getattr(visit, field, "") for name, field in VISIT_FIELDS.items()},
            "asn": getattr(visit, "asn", None),
            "is_bot": _flag(getattr(visit, "is_bot", None)),
            "lander.id": getattr(visit, "lander_id", None),
            "campaign.id": getattr(visit, "campaign_id", None),
            "campaign.name": getattr(campaign, "name", None),
            "offer.id": getattr(visit, "offer_id", None),
            "offer.name": getattr(offer, "name", None),
            "affiliatenetwork.id": getattr(offer, "affiliate_network_id", None),
            "affiliatenetwork.name": getattr(network, "name", None),
            "trafficsource.id": getattr(visit, "traffic_source_id", None),
            "trafficsource.name": getattr(source, "name", None),
            "trafficsource.externalid_param": getattr(source, "external_id_param", None),
        })  # fmt: skip
        for i in range(1, 11):
            values[f"var{i}"] = getattr(visit, f"var{i}", "")
        when = getattr(visit, "created_at", None)
        if when is not None and visit is not impression:
            values["click.timestamp"] = int(when.timestamp())
    if conversion is not None:
        values.update({
            "transaction.id": conversion.txid,
            "payout": conversion.payout,
            "payout_currency": conversion.currency,
            "conversion.id": conversion.pk,
            "conversion.type": conversion.conversion_type,
            "status": conversion.status,
            "rejection_reason": conversion.rejection_reason,
            "rejection_reason.label": getattr(conversion, "rejection_reason_label", ""),
        })  # fmt: skip
        params = getattr(conversion, "params", None) or {}
        for i in range(1, 21):
            values[f"param{i}"] = params.get(f"param{i}")
        changed = getattr(conversion, "status_changed_at", None) if previous_status else None
        when = changed or conversion.created_at
    if when is not None:
        values["timestamp"] = int(when.timestamp())
        values["datetime"] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    context = dict.fromkeys(CATALOGUE, "")
    for name, value in values.items():
        if value is not None and value != "":
            text = format_value(value)
            for spelling in _SPELLINGS[name]:
                context[spelling] = text
    context.update(named)
    return context


def _flag(value: object) -> str | None:
    return None if value is None else "1" if value else "0"


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _header_safe(value: str) -> str:
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "", value)


ESCAPES: dict[str, Callable[[str], str]] = {
    "url": lambda value: quote(value, safe=""),  # RFC 3986: URLs and form bodies
    "json": lambda value: json.dumps(value, ensure_ascii=False)[1:-1],  # inside "..."
    "header": _header_safe,  # control characters (CR, LF, NUL...) removed, tab kept
    "none": lambda value: value,
}


@dataclass(frozen=True)
class _Modifiers:
    steps: tuple[tuple[str, Any], ...] = ()  # ("map", {key: value}) or ("hash", name)
    raw: bool = False
    problems: tuple[tuple[str, str], ...] = ()  # (kind, modifier text)


@lru_cache(maxsize=512)
def _modifiers(text: str) -> _Modifiers:
    """Parse ``":raw:approved=1,*=0"`` (the part after the name)."""
    steps: list[tuple[str, Any]] = []
    problems: list[tuple[str, str]] = []
    raw = False
    for part in (p.strip() for p in text.split(":")[1:]):
        if part == "raw":
            raw = True
        elif part in HASHES:
            steps.append(("hash", part))
        elif "=" in part:
            pairs = [[t.strip() for t in pair.partition("=")] for pair in part.split(",")]
            mapping = {key: value for key, _, value in pairs}
            if len(mapping) < len(pairs) or any(
                not key or not sep or "=" in value for key, sep, value in pairs
            ):
                problems.append(("mapping", part))
            else:
                steps.append(("map", mapping))
        elif re.fullmatch(r"(md|sha)[\d_-]*", part, re.IGNORECASE) or part.lower() in (
            hashlib.algorithms_available
        ):
            problems.append(("hash", part))
        else:
            problems.append(("modifier", part))
    return _Modifiers(tuple(steps), raw, tuple(problems))


def _apply(step: tuple[str, Any], value: str) -> str:
    kind, arg = step
    if kind == "map":
        return arg.get(value, arg.get("*", value))
    if not value:
        return ""
    return hashlib.new(arg, value.encode("utf-8", "replace"), usedforsecurity=False).hexdigest()


def _lookup(name: str, context: dict[str, str]) -> str | None:
    """The value of ``name``: None when it is not a macro (then it stays verbatim)."""
    value = context.get(name)
    if value is None:
        macro = CATALOGUE.get(name)
        if macro is not None:
            spellings = (macro.name, *macro.aliases)
            value = next((context[s] for s in spellings if context.get(s) is not None), "")
        elif _is_named_var(name):
            value = ""
        else:
            return None
    return value if isinstance(value, str) else format_value(value)


def _encodable(text: str) -> str:
    """``text`` with lone surrogates (which cannot go on the wire) replaced by "?", as
    inbound text is recorded."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def render(
    template: str, context: dict[str, str], *, escape: str = "url", url_encode: bool | None = None
) -> str:
    """Fill the macros of ``template`` from ``context`` (from :func:`build_context`).

    ``escape`` says where values land: ``"url"`` percent-encodes (RFC 3986, nothing kept
    safe; URLs and form bodies), ``"json"`` escapes for inside a JSON string literal,
    ``"header"`` removes control characters, ``"none"`` leaves text as is. ``url_encode``
    is the older spelling (True: "url", False: "none"). Catalogue macros without a value
    render empty (or their default); unknown macros and malformed modifiers stay verbatim.
    Never raises for any template or value; raises ValueError for an unknown ``escape``.
    """
    if url_encode is not None:
        escape = "url" if url_encode else "none"
    if escape not in ESCAPES:
        raise ValueError(f"escape must be one of {', '.join(ESCAPES)}, not {escape!r}")
    escaper = ESCAPES[escape]

    def substitute(match: re.Match[str]) -> str:
        value = _lookup(match.group("name"), context)
        modifiers = _modifiers(match.group("modifiers"))
        if value is None or modifiers.problems:
            return match.group(0)
        for step in modifiers.steps:
            value = _apply(step, value)
        value = _encodable(value or match.group("default") or "")
        return value if modifiers.raw else escaper(value)

    return MACRO_RE.sub(substitute, template)


def _near(template: str, position: int) -> str:
    return template[max(0, position - 15) : position + 15]


def _brace_errors(template: str, context: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Errors about braces outside well-formed macros (and spaces in a URL), and the spans
    of doubled braces. In a URL or header every brace must belong to a macro; in JSON or
    text braces may be the document's own, so only macro-like fragments are checked.
    """
    strict = context in ("url", "header")
    found = list(_DOUBLED_RE.finditer(template))
    doubled = [(m.start(), m.end()) for m in found]
    errors = [f"Doubled braces in {m.group(0)}: write {{{m.group(1)}}}." for m in found]
    rest = _DOUBLED_RE.sub(lambda m: "_" * len(m.group(0)), template)
    rest = MACRO_RE.sub(lambda m: "_" * len(m.group(0)), rest)
    if strict:
        for m in re.finditer(r"\{[^{}]*\}", rest):
            errors.append(
                f"Malformed macro {m.group(0)}: write {{name}}, {{name:modifier}} or "
                "{name|default}, the name in letters, digits, '_', '.' or '-'."
            )
        rest = re.sub(r"\{[^{}]*\}", lambda m: "_" * len(m.group(0)), rest)
        unopened, unclosed = re.finditer(r"\}", rest), re.finditer(r"\{", rest)
    else:
        unclosed = re.finditer(r"\{(?=[A-Za-z][\w.\-]*(?::[^{}\"]*)?(?:[\"\s,&]|$))", rest)
        unopened = re.finditer(r"(?<=[\"'])[A-Za-z][\w.\-]*(\})", rest)
    for m in unclosed:
        near = _near(template, m.start())
        errors.append(f"Unbalanced brace: '{{' never closed near \"{near}\".")
    for m in unopened:
        near = _near(template, m.end() - 1)
        errors.append(f"Unbalanced brace: '}}' without its '{{' near \"{near}\".")
    if context == "url":
        space = re.search(r"\s", rest)
        if space is not None:
            near = _near(template, space.start())
            errors.append(f'Unencoded space near "{near}": write %20 (or + in a query).')
    return errors, doubled


def validate(
    template: str, *, context: str = "url", known_vars: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for a template, as sentences for admin and API.

    ``context`` is where the template lands, as for :func:`render`: ``"url"`` also refuses
    spaces; ``"json"`` and ``"none"`` allow the document's own braces. ``known_vars``: the
    named parameters of the rule's traffic sources, to check ``{var:name}`` (None: any).
    Never raises for any template; raises ValueError for an unknown ``context``.
    """
    if context not in ESCAPES:
        raise ValueError(f"context must be one of {', '.join(ESCAPES)}, not {context!r}")
    errors, doubled = _brace_errors(template, context)
    warnings: list[str] = []
    names: set[str] = set()
    for match in MACRO_RE.finditer(template):
        if any(start <= match.start() < end for start, end in doubled):
            continue
        name, text = match.group("name"), match.group(0)
        macro = CATALOGUE.get(name)
        if macro is not None:
            names.add(macro.name)
            if name in DEPRECATED:
                warnings.append(f"{{{name}}} is deprecated: use {{{DEPRECATED[name]}}}.")
            if not macro.recorded:
                warnings.append(f"{{{name}}} is not recorded yet: it renders empty.")
        elif _is_named_var(name):
            var = name[len(NAMED_VAR_PREFIX) :]
            if known_vars is not None and var not in known_vars:
                defined = ", ".join(sorted(known_vars)) or "no custom variables"
                errors.append(
                    f"Unknown custom variable {{{name}}}: this rule's traffic sources define "
                    f"{defined}."
                )
        elif name == NAMED_VAR_PREFIX:
            errors.append(f"{text}: name the custom variable, e.g. {{var:site}}.")
        else:
            errors.append(_unknown(name))
        for kind, part in _modifiers(match.group("modifiers")).problems:
            errors.append(_MODIFIER_ERRORS[kind].format(part=part, macro=text))
    if "externalid" not in names:
        warnings.append(
            "No {externalid} macro: the traffic source cannot match the conversion to its click."
        )
    return errors, list(dict.fromkeys(warnings))


_MODIFIER_ERRORS = {
    "hash": "Unknown hash :{part} in {macro}; use md5, sha1 or sha256.",
    "mapping": "Malformed mapping :{part} in {macro}: write value=replacement pairs separated "
    "by commas, e.g. approved=1,rejected=0 (*=x for any other value).",
    "modifier": "Unknown modifier :{part} in {macro}; use raw, md5, sha1, sha256 or a "
    "mapping such as approved=1,rejected=0.",
}


def _unknown(name: str) -> str:
    folded: dict[str, str] = {}
    for spelling in CATALOGUE:  # canonical names come first, so they win
        folded.setdefault(spelling.lower().replace("-", "_"), spelling)
    key = name.lower().replace("-", "_")
    near = [folded[key]] if key in folded else []
    near = near or difflib.get_close_matches(name, list(CATALOGUE), n=1, cutoff=0.6)
    if near:
        return f"Unknown macro {{{name}}}; did you mean {{{near[0]}}}?"
    return f"Unknown macro {{{name}}}; see the macro list."


def validate_or_raise(
    template: str, *, context: str = "url", known_vars: set[str] | None = None
) -> list[str]:
    """The warnings of :func:`validate`; raises ValidationError with every error."""
    errors, warnings = validate(template, context=context, known_vars=known_vars)
    if errors:
        raise ValidationError(errors)
    return warnings
