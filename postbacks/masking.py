"""What a secret is, and how it is masked, for everything stored or shown: URLs, header
lines, form and JSON bodies, error texts, log lines, rule templates.

The one definition: a value is secret when its *name* (query or form parameter, JSON key,
header name) matches, in any case, one of :data:`SECRET_NAMES` or of the setting
``POSTBACKS_MASK_PARAMS`` (names added to them), shell-style globs (``*token*``, ``pw``);
``Idempotency-Key`` (the delivery ID) is not a secret. ``POSTBACKS_MASK_PATH_PATTERNS``
adds regular expressions whose first group is a secret in a path (a Telegram bot token in
``/bot<token>/sendMessage``).

Masking replaces only the secret values by ``***`` and leaves every other character as it
was, so a masked URL differs from the sent one only where it says ``***`` (no
re-encoding: ``%20`` stays ``%20``). A secret inside an encoded parameter
(``to=http%3A%2F%2Fx%2F%3Ftoken%3DSECRET``) is masked too, as is one in a JSON body
(``"api_key": "..."``). A value that is a macro only (``token={var:token}`` in a
template) is not a secret and stays.

Admin, API, the rule preview and test, the inbound log and the dispatcher all call these
functions; none keeps its own list.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping

from django.conf import settings
from django.core.signals import setting_changed

MASK = "***"
# Names whose values are secrets (shell-style globs, any case). The setting
# POSTBACKS_MASK_PARAMS adds to them.
SECRET_NAMES = (
    "*key*",
    "*token*",
    "*secret*",
    "*passw*",
    "*signature*",
    "*auth*",
    "*session*",
    "sig",
    "pwd",
    "pw",
    "pass",
    "cookie",
    "set-cookie",
)
# Names that match a glob above but carry no secret.
NOT_SECRET_NAMES = frozenset({"idempotency-key"})
# How deep encoded parameters are looked into (a URL in a parameter of a URL...).
MAX_DEPTH = 4

# name=value after the start, ?, &, ; or white space, or their percent-encoded forms
# (%3F, %26, %3B, also encoded again: %253F). A plain value runs to the next separator,
# quote or white space; an encoded one (after %3D) also stops at an encoded separator.
_PAIR = re.compile(
    r"(?P<sep>^|[?&;\s]|%(?:25)*(?:3F|26|3B))"
    r"(?P<name>[A-Za-z0-9_.\-\[\]]+)"
    r"(?:(?P<eq>=)(?P<value>[^&;#\s'\"<>]*)"
    r"|(?P<eq2>%(?:25)*3D)(?P<value2>(?:(?!%(?:25)*(?:26|3B|23))[^&;#\s'\"<>])*))",
    re.IGNORECASE,
)
# "name": value in JSON (a string, or a bare number, literal...).
_JSON_PAIR = re.compile(
    r'(?P<head>"(?P<name>(?:[^"\\]|\\.){1,200})"\s*:\s*)'
    r'(?P<value>"(?:[^"\\]|\\.)*"|[^,}\]\s]+)'
)
# A multipart/form-data part: its headers name it, its value follows the blank line.
_MULTIPART_PART = re.compile(
    r'(?P<head>form-data;[^\r\n]*?\bname="(?P<name>[^"\r\n]{1,200})"[^\r\n]*\r?\n'
    r"(?:[^\r\n]+\r?\n)*\r?\n)(?P<value>[^\r\n]*)",
    re.IGNORECASE,
)
_MACRO_ONLY = re.compile(r"^\{[^{}]*\}$")


def _glob_regex(glob: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)


@functools.cache
def _names() -> re.Pattern[str]:
    globs = dict.fromkeys([*SECRET_NAMES, *settings.POSTBACKS_MASK_PARAMS])
    return re.compile("|".join(f"(?:{_glob_regex(g.strip())})" for g in globs if g.strip()), re.I)


@functools.cache
def _paths() -> list[re.Pattern[str]]:
    return [re.compile(p) for p in settings.POSTBACKS_MASK_PATH_PATTERNS]


def is_secret_name(name: str) -> bool:
    """Whether a value named ``name`` (query or form parameter, JSON key, header name) is a
    secret: see the module docstring. Any case, surrounding white space ignored."""
    name = (name or "").strip()
    if not name or name.lower() in NOT_SECRET_NAMES:
        return False
    return bool(_names().fullmatch(name))


def _is_hidden(value: str) -> bool:
    """Whether ``value`` of a secret name is to be replaced (not empty, not a macro)."""
    return bool(value) and not _MACRO_ONLY.match(value)


Replace = Callable[[str, str], str]


def _pairs(text: str, replace: Replace, depth: int = 0) -> str:
    """``text`` with each secret parameter's value replaced by ``replace(name, value)``;
    other values are looked into for encoded parameters, ``MAX_DEPTH`` levels deep."""

    def one(match: re.Match[str]) -> str:
        name = match["name"]
        eq = match["eq"] or match["eq2"]
        value = match["value"] if match["eq"] is not None else match["value2"]
        if is_secret_name(name):
            value = replace(name, value)
        elif "%" in value and depth < MAX_DEPTH:
            value = _pairs(value, replace, depth + 1)
        return f"{match['sep']}{name}{eq}{value}"

    return _PAIR.sub(one, text)


def _json_pairs(text: str, replace: Replace) -> str:
    def one(match: re.Match[str]) -> str:
        value = match["value"]
        if not is_secret_name(match["name"]):
            return match.group(0)
        quoted = value.startswith('"')
        inner = value[1:-1] if quoted else value
        if value in ("null", "true", "false") or not inner:
            return match.group(0)
        new = replace(match["name"], inner)
        return match["head"] + (f'"{new}"' if quoted or new == MASK else new)

    return _JSON_PAIR.sub(one, text) if '"' in text else text


def _multipart_pairs(text: str, replace: Replace) -> str:
    def one(match: re.Match[str]) -> str:
        if not is_secret_name(match["name"]):
            return match.group(0)
        return match["head"] + replace(match["name"], match["value"])

    return _MULTIPART_PART.sub(one, text) if "form-data" in text.lower() else text


def _hide(_name: str, value: str) -> str:
    return MASK if _is_hidden(value) else value


def mask_secrets(text: str) -> str:
    """``text`` (a URL, query string, form, multipart or JSON body, error text, log line)
    with every secret value replaced by ``***``: parameters, form fields and JSON keys
    named as secrets (also inside encoded parameters) and path secrets. Byte-exact
    elsewhere; empty values and macro-only values are left as they are. Raises nothing
    for any input string."""
    if not text:
        return text
    text = _pairs(text, _hide)
    text = _json_pairs(text, _hide)
    text = _multipart_pairs(text, _hide)
    for pattern in _paths():
        text = pattern.sub(_mask_group, text)
    return text


def secret_hint(secret: str) -> str:
    """All a screen shows of a stored secret: its last 4 characters after an ellipsis, e.g.
    ``…x1Yz`` ('' when there is none)."""
    return f"…{secret[-4:]}" if secret else ""


def _mask_group(match: re.Match[str]) -> str:
    start, end = match.span(1)
    text = match.group(0)
    offset = match.start(0)
    return text[: start - offset] + MASK + text[end - offset :]


# --- Headers ---------------------------------------------------------------------------------


def mask_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """``{name: value}`` with the value of each secret header (:func:`is_secret_name`, a
    non-empty value) replaced by ``***``; the other values with :func:`mask_secrets`."""
    return {
        name: MASK if value and is_secret_name(name) else mask_secrets(value)
        for name, value in (headers or {}).items()
    }


def mask_header_lines(template: str) -> str:
    """ "Name: value" lines (a rule's ``headers_template``) with each secret header's value
    (non-empty) written ``***``: ``"Authorization: Bearer x\\nX-A: 1"`` ->
    ``"Authorization: ***\\nX-A: 1"``. Other lines, blank lines and line ends are kept."""
    if not template:
        return template
    lines = template.splitlines(keepends=True)
    for index, line in enumerate(lines):
        name, sep, value = line.strip().partition(":")
        if sep and value.strip() and is_secret_name(name):
            end = line[len(line.rstrip("\r\n")) :]
            lines[index] = f"{name.strip()}: {MASK}{end}"
    return "".join(lines)


class MaskedValueMissing(ValueError):
    """A ``***`` was sent back where nothing is saved to keep; ``messages`` say where."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(" ".join(messages))
        self.messages = messages


def unmask_header_lines(template: str, stored: str) -> str:
    """``template`` as a client sent it, with each header line whose value is exactly
    ``***`` given back the value ``stored`` (the saved ``headers_template``) has for that
    header name (any case; the n-th such line gets the n-th stored value): what
    :func:`mask_header_lines` showed can be written back unchanged.

    Raises :class:`MaskedValueMissing` for a ``***`` line whose header has no saved value."""
    if MASK not in (template or ""):
        return template
    saved: dict[str, list[str]] = {}
    for line in (stored or "").splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name.strip():
            saved.setdefault(name.strip().lower(), []).append(value.strip())
    used: dict[str, int] = {}
    errors: list[str] = []
    lines = template.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        name, sep, value = line.strip().partition(":")
        name = name.strip()
        if not sep or not name or value.strip() != MASK:
            continue
        nth = used.get(name.lower(), 0)
        values = saved.get(name.lower(), [])
        if nth >= len(values):
            errors.append(
                f"Line {number} ({name}): {MASK} keeps the saved value of this header, "
                "but there is none to keep; send the value itself."
            )
            continue
        used[name.lower()] = nth + 1
        end = line[len(line.rstrip("\r\n")) :]
        lines[number - 1] = f"{name}: {values[nth]}{end}"
    if errors:
        raise MaskedValueMissing(errors)
    return "".join(lines)


# --- Templates (URL and body) -----------------------------------------------------------------


def unmask_secrets(text: str, stored: str) -> str:
    """``text`` (a URL or body template as a client sent it back) with each secret value
    written ``***`` given back the saved value: the n-th ``***`` of a secret name gets the
    n-th value ``stored`` has for that name (any case). What :func:`mask_secrets` showed
    can so be written back unchanged.

    Raises :class:`MaskedValueMissing` for a ``***`` with no saved value to keep."""
    if MASK not in (text or ""):
        return text
    saved: dict[str, list[str]] = {}

    def collect(name: str, value: str) -> str:
        saved.setdefault(name.lower(), []).append(value)
        return value

    _json_pairs(_pairs(stored or "", collect), collect)
    used: dict[str, int] = {}
    errors: list[str] = []

    def restore(name: str, value: str) -> str:
        if value != MASK:
            return value
        nth = used.get(name.lower(), 0)
        values = saved.get(name.lower(), [])
        if nth >= len(values):
            errors.append(
                f"{name}={MASK} keeps the saved value, but there is none to keep; send the "
                "value itself."
            )
            return value
        used[name.lower()] = nth + 1
        return values[nth]

    restored = _json_pairs(_pairs(text, restore), restore)
    if errors:
        raise MaskedValueMissing(list(dict.fromkeys(errors)))
    return restored


def _settings_changed(setting: str, **kwargs: object) -> None:
    if setting.startswith("POSTBACKS_MASK_"):
        _names.cache_clear()
        _paths.cache_clear()


setting_changed.connect(_settings_changed, dispatch_uid="postbacks-masking")
