"""What a visit's IP, user agent, Accept-Language and referrer tell: geo, device, language.

Sources, all offline and in process:

- **User agent**: ua-parser 1.x with the uap-core rules of ``ua-parser-builtins``, run by the
  Rust ``ua-parser-rs`` resolver (about 130 µs for a user agent not seen before, of which
  60 µs is the parse; the pure Python resolver, used only where the native wheel is
  missing, takes about 1.5 ms a parse). The
  device class (mobile, tablet, desktop, bot) is ``user-agents-ng``'s, computed from that
  parse; TV, console and wearable come from the parsed device and OS names. Results are
  kept in a per-process LRU cache keyed on the user agent string (real traffic repeats them).
- **IP**: the packaged ``geoip2fast`` database (MaxMind GeoLite2 country and AS names for
  IPv4 and IPv6, from GeoLite2 of 2024-06-18; about 70 µs for an address not seen before,
  ~110 MB of memory per process, loaded on first use or by :func:`warm_up`), then the
  MaxMind ``.mmdb`` files named by
  ``TRACKER_GEOIP_MMDB`` (City, Country, ASN, ISP, Connection-Type, Enterprise; read with
  ``maxminddb``), whose answers win. Only public (globally routed) addresses are looked up.
- **Language**: Django's RFC 9110 Accept-Language parser (the one ``LocaleMiddleware`` uses).
- **Referrer domain**: :func:`urllib.parse.urlsplit`.

Nothing here raises on visitor input: unknown or malformed values give "" (``asn``: None).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

import pycountry
from django.conf import settings
from django.utils.translation.trans_real import parse_accept_lang_header
from user_agents.parsers import UserAgent, parse_browser, parse_device, parse_operating_system

logger = logging.getLogger(__name__)

UA_CACHE_SIZE = 4096
IP_CACHE_SIZE = 4096
UA_PARSE_MAX = 1024  # characters of a user agent that are parsed (and cached)
PACKAGED_DATABASE = "geoip2fast-asn-ipv6.dat.gz"  # country + AS name, IPv4 and IPv6

# Lengths of the Visit fields (tracker.models.Visit), so a value always fits its column.
MAX_LENGTH = {
    "country_code": 2, "country_name": 100, "region": 100, "city": 100, "isp": 200,
    "carrier": 100, "connection_type": 32, "device_type": 16, "device_brand": 64,
    "device_model": 100, "os": 64, "os_version": 32, "browser": 64, "browser_version": 32,
    "language": 16, "referrer_domain": 255,
}  # fmt: skip
UA_FIELDS = (
    "device_type", "device_brand", "device_model", "os", "os_version", "browser",
    "browser_version",
)  # fmt: skip
IP_FIELDS = (
    "country_code", "country_name", "region", "city", "isp", "carrier", "connection_type",
)  # fmt: skip

# Device classes user-agents does not make, recognised in ua-parser's device/OS names.
_CONSOLE_MARKERS = ("playstation", "xbox", "nintendo")
_TV_MARKERS = ("smarttv", "smart-tv", "smart tv", "appletv", "bravia", "chromecast", "roku")
_TV_OS = {"ATV OS X", "tvOS", "Web0S", "webOS", "Tizen TV"}
_WEARABLE_MARKERS = ("watch",)
_WEARABLE_OS = {"watchOS", "Wear OS"}
# Browsers that are automation, whatever the rest of the user agent says.
_AUTOMATION_BROWSERS = {"HeadlessChrome", "PhantomJS"}
# ua-parser's placeholders for "no real brand/model".
_GENERIC_BRANDS = ("Generic", "Spider")
_PLACEHOLDER_MODELS = {"K", "Smartphone", "Feature Phone", "Tablet", "Desktop"}


def visit_fields(ip: str | None, user_agent: str, accept_language: str, referrer: str) -> dict:
    """The fields to store on a click or impression (see :class:`tracker.models.Visit`).

    Returns ``{"ip": str | None, "country_code", "country_name", "region", "city", "isp",
    "carrier", "connection_type", "device_type", "device_brand", "device_model", "os",
    "os_version", "browser", "browser_version", "language", "referrer_domain": str,
    "asn": int | None, "is_bot": bool}``; every text fits its column, "" when unknown.
    ``ip`` is the address to store: as given (None when not a valid address), or with its
    last octet (IPv4) / last 80 bits (IPv6) zeroed when ``TRACKER_ANONYMIZE_IP`` is set;
    geo is always looked up on the full address. Never raises on bad input.
    """
    fields: dict[str, Any] = {
        **user_agent_fields(user_agent or ""),
        **ip_fields(ip),
        "language": language(accept_language or ""),
        "referrer_domain": referrer_domain(referrer or ""),
    }
    stored = _normalized(ip) if isinstance(ip, str) else None
    if stored is not None and getattr(settings, "TRACKER_ANONYMIZE_IP", False):
        stored = anonymize_ip(stored)
    fields["ip"] = stored
    return fields


# --- user agent -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _ua_parser() -> Any:
    """ua-parser's parser over the bundled rules, on the Rust resolver when installed."""
    from ua_parser import BasicResolver, Parser, load_builtins, load_lazy_builtins

    try:
        from ua_parser.regex import Resolver
    except ImportError:  # no ua-parser-rs wheel for this platform: correct, 25x slower
        logger.warning("ua-parser-rs is not installed: user agents parsed in pure Python")
        return Parser(BasicResolver(load_builtins()))
    return Parser(Resolver(load_lazy_builtins()))


