"""Validation of inbound conversion postbacks (``/cv``): shapes only, no database access."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tracker import currency

PARAM_FIELDS = tuple(f"param{i}" for i in range(1, 21))
# |payout| < 1e9 once rounded to 6 places: 15 significant digits, which fit Conversion.payout
# (DECIMAL(16, 6)) and survive SQLite, which stores decimals as 64-bit floats.
PAYOUT_LIMIT = Decimal("1e9")
PAYOUT_RANGE_ERROR = "Payout is out of range (|payout| < 1000000000)."
PAYOUT_QUANTUM = Decimal("0.000001")
# Django's CharField refuses NUL with this code; ours also covers lone surrogates (JSON
# "\ud800" escapes), which PostgreSQL cannot store either.
NUL_CODE = "null_characters_not_allowed"
INVALID_CHARACTERS = "invalid_characters"
# A conversion time may be at most this far ahead of our clock (the network's clock drifts).
TIMESTAMP_AHEAD = timedelta(hours=1)
TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TRUE_TEXTS = ("1", "true", "yes", "on")
FALSE_TEXTS = ("", "0", "false", "no", "off")


def parse_timestamp(text: str) -> datetime:
    """A conversion time from ``text``: ISO 8601 (``2025-10-02T14:30:00+02:00``, or
    ``2025-10-03 09:15:00`` read in ``TIME_ZONE``), or Unix time in seconds (up to 10 digits)
    or milliseconds (13 digits). Aware datetime. Raises ValueError naming the problem:
    unreadable, before 2000, or more than an hour in the future."""
    text = text.strip()
    when: datetime | None
    if text.isdigit() and len(text) in (13, *range(1, 11)):
        seconds = int(text) / 1000 if len(text) == 13 else int(text)
        when = datetime.fromtimestamp(seconds, tz=UTC)
    else:
        try:
            when = parse_datetime(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            when = None
        if when is None:
            raise ValueError(
                f"{text[:40]!r} is not a time: use ISO 8601 (2025-10-02T14:30:00+02:00) or "
                "Unix seconds."
            )
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
    if when < TIMESTAMP_MIN:
        raise ValueError(f"{text[:40]!r} is before 2000.")
    if when > timezone.now() + TIMESTAMP_AHEAD:
        raise ValueError(f"{text[:40]!r} is in the future.")
    return when


def validate_storable(value: str) -> None:
    """Refuse text that a UTF-8 database column cannot store (lone surrogates).

    Raises ValidationError with code ``invalid_characters``.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                "Invalid characters (lone UTF-16 surrogates).", code=INVALID_CHARACTERS
            ) from None


class TextField(forms.CharField):
    """A CharField whose value can be stored as is: no NUL (Django's own validator), no
    lone surrogates."""

    default_validators = [validate_storable]


