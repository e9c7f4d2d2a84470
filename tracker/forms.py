"""Validation of inbound conversion postbacks (``/cv``)."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal

from django import forms
from django.core.exceptions import ValidationError

from tracker.models import Click, Conversion

PARAM_FIELDS = tuple(f"param{i}" for i in range(1, 21))
PAYOUT_LIMIT = Decimal("1e10")
PAYOUT_QUANTUM = Decimal("0.000001")


class ConversionPostbackForm(forms.Form):
    """The ``/cv`` parameters, per the ClickFlare S2S postback contract.

    ``click_id`` or ``cf_click_id`` (required, a click ID issued here), ``payout`` (decimal,
    |payout| < 1e10, rounded to 6 places), ``txid`` (<= 255 chars), ``ct`` (conversion type,
    <= 64), ``status`` (approved | pending | rejected, default approved), ``payout_currency``
    (ISO 4217), ``param1..param20`` (<= 1000 chars each).

    ``error_code()`` names the first problem: missing_click_id, invalid_click_id,
    unknown_click_id, invalid_payout, invalid_status, invalid_payout_currency...
    """

    click_id = forms.CharField(required=False, max_length=64)
    cf_click_id = forms.CharField(required=False, max_length=64)
    payout = forms.DecimalField(required=False)
    txid = forms.CharField(required=False, max_length=255)
    ct = forms.CharField(required=False, max_length=64)
    status = forms.ChoiceField(required=False, choices=Conversion.Status.choices)
    payout_currency = forms.RegexField(
        required=False,
        regex=r"^[A-Za-z]{3}$",
        error_messages={"invalid": "Use a three-letter ISO 4217 code, e.g. USD."},
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for name in PARAM_FIELDS:
            self.fields[name] = forms.CharField(required=False, max_length=1000)
        self.click: Click | None = None
        self._code = ""

    def clean_payout(self) -> Decimal | None:
        payout = self.cleaned_data.get("payout")
        if payout is None:
            return None
        if abs(payout) >= PAYOUT_LIMIT:
            raise ValidationError("Payout is out of range.")
        return payout.quantize(PAYOUT_QUANTUM, rounding=ROUND_HALF_UP)

    def clean_status(self) -> str:
        return self.cleaned_data.get("status") or Conversion.Status.APPROVED

    def clean_payout_currency(self) -> str:
        return (self.cleaned_data.get("payout_currency") or "").upper()

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
            click_uuid = uuid.UUID(raw)
        except ValueError:
            self._fail("invalid_click_id", f"{raw!r} is not a click ID issued by this tracker.")
        self.click = (
            Click.objects.select_related("campaign", "offer", "traffic_source")
            .prefetch_related("traffic_source__parameters")
            .filter(pk=click_uuid)
            .first()
        )
        if self.click is None:
            self._fail("unknown_click_id", f"No click with ID {click_uuid}.")
        return data

    def _fail(self, code: str, detail: str) -> None:
        self._code = code
        raise ValidationError(detail, code=code)

    def error_code(self) -> str:
        """A short machine code for the first error, e.g. ``invalid_payout``."""
        if self._code:
            return self._code
        field = next(iter(self.errors), "")
        return f"invalid_{field}" if field and field != "__all__" else "invalid_request"

    def error_detail(self) -> str:
        return "; ".join(
            f"{name}: {' '.join(msgs)}" if name != "__all__" else " ".join(msgs)
            for name, msgs in self.errors.items()
        )

    def params(self) -> dict[str, str]:
        return {name: self.cleaned_data[name] for name in PARAM_FIELDS if self.cleaned_data[name]}