def _parts(value: Any, *names: str) -> list[Any]:
    return [getattr(value, name) for name in names]


class _Classified(UserAgent):
    """user-agents' device classes (``is_mobile``, ``is_tablet``, ``is_pc``, ``is_bot``) over
    an ua-parser 1.x result: its own constructor would parse the string again with
    ua-parser's deprecated pure-Python API (about 1.4 ms)."""

    def __init__(self, text: str, result: Any) -> None:
        self.ua_string = text
        browser, system, device = result.user_agent, result.os, result.device
        self.browser = parse_browser(
            *_parts(browser, "family", "major", "minor", "patch") if browser else ["Other"]
        )
        self.os = parse_operating_system(
            *_parts(system, "family", "major", "minor", "patch") if system else ["Other"]
        )
        self.device = parse_device(
            *_parts(device, "family", "brand", "model") if device else ["Other", None, None]
        )


def _version(value: Any) -> str:
    parts = _parts(value, "major", "minor", "patch", "patch_minor") if value else []
    return ".".join(p for p in parts if p)


def _device_type(text: str, result: Any, agent: _Classified) -> str:
    system, device, browser = result.os, result.device, result.user_agent
    os_family = system.family if system else ""
    names = " ".join(filter(None, _parts(device, "family", "brand") if device else [])).lower()
    library = (
        system is None
        and device is None
        and browser is not None
        and not text.startswith(("Mozilla/", "Opera/"))
    )  # curl, Wget, okhttp, python-requests...: a program, not a person
    if agent.is_bot or library or (browser and browser.family in _AUTOMATION_BROWSERS):
        return "bot"
    if any(marker in names for marker in _CONSOLE_MARKERS):
        return "console"
    if os_family in _TV_OS or any(marker in names for marker in _TV_MARKERS):
        return "tv"
    if os_family in _WEARABLE_OS or any(marker in names for marker in _WEARABLE_MARKERS):
        return "wearable"
    if agent.is_tablet:
        return "tablet"
    if agent.is_mobile:
        return "mobile"
    if agent.is_pc:
        return "desktop"
    return "other"


def user_agent_fields(user_agent: str) -> dict[str, Any]:
    """Device, OS and browser of a ``User-Agent`` header value (its first 1,024 characters).

    Returns ``{"device_type": one of tracker.models.DeviceType or "" (empty user agent),
    "device_brand", "device_model", "os", "os_version", "browser", "browser_version": str,
    "is_bot": bool}`` with ua-parser's names ("Mac OS X", "Chrome Mobile", "Facebook",
    "TikTok"), versions as dotted numbers ("17.1.2"), "" when unknown. In-app browsers are
    mobile (or tablet) with the app as browser. ``is_bot``: crawlers (ua-parser's Spider
    device), headless browsers and HTTP libraries; their device type is ``bot``. Cached per
    process (``UA_CACHE_SIZE`` strings): treat the answer as read-only. Never raises.
    """
    return _user_agent_fields(user_agent[:UA_PARSE_MAX] if isinstance(user_agent, str) else "")