class ConversionPostbackForm(forms.Form):
    """The ``/cv`` parameters, per the ClickFlare S2S postback contract.

    ``click_id`` or ``cf_click_id`` (required, a UUID; both may be sent if equal),
    ``payout`` (decimal, rounded half-up to 6 places, |payout| < 1e9), ``txid`` (<= 255
    chars), ``ct`` (conversion type, <= 64), ``status`` (approved | pending | rejected |
    refunded, any case, or the network's own values per its status mapping; default
    approved; checked by the view once the network is known), ``rejection_reason`` (a code,
    <= 255), ``payout_currency`` (ISO 4217, any case), ``param1..param20``
    (<= 1000 chars each), ``token`` (the network's security token, checked by the view).
    No value may contain NUL bytes or lone surrogates.

    After ``is_valid()``: ``cleaned_data`` plus ``click_uuid``; on failure ``error_code()``
    names the first problem: ``missing_click_id``, ``invalid_click_id``, ``invalid_payout``,
    ``invalid_payout_currency``, ``invalid_currency``, ``invalid_timestamp``,
    ``invalid_test``, ``invalid_txid``, ``invalid_ct``,
    ``invalid_param<n>``, ``invalid_characters``. Never raises on any input.
    """

    click_id = TextField(required=False, max_length=64)
    cf_click_id = TextField(required=False, max_length=64)
    payout = forms.DecimalField(required=False)
    txid = TextField(required=False, max_length=255)
    ct = TextField(required=False, max_length=64)
    status = TextField(required=False, max_length=64)
    rejection_reason = TextField(required=False, max_length=255)
    payout_currency = TextField(required=False, max_length=16)
    currency = TextField(required=False, max_length=16)
    timestamp = TextField(required=False, max_length=64)
    test = TextField(required=False, max_length=8)
    token = TextField(required=False, max_length=256)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.click_uuid: uuid.UUID | None = None
        self._code = ""

    def _clean_fields(self) -> None:
        """Django's field cleaning without a bound field per field: this form is never
        rendered, and most of its 32 fields are not sent on a given request (building their
        bound fields cost more than all the checks). The value read is the widget's
        (``data.get(name)``, the last one sent); ``clean_<name>`` runs after the field's own
        cleaning, as in Django."""
        for name, field in self.fields.items():
            try:
                self.cleaned_data[name] = field.clean(self.data.get(name))
                clean = getattr(self, f"clean_{name}", None)
                if clean is not None:
                    self.cleaned_data[name] = clean()
            except ValidationError as exc:
                self.add_error(name, exc)

    def clean_payout(self) -> Decimal | None:
        payout = self.cleaned_data.get("payout")
        if payout is None:
            return None
        # Compare before rounding (abs() or quantize of a huge exponent overflow), and after:
        # 999999999.9999995 rounds up to 1e9, past the limit.
        if payout.copy_abs() >= PAYOUT_LIMIT:
            raise ValidationError(PAYOUT_RANGE_ERROR)
        payout = payout.quantize(PAYOUT_QUANTUM, rounding=ROUND_HALF_UP)
        if payout.copy_abs() >= PAYOUT_LIMIT:
            raise ValidationError(PAYOUT_RANGE_ERROR)
        return payout

    def clean_status(self) -> str:
        """The status as sent, stripped: the view maps it per network (``status_for``)."""
        return self.cleaned_data.get("status", "").strip()

    def clean_rejection_reason(self) -> str:
        return self.cleaned_data.get("rejection_reason", "").strip()

    def _currency(self, name: str) -> str:
        code = (self.cleaned_data.get(name) or "").strip().upper()
        if code and not currency.is_known(code):
            raise ValidationError(f"{code[:16]!r} is not an ISO 4217 currency code, e.g. USD.")
        return code

    def clean_payout_currency(self) -> str:
        return self._currency("payout_currency")

    def clean_currency(self) -> str:
        return self._currency("currency")

    def clean_timestamp(self) -> datetime | None:
        text = self.cleaned_data.get("timestamp", "")
        if not text.strip():
            return None
        try:
            return parse_timestamp(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def clean_test(self) -> bool:
        text = self.cleaned_data.get("test", "").strip().lower()
        if text in TRUE_TEXTS:
            return True
        if text in FALSE_TEXTS:
            return False
        raise ValidationError("Use 1 or 0 (true or false).")

    def clean_txid(self) -> str:
        return self.cleaned_data.get("txid", "").strip()

    def clean_ct(self) -> str:
        return self.cleaned_data.get("ct", "").strip()

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        data["payout_currency"] = data.get("payout_currency") or data.get("currency", "")
        ids = {v.strip() for v in (data.get("click_id"), data.get("cf_click_id")) if v}
        if not ids:
            self._fail("missing_click_id", "Send the click ID as click_id or cf_click_id.")
        if len(ids) > 1:
            self._fail("invalid_click_id", "click_id and cf_click_id differ.")
        raw = ids.pop()
        try:
            self.click_uuid = uuid.UUID(raw)
        except ValueError:
            self._fail("invalid_click_id", f"{raw!r} is not a click ID issued by this tracker.")
        return data

    def _fail(self, code: str, detail: str) -> None:
        self._code = code
        raise ValidationError(detail, code=code)

    def error_code(self) -> str:
        """A short machine code for the first error, e.g. ``invalid_payout``."""
        if self._code:
            return self._code
        for errors in self.errors.as_data().values():
            if any(e.code in (NUL_CODE, INVALID_CHARACTERS) for e in errors):
                return INVALID_CHARACTERS
        field = next(iter(self.errors), "")
        return f"invalid_{field}" if field and field != "__all__" else "invalid_request"

    def error_detail(self, sent_as: Mapping[str, str] | None = None) -> str:
        """Every error as one line of text, ``"field: message; ..."``. ``sent_as`` maps our
        field names to the names a network sent them under (its parameter mapping), shown
        as ``"payout (sent as sum): ..."``."""
        sent_as = sent_as or {}

        def label(name: str) -> str:
            return f"{name} (sent as {sent_as[name]})" if name in sent_as else name

        return "; ".join(
            f"{label(name)}: {' '.join(map(str, msgs))}"
            if name != "__all__"
            else " ".join(map(str, msgs))
            for name, msgs in self.errors.items()
        )

    def params(self) -> dict[str, str]:
        """``param1..param20`` that were sent non-empty, by name."""
        return {name: self.cleaned_data[name] for name in PARAM_FIELDS if self.cleaned_data[name]}


class _SharedFields(dict):
    """A form's fields, shared by its instances: Django deep-copies ``base_fields`` for each
    form so that an instance may change its own; this form never does, and copying its 32
    fields cost more than validating a request."""

    def __deepcopy__(self, memo: dict) -> dict:
        return dict(self)


# param1..param20, fields like the declared ones; then shared by every instance.
ConversionPostbackForm.base_fields.update(
    {name: TextField(required=False, max_length=1000) for name in PARAM_FIELDS}
)
ConversionPostbackForm.base_fields = _SharedFields(ConversionPostbackForm.base_fields)
