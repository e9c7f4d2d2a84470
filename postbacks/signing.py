"""Standard Webhooks signing (https://www.standardwebhooks.com/, spec:
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
with the ``standardwebhooks`` package: secrets, the three headers of a signed request, and
their verification (outgoing postbacks are signed; the CRM status sync is verified).

A signed request carries ``webhook-id`` (the delivery ID, the same on every attempt),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` +
base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` keyed with the bytes of the secret
(``whsec_`` + base64), one signature per secret, space-separated, so a receiver still
holding the previous secret verifies during a rotation's grace period.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24..64
TOLERANCE_SECONDS = 300  # the spec's timestamp tolerance, either way
MSG_ID_MAX = 200


class SignatureError(ValueError):
    """A request whose signature does not verify. ``code``: ``missing_headers``,
    ``invalid_signature`` (malformed headers, no signature matching any secret) or
    ``stale_timestamp`` (more than ``TOLERANCE_SECONDS`` away from now); the message is a
    sentence safe to answer the caller with (it never reveals the expected signature)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes (50 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def is_valid_secret(value: str) -> bool:
    """Whether ``value`` is a ``whsec_`` secret whose base64 decodes to 24..64 bytes."""
    if not value.startswith(SECRET_PREFIX):
        return False
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except ValueError:
        return False
    return 24 <= len(raw) <= 64


def _utc(at: datetime) -> datetime:
    """``at`` in UTC (a naive time is taken as UTC): the package signs the wall-clock time
    of its argument as if it were UTC, which would sign another second than the header's."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def sign_headers(
    msg_id: str, body: str, keys: Iterable[str], at: datetime | None = None
) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers for
    ``body`` (the exact text sent, "" for a GET), signed with each of ``keys`` in order.

    ``at``: the attempt's time (default now; naive means UTC). ``msg_id`` must not
    contain a dot (a UUID does not). Raises ValueError for a key that is not a valid
    secret (see :func:`is_valid_secret`) or an ``msg_id`` with a dot.
    """
    if "." in msg_id:
        raise ValueError("A webhook-id cannot contain a dot.")
    at = _utc(at or datetime.now(UTC))
    signatures = []
    for key in keys:
        if not is_valid_secret(key):
            raise ValueError("A signing secret is whsec_ followed by base64 of 24..64 bytes.")
        signatures.append(Webhook(key).sign(msg_id, at, body))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def check(
    body: bytes | str,
    headers: Mapping[str, str],
    keys: Iterable[str],
    *,
    now: datetime | None = None,
) -> str:
    """The ``webhook-id`` of a request whose ``headers`` sign ``body`` with one of ``keys``
    (current secret, then the previous one in its grace period).

    ``headers``: any mapping (names in any case). The timestamp must be integer Unix
    seconds within ``TOLERANCE_SECONDS`` of ``now``; the signature header may hold several
    space-separated signatures (entries other than ``v1,`` are skipped); each is compared
    in constant time. Raises :class:`SignatureError` otherwise, never anything else.
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "").strip()
    stamp = lowered.get("webhook-timestamp", "").strip()
    sent = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and sent.strip()):
        raise SignatureError(
            "missing_headers",
            "Sign the request: webhook-id, webhook-timestamp and webhook-signature headers "
            "(Standard Webhooks).",
        )
    if "." in msg_id or len(msg_id) > MSG_ID_MAX or not msg_id.isprintable():
        raise SignatureError(
            "invalid_signature",
            f"webhook-id must be printable, without dots, at most {MSG_ID_MAX} characters.",
        )
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("invalid_signature", "webhook-timestamp must be Unix seconds.")
    moment = now or datetime.now(UTC)
    if abs(int(stamp) - moment.timestamp()) > TOLERANCE_SECONDS:
        raise SignatureError(
            "stale_timestamp",
            f"webhook-timestamp {stamp} is more than {TOLERANCE_SECONDS} seconds away from "
            f"our clock ({int(moment.timestamp())}): sign each request when sending it.",
        )
    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("invalid_signature", "The body is not UTF-8.") from None
    passed = []
    for entry in sent.split():
        version, _, signature = entry.partition(",")
        if version == "v1":
            try:
                passed.append(base64.b64decode(signature, validate=True))
            except (binascii.Error, ValueError):
                continue
    signed_at = datetime.fromtimestamp(int(stamp), UTC)
    for key in keys:
        if not is_valid_secret(key):
            continue
        expected = base64.b64decode(Webhook(key).sign(msg_id, signed_at, text)[3:])
        # Every candidate is compared (no early exit on the first one): constant time.
        if any([hmac.compare_digest(expected, candidate) for candidate in passed]):
            return msg_id
    raise SignatureError(
        "invalid_signature", "No v1 signature in webhook-signature matches the secret."
    )


def verify(body: bytes | str, headers: Mapping[str, str], keys: Iterable[str]) -> bool:
    """Whether ``headers`` sign ``body`` with any of ``keys`` within the spec's 5-minute
    timestamp tolerance (see :func:`check`). Never raises for any input."""
    try:
        check(body, headers, keys)
    except SignatureError:
        return False
    return True