@lru_cache(maxsize=UA_CACHE_SIZE)
def _user_agent_fields(user_agent: str) -> dict[str, Any]:
    empty = dict.fromkeys(UA_FIELDS, "") | {"is_bot": False}
    text = _clean(user_agent, UA_PARSE_MAX)
    if not text:
        return empty
    try:
        result = _ua_parser().parse(text)
        agent = _Classified(text, result)
        device_type = _device_type(text, result, agent)
    except Exception:  # a parser defect must never cost a click
        logger.exception("User agent not parsed: %r", text[:200])
        return empty
    brand, model = "", ""
    if result.device is not None:
        brand = result.device.brand or ""
        model = result.device.model or ""
        if brand.startswith(_GENERIC_BRANDS):
            brand = ""
            model = "" if model in _PLACEHOLDER_MODELS else model
    return {
        "device_type": device_type,
        "device_brand": _clean(brand, MAX_LENGTH["device_brand"]),
        "device_model": _clean(model, MAX_LENGTH["device_model"]),
        "os": _clean(result.os.family if result.os else "", MAX_LENGTH["os"]),
        "os_version": _clean(_version(result.os), MAX_LENGTH["os_version"]),
        "browser": _clean(
            result.user_agent.family if result.user_agent else "", MAX_LENGTH["browser"]
        ),
        "browser_version": _clean(_version(result.user_agent), MAX_LENGTH["browser_version"]),
        "is_bot": device_type == "bot",
    }


# --- IP ---------------------------------------------------------------------------------


