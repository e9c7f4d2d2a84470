"""Validation of inbound conversion postbacks (``/cv``): shapes only, no database access."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal

from django import forms
from django.core.exceptions import ValidationError

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
    ``invalid_payout_currency``, ``invalid_txid``, ``invalid_ct``,
    ``invalid_param<n>``, ``invalid_characters``. Never raises on any input.
    """

    click_id = TextField(required=False, max_length=64)
    cf_click_id = TextField(required=False, max_length=64)
    payout = forms.DecimalField(required=False)
    txid = TextField(required=False, max_length=255)
    ct = TextField(required=False, max_length=64)
    status = TextField(required=False, max_length=64)
    rejection_reason = TextField(required=False, max_length=255)
    payout_currency = forms.RegexField(
        required=False,
        regex=r"^[A-Za-z]{3}\Z",
        validators=[validate_storable],
        error_messages={"invalid": "Use a three-letter ISO 4217 code, e.g. USD."},
    )
    token = TextField(required=False, max_length=256)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for name in PARAM_FIELDS:
            self.fields[name] = TextField(required=False, max_length=1000)
        self.click_uuid: uuid.UUID | None = None
        self._code = ""

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

    def clean_payout_currency(self) -> str:
        return (self.cleaned_data.get("payout_currency") or "").upper()

    def clean_txid(self) -> str:
        return self.cleaned_data.get("txid", "").strip()

    def clean_ct(self) -> str:
        return self.cleaned_data.get("ct", "").strip()

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
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

    def error_detail(self) -> str:
        """Every error as one line of text, ``"field: message; ..."``."""
        return "; ".join(
            f"{name}: {' '.join(msgs)}" if name != "__all__" else " ".join(msgs)
            for name, msgs in self.errors.items()
        )

    def params(self) -> dict[str, str]:
        """``param1..param20`` that were sent non-empty, by name."""
        return {name: self.cleaned_data[name] for name in PARAM_FIELDS if self.cleaned_data[name]}
