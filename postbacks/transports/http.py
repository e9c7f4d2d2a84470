"""HTTP transports: rendering a rule into a request, sending it under one deadline, and
classifying the answer. Every destination kind builds on :class:`HttpTransport`."""

from __future__ import annotations

import codecs
import json
import logging
import re
import time
from dataclasses import replace
from functools import lru_cache

# Private modules of re, absent from typeshed.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import requests
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from requests_hardened.ip_filter import InvalidIPAddress

from postbacks import http_async, signing
from postbacks.answers import shown_answer, storable
from postbacks.choices import BodyFormat, HttpMethod, SuccessMode
from postbacks.http import Deadline, deadline, http_session
from postbacks.samples import sample_values_context
from postbacks.transports.base import (
    NO_SECRETS,
    Outcome,
    PreparedRequest,
    Result,
    Secrets,
    Transport,
    parse_headers,
    parse_retry_after,
)
from tracker import macros

if TYPE_CHECKING:
    from postbacks.models import PostbackRule

logger = logging.getLogger(__name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"
CONTENT_TYPES = {"form": "application/x-www-form-urlencoded", "json": "application/json"}
# Headers the HTTP client writes itself: a template setting them would break the framing.
FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding"}
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
# A regular expression runs under the GIL and ``re`` has no timeout: a success pattern is
# searched in this many characters of the answer at most (a cubic pattern such as
# ``.*a.*b`` then takes ~0.2 s at worst), and nested repetitions are refused.
SUCCESS_REGEX_MAX_CHARS = 1024


class HttpTransport(Transport):
    """Renders a rule into an HTTP request, sends it and classifies the answer.

    ``timeout`` is one wall-clock deadline for connect, headers and body together (see
    ``postbacks.http.deadline``); the body is read up to ``POSTBACKS_RESPONSE_BODY_MAX_BYTES``.
    """

    # --- validate ------------------------------------------------------------------------

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        errors: dict[str, list[str]] = {}
        warnings: list[str] = []
        # Each part warns that {externalid} is missing; said once, for the whole request.
        missing_external = {
            context: set(macros.validate("", context=context)[1])
            for context in ("url", "json", "header")
        }
        uses_external = False

        def check(field_name: str, template: str, context: str, prefix: str = "") -> bool:
            nonlocal uses_external
            found, warned = macros.validate(template, context=context, known_vars=known_vars)
            errors.setdefault(field_name, []).extend(prefix + e for e in found)
            warnings.extend(prefix + w for w in warned if w not in missing_external[context])
            uses_external = uses_external or not missing_external[context] & set(warned)
            return not found

        url = rule.url_template or ""
        url_errors = self._url_errors(url)
        errors["url_template"] = url_errors
        if url and not url_errors:
            check("url_template", url, "url")

        method = rule.http_method or HttpMethod.GET
        body_format = rule.body_format or BodyFormat.NONE
        body = rule.body_template or ""
        if method not in HttpMethod.values:
            errors["http_method"] = [f"Choose {' or '.join(HttpMethod.values)}."]
        if body_format not in BodyFormat.values:
            errors["body_format"] = [f"Choose one of {', '.join(BodyFormat.values)}."]
        elif method == HttpMethod.GET:
            if body.strip():
                errors.setdefault("body_template", []).append(
                    "A GET request sends no body: choose POST, or leave the body empty."
                )
            if body_format != BodyFormat.NONE:
                errors.setdefault("body_format", []).append(
                    "A GET request sends no body: choose POST, or 'No body'."
                )
        elif body_format == BodyFormat.NONE:
            if body.strip():
                errors.setdefault("body_format", []).append(
                    "Choose how the body is sent: form or JSON."
                )
        elif not body.strip():
            warnings.append("The body is empty: the POST carries no data.")
        elif body_format == BodyFormat.FORM:
            if check("body_template", body.strip(), "url"):
                fields = body.strip().split("&")
                if not all("=" in part for part in fields):
                    warnings.append(
                        "A form body is name=value pairs joined by &, e.g. "
                        "click_id={externalid}&payout={payout}."
                    )
        elif body_format == BodyFormat.JSON and check("body_template", body, "json"):
            errors["body_template"] += self._json_errors(body, warnings)

        names: dict[str, int] = {}
        for number, name, value in parse_headers(rule.headers_template or ""):
            prefix = f"Line {number}: "
            problem = self._header_name_error(name)
            if problem:
                errors.setdefault("headers_template", []).append(prefix + problem)
                continue
            prefix = f"Line {number} ({name}): "
            if name.lower() in names:
                warnings.append(f"{prefix}given twice: only this last value is sent.")
            names[name.lower()] = number
            if name.lower() == IDEMPOTENCY_HEADER.lower():
                warnings.append(
                    f"{prefix}replaces the delivery ID the receiver deduplicates on; "
                    "{delivery.id} is that ID."
                )
            check("headers_template", value, "header", prefix)

        errors.setdefault("success_pattern", []).extend(self._success_errors(rule, warnings))
        if not uses_external:
            warnings.extend(missing_external["url"])
        errors = {name: messages for name, messages in errors.items() if messages}
        if errors:
            raise ValidationError(errors)
        return list(dict.fromkeys(warnings))

    def validate_template(self, template: str) -> None:
        errors = self._url_errors(template)
        if not errors:
            errors = macros.validate(template, context="url")[0]
        if errors:
            raise ValidationError(errors)

    @staticmethod
    def _url_errors(url: str) -> list[str]:
        if not url.strip():
            return ["Enter the destination URL."]
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return ["Enter an http:// or https:// URL."]
        host = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if not host or "{" in host or "}" in host:
            return ["The host must be written out, not a macro."]
        return []

    @staticmethod
    def _json_errors(body: str, warnings: list[str]) -> list[str]:
        """The body rendered with sample values must parse; with every macro empty too
        (or the attempt of an event without, say, a payout sends broken JSON)."""
        advice = 'Quote text macros ("{externalid}"); give numbers a default ({payout|0}).'
        try:
            json.loads(macros.render(body, sample_values_context(), escape="json"))
        except ValueError as exc:
            return [f"Not valid JSON with sample values filled in: {_json_error(exc)}. {advice}"]
        try:
            json.loads(macros.render(body, {}, escape="json"))
        except ValueError as exc:
            warnings.append(f"Not valid JSON when macros are empty: {_json_error(exc)}. {advice}")
        return []

    @staticmethod
    def _header_name_error(name: str) -> str:
        if not name:
            return "write one header per line as Name: value."
        if "{" in name or "}" in name:
            return f"a header name cannot hold a macro ({name}); put macros in the value."
        if not HEADER_NAME_RE.fullmatch(name):
            return f"{name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)."
        if name.lower() in FORBIDDEN_HEADERS:
            return f"{name} is set by the HTTP client and cannot be templated."
        return ""

    @staticmethod
    def _success_errors(rule: PostbackRule, warnings: list[str]) -> list[str]:
        mode, pattern = rule.success_mode or SuccessMode.STATUS, rule.success_pattern or ""
        if mode == SuccessMode.STATUS:
            if pattern:
                warnings.append(
                    "The expected body is ignored: 'success when' accepts any 2xx answer."
                )
            return []
        if not pattern:
            return ["Enter the text (or regular expression) the answer must contain."]
        if mode == SuccessMode.REGEX:
            try:
                success_regex(pattern)
            except ValueError as exc:
                return [str(exc)]
            if re.match(r"\^?\.\*", pattern):
                warnings.append("A leading .* is not needed: the pattern is searched anywhere.")
        return []

    # --- prepare -------------------------------------------------------------------------

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """Render ``rule`` for one event. The body is form-encoded or JSON after
        ``rule.body_format`` (POST only) with its Content-Type; each header line of
        ``rule.headers_template`` is rendered with control characters removed, so a value
        cannot add a header; ``Idempotency-Key`` carries ``context["delivery.id"]``.
        """
        headers: dict[str, str] = {}
        if context.get("delivery.id"):
            headers[IDEMPOTENCY_HEADER] = context["delivery.id"]
        method = rule.http_method or HttpMethod.GET
        body = ""
        body_format = rule.body_format or BodyFormat.NONE
        if method != HttpMethod.GET and body_format in CONTENT_TYPES:
            template = rule.body_template or ""
            if body_format == BodyFormat.FORM:
                body = macros.render(template.strip(), context, escape="url")
            else:
                body = macros.render(template, context, escape="json")
            headers["Content-Type"] = CONTENT_TYPES[body_format]
        for _number, name, value in parse_headers(rule.headers_template or ""):
            if self._header_name_error(name):
                continue  # refused by validate(); never sent
            for existing in [key for key in headers if key.lower() == name.lower()]:
                del headers[existing]
            headers[name] = macros.render(value, context, escape="header").strip()
        return PreparedRequest(
            method,
            macros.render(rule.url_template, context, escape="url"),
            body,
            headers,
            rule.success_mode or SuccessMode.STATUS,
            rule.success_pattern or "",
        )

    # --- send ----------------------------------------------------------------------------

    def authorize(self, request: PreparedRequest, secrets: Secrets) -> PreparedRequest:
        """The request as it goes on the wire: ``request`` plus what is never stored in a
        planned request. Here: Standard Webhooks signature headers when ``secrets.signing``
        holds secrets (``webhook-id`` is the planned ``webhook-id`` or ``Idempotency-Key``:
        the delivery ID); kinds that carry an access token add it in their override.
        Raises ValueError for an unusable secret (the attempt then fails for good)."""
        if not secrets.signing:
            return request
        headers = dict(request.headers)
        msg_id = headers.get("webhook-id") or headers.get(IDEMPOTENCY_HEADER) or ""
        if not msg_id or "." in msg_id:
            raise ValueError("Cannot sign: the request has no delivery ID to send as webhook-id.")
        headers.update(signing.sign_headers(msg_id, request.body, secrets.signing))
        return replace(request, headers=headers)

    def send(
        self, request: PreparedRequest, timeout: float, secrets: Secrets = NO_SECRETS
    ) -> Result:
        """Send ``authorize(request, secrets)``; the access token, should an error text or
        the answer quote it (a proxy echoing the URL), is replaced by ``***`` there (a token
        of 8 characters or more: a shorter one is no real token, and replacing it would
        garble the text)."""
        started = time.monotonic()
        try:
            try:
                request = self.authorize(request, secrets)
            except ValueError as exc:
                return self._failed(started, f"Not sent: {exc}")
            return _storable(_scrubbed(self._send(request, timeout, started), secrets.access_token))
        except Exception as exc:  # the contract: never raise, whatever the destination did
            logger.exception("Unexpected error sending a postback")
            return Result(
                Outcome.RETRY, error=f"Unexpected error: {_describe(exc)}", duration_ms=_ms(started)
            )

    def _send(self, request: PreparedRequest, timeout: float, started: float) -> Result:
        cap = settings.POSTBACKS_RESPONSE_BODY_MAX_BYTES
        # http.client writes header values as Latin-1: send UTF-8 bytes instead.
        headers = {name: _latin1(value) for name, value in request.headers.items()}
        with deadline(timeout) as limit:
            try:
                response = http_session().request(
                    request.method,
                    request.url,
                    data=request.body.encode("utf-8", "replace") if request.body else None,
                    headers=headers,
                    timeout=(min(5.0, timeout), timeout),
                    stream=True,
                )
                raw = self._read_body(response, cap, limit)
                if limit.expired:  # cut mid-answer: what was read may look complete
                    raise requests.exceptions.Timeout("deadline passed")
            except InvalidIPAddress as exc:
                return self._failed(started, f"Destination refused (private network): {exc}")
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
                return self._failed(started, f"Invalid URL: {exc}")
            except requests.exceptions.InvalidHeader as exc:
                return self._failed(started, f"Invalid header: {exc}")
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                if limit.expired or isinstance(exc, requests.exceptions.Timeout):
                    error = f"Timeout: no complete answer within {timeout:g} s ({_describe(exc)})"
                else:
                    error = _describe(exc)
                return Result(Outcome.RETRY, error=error, duration_ms=_ms(started))
            except OSError as exc:
                return Result(Outcome.RETRY, error=_describe(exc), duration_ms=_ms(started))
        return self._answered(response, raw, response.encoding, cap, started, request)

    async def send_async(
        self,
        client: http_async.Client,
        request: PreparedRequest,
        timeout: float,
        secrets: Secrets = NO_SECRETS,
    ) -> Result:
        """:meth:`send` on the dispatcher's event loop (:mod:`postbacks.http_async`): the
        same request on the wire, classification, answer handling and masking, the same
        error texts; never raises."""
        started = time.monotonic()
        try:
            try:
                request = self.authorize(request, secrets)
            except ValueError as exc:
                return self._failed(started, f"Not sent: {exc}")
            result = await self._send_async(client, request, timeout, started)
            return _storable(_scrubbed(result, secrets.access_token))
        except Exception as exc:  # the contract: never raise, whatever the destination did
            logger.exception("Unexpected error sending a postback")
            return Result(
                Outcome.RETRY, error=f"Unexpected error: {_describe(exc)}", duration_ms=_ms(started)
            )

    async def _send_async(
        self, client: http_async.Client, request: PreparedRequest, timeout: float, started: float
    ) -> Result:
        cap = settings.POSTBACKS_RESPONSE_BODY_MAX_BYTES
        try:
            answer = await client.fetch(
                request.method,
                request.url,
                body=request.body.encode("utf-8", "replace") if request.body else None,
                headers=request.headers,
                timeout=timeout,
                cap=cap,
            )
        except http_async.PrivateAddressRefused as exc:
            return self._failed(started, f"Destination refused (private network): {exc}")
        except aiohttp.InvalidURL as exc:
            return self._failed(started, f"Invalid URL: {exc}")
        except TimeoutError as exc:
            cause = f" ({_describe(exc)})" if str(exc) else ""
            error = f"Timeout: no complete answer within {timeout:g} s{cause}"
            return Result(Outcome.RETRY, error=error, duration_ms=_ms(started))
        except (aiohttp.ClientError, OSError) as exc:
            return Result(Outcome.RETRY, error=_describe(exc), duration_ms=_ms(started))
        except ValueError as exc:  # a header or URL aiohttp will not write
            return self._failed(started, f"Invalid request: {exc}")
        return self._answered(answer, answer.raw, answer.encoding, cap, started, request)

    def _answered(
        self,
        response: requests.Response | http_async.Answer,
        raw: bytes,
        encoding: str | None,
        cap: int,
        started: float,
        request: PreparedRequest,
    ) -> Result:
        """The result of an answer read up to ``cap + 1`` bytes (``raw``): classified on its
        decoded text, whose log form is that text or, for a binary answer, a description."""
        body = raw[:cap].decode(_codec(encoding), errors="replace")
        # classify reads what a requests.Response and an http_async.Answer both have.
        result = self.classify(response, body, _ms(started), request)  # type: ignore[arg-type]
        if result.response_body == body:
            content_type = response.headers.get("Content-Type", "")
            result.response_body = shown_answer(
                raw[:cap], body, content_type, truncated=len(raw) > cap
            )
        return result

    @staticmethod
    def _read_body(response: requests.Response, cap: int, limit: Deadline) -> bytes:
        """Up to ``cap + 1`` bytes of the body, in chunks, against the deadline."""
        chunks: list[bytes] = []
        size = 0
        complete = False
        try:
            for chunk in response.iter_content(chunk_size=1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    break
                if not limit.remaining():
                    raise requests.exceptions.Timeout("deadline passed while reading the body")
            else:
                complete = True
        finally:
            if complete:
                response.raw.release_conn()  # fully read: keep the connection alive
            else:
                response.close()
        return b"".join(chunks)

    def classify(
        self,
        response: requests.Response,
        body: str,
        duration_ms: int,
        request: PreparedRequest | None = None,
    ) -> Result:
        """2xx delivered, unless ``request`` asks for a body it lacks; 408, 429 and 5xx
        retried; 3xx and other 4xx failed for good, 410 Gone included (it deactivates the
        rule, see ``postbacks.dispatcher``).

        A 2xx without the expected text (``contains``: case-sensitive, in the captured
        body) or pattern (``regex``: ``re.search`` in its first ``SUCCESS_REGEX_MAX_CHARS``
        characters) is **retried**: a source answering ``200 {"success": false}`` is
        usually briefly unable or misconfigured, and retries end in ``failed`` anyway.
        """
        code = response.status_code
        result = Result(
            Outcome.FAILED, status_code=code, response_body=body, duration_ms=duration_ms
        )
        if 200 <= code < 300:
            result.error = success_error(request, code, body) if request else ""
            result.outcome = Outcome.RETRY if result.error else Outcome.DELIVERED
        elif code in (408, 429) or code >= 500:
            result.outcome = Outcome.RETRY
            result.error = f"HTTP {code}"
            if code == 429:
                result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        elif 300 <= code < 400:
            location = response.headers.get("Location", "")
            result.error = f"HTTP {code}: redirect to {location or '?'} not followed"
        elif code == 410:
            result.error = "HTTP 410 Gone: the destination no longer exists"
        else:
            result.error = f"HTTP {code}"
        return result

    @staticmethod
    def _failed(started: float, error: str) -> Result:
        return Result(Outcome.FAILED, error=error, duration_ms=_ms(started))


def success_error(request: PreparedRequest, code: int, body: str) -> str:
    """Why a 2xx answer does not count as delivered under the request's success mode;
    "" when it does."""
    mode, pattern = request.success_mode, request.success_pattern
    if mode == SuccessMode.CONTAINS and pattern:
        if pattern not in body:
            return f'Answer {code} did not contain "{_clip(pattern)}"'
    elif mode == SuccessMode.REGEX and pattern:
        try:
            regex = success_regex(pattern)
        except ValueError as exc:
            return f"Answer {code} not checked: {exc}"
        if not regex.search(body[:SUCCESS_REGEX_MAX_CHARS]):
            return f"Answer {code} did not match /{_clip(pattern)}/"
    return ""


@lru_cache(maxsize=256)
def success_regex(pattern: str) -> re.Pattern[str]:
    """The compiled success pattern; ValueError (a sentence) when it does not compile or
    nests repetitions, e.g. ``(a+)+``, which can backtrack for minutes on a short answer."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"Not a valid regular expression: {exc}.") from None
    if _nested_repeat(sre_parser.parse(pattern)):
        raise ValueError(
            "The pattern repeats a repetition, e.g. (a+)+ or (\\w+\\s?)*: it can take minutes "
            "on some answers. Write it without nesting."
        )
    return regex


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)


def _nested_repeat(items: object, inside: bool = False) -> bool:
    """Whether a parsed pattern holds an unbounded repeat inside another one."""
    for op, av in items:  # type: ignore[attr-defined]  # re._parser's items, untyped
        if op in _REPEATS:
            _low, high, sub = av
            unbounded = high == sre_constants.MAXREPEAT
            if (unbounded and inside) or _nested_repeat(sub, inside or unbounded):
                return True
            continue
        for child in av if isinstance(av, tuple | list) else (av,):
            for branch in child if isinstance(child, list) else [child]:
                if isinstance(branch, sre_parser.SubPattern) and _nested_repeat(branch, inside):
                    return True
    return False


def _scrubbed(result: Result, token: str) -> Result:
    token = token.strip()
    if len(token) >= 8:
        for secret in {token, quote(token, safe="")}:
            result.error = result.error.replace(secret, "***")
            result.response_body = result.response_body.replace(secret, "***")
    return result


def _storable(result: Result) -> Result:
    """No NUL byte nor lone surrogate left in what the postback log stores of ``result``
    (an error may quote a header or a URL the destination sent)."""
    result.error = storable(result.error)
    result.response_body = storable(result.response_body)
    return result


def _clip(text: str, length: int = 80) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    return str(exc)


def _latin1(value: str) -> str:
    """A header value http.client can write: non-Latin-1 text as its UTF-8 bytes."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("latin-1")
    return value


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _codec(encoding: str | None) -> str:
    """A codec Python knows for a response charset; UTF-8 when it is missing or bogus."""
    try:
        return codecs.lookup(encoding or "utf-8").name
    except LookupError:
        return "utf-8"