def _address(ip: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not ip or not isinstance(ip, str):
        return None
    try:
        return ipaddress.ip_address(ip.strip().partition("%")[0])
    except ValueError:
        return None


@lru_cache(maxsize=IP_CACHE_SIZE)
def _normalized(ip: str) -> str | None:
    address = _address(ip)
    return str(address) if address is not None else None


def anonymize_ip(ip: str) -> str:
    """``ip`` with its host part zeroed: the last octet of an IPv4 address (``/24``), the last
    80 bits of an IPv6 one (``/48``); an IPv4-mapped IPv6 address becomes its IPv4 ``/24``.
    Raises ValueError when ``ip`` is not an address."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class _Packaged:
    """geoip2fast's bundled database: country code and name, AS organisation name."""

    def __init__(self) -> None:
        from geoip2fast import GeoIP2Fast

        # The full path: given a bare name, geoip2fast prefers a file in the current directory.
        path = resources.files("geoip2fast") / PACKAGED_DATABASE
        self.db = GeoIP2Fast(geoip2fast_data_file=str(path))

    def fields(self, ip: str) -> dict[str, Any]:
        found = self.db.lookup(ip)
        code = found.country_code or ""
        if found.is_private or len(code) != 2 or not code.isalpha():  # "--": not found
            return {}
        fields = {"country_code": found.country_code, "country_name": found.country_name}
        if found.asn_name and not found.asn_name.startswith("<"):
            fields["isp"] = found.asn_name
        return fields


_load_lock = threading.Lock()
_packaged_db: _Packaged | Literal[False] | None = None  # False: failed to load, not tried again


def _packaged() -> _Packaged | None:
    global _packaged_db
    if _packaged_db is None:
        with _load_lock:
            if _packaged_db is None:
                try:
                    _packaged_db = _Packaged()
                except Exception:
                    logger.exception("The packaged geoip2fast database could not be loaded")
                    _packaged_db = False
    return _packaged_db or None


def _name(names: object) -> str:
    """The English name of a MaxMind ``names`` map, else any."""
    if not isinstance(names, dict) or not names:
        return ""
    value = names.get("en") or next(iter(names.values()))
    return value if isinstance(value, str) else ""


def _get(record: object, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            record = record[key] if isinstance(record, list) and len(record) > key else None
        else:
            record = record.get(key) if isinstance(record, dict) else None
    return record


def _country(record: dict) -> dict[str, Any]:
    country = _get(record, "country") or _get(record, "registered_country")
    code = _get(country, "iso_code")
    if not isinstance(code, str) or len(code) != 2 or not code.isalpha():
        return {}
    return {"country_code": code.upper(), "country_name": _name(_get(country, "names"))}


def _city(record: dict) -> dict[str, Any]:
    return {
        **_country(record),
        "region": _name(_get(record, "subdivisions", 0, "names")),
        "city": _name(_get(record, "city", "names")),
    }


def _asn(record: dict) -> dict[str, Any]:
    number = record.get("autonomous_system_number")
    return {
        "asn": number if isinstance(number, int) else None,
        "isp": record.get("autonomous_system_organization") or "",
    }


def _isp(record: dict) -> dict[str, Any]:
    isp = record.get("isp") or record.get("organization") or ""
    mobile = record.get("mobile_network_code") or record.get("mobile_country_code")
    return {**_asn(record), "isp": isp, "carrier": isp if mobile else ""}


def _connection(record: dict) -> dict[str, Any]:
    return {"connection_type": record.get("connection_type") or ""}


def _enterprise(record: dict) -> dict[str, Any]:
    traits = record.get("traits")
    if not isinstance(traits, dict):
        traits = {}
    merged = {**_city(record)}
    for part in (_asn(traits), _isp(traits), _connection(traits)):
        merged.update({k: v for k, v in part.items() if v})
    return merged


# database_type substring (checked in this order) -> kind, reader of one record.
MMDB_KINDS: tuple[tuple[str, str, Callable[[dict], dict[str, Any]]], ...] = (
    ("connection-type", "Connection-Type", _connection),
    ("enterprise", "Enterprise", _enterprise),
    ("isp", "ISP", _isp),
    ("asn", "ASN", _asn),
    ("city", "City", _city),
    ("country", "Country", _country),
)
# Applied in this order, so the finer source wins: an ISP database's ISP name over an ASN
# database's AS organisation, a City database's country over a Country database's.
_KIND_ORDER = ("Country", "ASN", "City", "ISP", "Enterprise", "Connection-Type")


class _Mmdb:
    def __init__(self, path: str) -> None:
        import maxminddb

        self.path = path
        self.reader = maxminddb.open_database(path)
        self.database_type = self.reader.metadata().database_type
        lowered = self.database_type.lower()
        found = next((kind for kind in MMDB_KINDS if kind[0] in lowered), None)
        if found is None:
            self.reader.close()
            raise ValueError(
                f"{path}: database type {self.database_type!r} is not one of City, Country, "
                "ASN, ISP, Connection-Type, Enterprise"
            )
        _, self.kind, self.read = found

    def fields(self, ip: str) -> dict[str, Any]:
        try:
            record = self.reader.get(ip)
        except ValueError:  # an IPv6 address and an IPv4-only database
            return {}
        return self.read(record) if isinstance(record, dict) else {}


@lru_cache(maxsize=8)
def _mmdb_readers(paths: tuple[str, ...]) -> tuple[_Mmdb, ...]:
    readers = []
    for path in paths:
        try:
            readers.append(_Mmdb(path))
        except Exception as exc:  # a missing or foreign file is logged, never fatal
            logger.error("TRACKER_GEOIP_MMDB: %s skipped: %s", path, exc)
    return tuple(sorted(readers, key=lambda r: _KIND_ORDER.index(r.kind)))


def mmdb_paths(value: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The ``.mmdb`` paths configured in ``TRACKER_GEOIP_MMDB`` (a list, or one
    comma-separated string), stripped, empty entries dropped."""
    if value is None:
        value = getattr(settings, "TRACKER_GEOIP_MMDB", ())
    if isinstance(value, str):
        value = value.split(",")
    return tuple(path.strip() for path in value if path and path.strip())


def mmdb_databases() -> list[dict[str, str]]:
    """The configured ``.mmdb`` files that opened: ``[{"path", "database_type", "kind"}]``."""
    return [
        {"path": r.path, "database_type": r.database_type, "kind": r.kind}
        for r in _mmdb_readers(mmdb_paths())
    ]


def ip_fields(ip: str | None) -> dict[str, Any]:
    """Geo and network of an IP address (text, IPv4 or IPv6).

    Returns ``{"country_code": ISO 3166-1 alpha-2, "country_name", "region", "city", "isp",
    "carrier", "connection_type": str, "asn": int | None}``, "" / None when unknown. The
    packaged database gives country and AS organisation (as ``isp``); region, city, ASN
    number, ISP, carrier and connection type come only from configured ``.mmdb`` files
    (``TRACKER_GEOIP_MMDB``), whose non-empty answers replace the packaged ones. Private,
    loopback, link-local, reserved and documentation addresses, and anything that is not an
    address, give no geo. Never raises.
    """
    if not ip or not isinstance(ip, str):
        return _empty_ip()
    return dict(_ip_lookup(ip, mmdb_paths()))


def _empty_ip() -> dict[str, Any]:
    return dict.fromkeys(IP_FIELDS, "") | {"asn": None}


@lru_cache(maxsize=IP_CACHE_SIZE)
def _ip_lookup(ip: str, paths: tuple[str, ...]) -> dict[str, Any]:
    fields = _empty_ip()
    address = _address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address is None or not address.is_global or address.is_multicast:  # ~20 µs: cached
        return fields
    ip = str(address)
    try:
        packaged = _packaged()
        if packaged is not None:
            fields.update(packaged.fields(ip))
        for reader in _mmdb_readers(paths):
            found = reader.fields(ip)
            if found.get("country_code"):  # the packaged name may be another country's
                fields["country_name"] = ""
            fields.update({k: v for k, v in found.items() if v})
    except Exception:  # a database defect must never cost a click
        logger.exception("IP not looked up: %s", ip)
        return _empty_ip()
    if fields["country_code"] and not fields["country_name"]:
        country = pycountry.countries.get(alpha_2=fields["country_code"])
        fields["country_name"] = getattr(country, "name", "")
    for name in IP_FIELDS:
        fields[name] = _clean(str(fields[name] or ""), MAX_LENGTH[name])
    return fields


# --- language, referrer -----------------------------------------------------------------


def _bcp47_case(tag: str) -> str:
    """``en-us`` -> ``en-US``, ``zh-hant-tw`` -> ``zh-Hant-TW`` (RFC 5646 conventions)."""
    first, *rest = tag.lower().split("-")
    shaped = [first]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            part = part.upper()
        elif len(part) == 4 and part.isalpha():
            part = part.title()
        shaped.append(part)
    return "-".join(shaped)


def language(accept_language: str) -> str:
    """The preferred language of an ``Accept-Language`` header value: the tag with the
    highest q weight (the first of equals; ``*`` and ``q=0`` skipped), e.g. ``fr-CH``.

    Parsed by Django's RFC 9110 parser (``en_US`` is read as ``en-US``); a malformed header
    gives "". At most 16 characters, cut at a subtag boundary. Never raises.
    """
    if not accept_language or not isinstance(accept_language, str):
        return ""
    try:
        ranked = parse_accept_lang_header(accept_language.replace("_", "-").strip())
    except Exception:
        return ""
    for tag, weight in ranked:
        if tag != "*" and weight > 0:
            kept = ""
            for part in _bcp47_case(tag).split("-"):
                candidate = f"{kept}-{part}" if kept else part
                if len(candidate) > MAX_LENGTH["language"]:
                    break
                kept = candidate
            return kept
    return ""


def referrer_domain(referrer: str) -> str:
    """The host of a referrer URL, lower case, without port, user or trailing dot
    (``https://News.Example:8443/a`` -> ``news.example``; an IPv6 host without brackets).
    "" for a relative or malformed URL or a host with spaces or control characters.
    At most 255 characters. Never raises."""
    if not referrer or not isinstance(referrer, str):
        return ""
    try:
        host = urlsplit(referrer.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    if not host or not host.isprintable() or " " in host:
        return ""
    return _clean(host, MAX_LENGTH["referrer_domain"])


# --- shared -----------------------------------------------------------------------------


def _clean(text: str, limit: int) -> str:
    """``text`` as a column takes it: lone surrogates as "?", NUL and other control
    characters dropped, stripped, cut to ``limit``."""
    if not text:
        return ""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    if not text.isprintable():
        text = "".join(ch for ch in text if ch.isprintable() or ch == " ")
    return text.strip()[:limit]


def warm_up() -> None:
    """Load the user-agent rules and the IP databases now rather than on the first visit
    (about 0.25 s and 0.4 s): call it once per process, e.g. after a server worker forks."""
    _ua_parser().parse("Mozilla/5.0")
    _packaged()
    _mmdb_readers(mmdb_paths())


def cache_clear() -> None:
    """Forget cached user agents, IP answers and opened ``.mmdb`` files (tests, reloads)."""
    _user_agent_fields.cache_clear()
    _ip_lookup.cache_clear()
    _mmdb_readers.cache_clear()
