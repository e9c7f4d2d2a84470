"""The forms of the conversion admin: a manual conversion (through the one inbound door,
``tracker.ingest``), a correction of recorded values, a status change."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from tracker import currency as currencies
from tracker import ingest, services
from tracker.forms import PARAM_FIELDS, PAYOUT_LIMIT, PAYOUT_QUANTUM, validate_storable
from tracker.models import (
    Conversion,
)

# What a correction may change; the status has its own flow (Change status).
EDITABLE_FIELDS = ("payout", "currency", "txid", "conversion_type", "params")


class ConversionStatusForm(forms.Form):
    """The admin's status change: new status, rejection reason (for rejected), a note."""

    status = forms.ChoiceField(choices=Conversion.Status.choices)
    rejection_reason = forms.CharField(
        required=False,
        max_length=255,
        help_text="For rejected: a code from Rejection reasons (others are kept, flagged).",
    )
    note = forms.CharField(
        required=True,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why: kept with the change in the conversion's history.",
    )


class ConversionAddForm(forms.Form):
    """A conversion entered by hand; registered by :func:`tracker.ingest.conversion_ingest`
    (channel admin) like a postback: validated, deduplicated, fired, logged."""

    click_id = forms.CharField(
        label="Click ID", max_length=64, help_text="The click ID (UUID) the conversion is for."
    )
    payout = forms.CharField(required=False, max_length=64, help_text="Blank: the offer's payout.")
    currency = forms.CharField(
        required=False,
        max_length=16,
        help_text="ISO 4217, e.g. USD. Blank: the offer's currency.",
    )
    txid = forms.CharField(
        label="Transaction ID",
        required=False,
        max_length=255,
        help_text="A repeat of a click and transaction ID is a duplicate (or a status change).",
    )
    conversion_type = forms.CharField(
        required=False, max_length=64, help_text="ct: lead, sale, upsell..."
    )
    status = forms.ChoiceField(choices=Conversion.Status.choices, initial="approved")
    rejection_reason = forms.CharField(
        required=False, max_length=255, help_text="For rejected: a rejection reason code."
    )
    timestamp = forms.CharField(
        label="Conversion time",
        required=False,
        max_length=64,
        help_text="ISO 8601 (2025-10-02T14:30:00+02:00; without an offset in the server's "
        "time zone) or Unix seconds. Blank: now.",
    )
    is_test = forms.BooleanField(
        label="Test conversion",
        required=False,
        help_text="Its postbacks are sent marked as test and it is left out of the dashboard: "
        "use it to send a test conversion through the rules.",
    )

    # The ingest's error codes, by the field they concern.
    FIELD_FOR_CODE = {
        "missing_click_id": "click_id",
        "invalid_click_id": "click_id",
        "unknown_click_id": "click_id",
        "invalid_payout": "payout",
        "invalid_payout_currency": "currency",
        "invalid_currency": "currency",
        "invalid_txid": "txid",
        "invalid_ct": "conversion_type",
        "invalid_status": "status",
        "invalid_rejection_reason": "rejection_reason",
        "invalid_timestamp": "timestamp",
        "invalid_test": "is_test",
    }
    # The ingest's parameter names in its error details ("payout: Enter a number.").
    PARAM_FOR_FIELD = {
        "click_id": "click_id",
        "payout": "payout",
        "currency": "payout_currency",
        "txid": "txid",
        "conversion_type": "ct",
        "status": "status",
        "rejection_reason": "rejection_reason",
        "timestamp": "timestamp",
        "is_test": "test",
    }

    def ingest_data(self) -> dict[str, str]:
        """The form as ``conversion_ingest`` parameters."""
        data = self.cleaned_data
        return {
            "click_id": data["click_id"],
            "payout": data["payout"],
            "payout_currency": data["currency"],
            "txid": data["txid"],
            "ct": data["conversion_type"],
            "status": data["status"],
            "rejection_reason": data["rejection_reason"],
            "timestamp": data["timestamp"],
            "test": "1" if data["is_test"] else "0",
        }

    def add_refusal(self, result: ingest.Result) -> None:
        """Show a refusal of ``conversion_ingest`` on the field it concerns."""
        code = result.body.get("error", "")
        detail = str(result.body.get("detail", "")) or code
        name = self.FIELD_FOR_CODE.get(code)
        if name is not None:
            prefix = f"{self.PARAM_FOR_FIELD[name]}: "
            detail = detail.removeprefix(prefix)
        self.add_error(name, ValidationError(detail, code=code or "invalid"))


class ConversionEditForm(forms.ModelForm):
    """A correction: payout, currency, txid, conversion type, params. Keeps the dedup key in
    step with the txid and type, and refuses one another conversion of the click has."""

    class Meta:
        model = Conversion
        fields = EDITABLE_FIELDS
        help_texts = {
            "payout": "Corrected payout; its display-currency amount is recomputed.",
            "txid": "Transaction ID; a later postback with it is a repeat of this conversion.",
            "params": 'param1..param20 as a JSON object, e.g. {"param1": "a@b.example"}.',
        }

    def clean_payout(self):
        payout = self.cleaned_data.get("payout")
        if payout is None:
            raise ValidationError("Enter a payout (0 for none).")
        payout = payout.quantize(PAYOUT_QUANTUM)
        if payout.copy_abs() >= PAYOUT_LIMIT:
            raise ValidationError("Payout is out of range (|payout| < 1000000000).")
        return payout

    def clean_currency(self) -> str:
        code = (self.cleaned_data.get("currency") or "").strip().upper()
        if not currencies.is_known(code):
            raise ValidationError(f"{code[:16]!r} is not an ISO 4217 currency code, e.g. USD.")
        return code

    def clean_txid(self) -> str:
        txid = (self.cleaned_data.get("txid") or "").strip()
        validate_storable(txid)
        return txid

    def clean_conversion_type(self) -> str:
        conversion_type = (self.cleaned_data.get("conversion_type") or "").strip()
        validate_storable(conversion_type)
        return conversion_type

    def clean_params(self) -> dict:
        params = self.cleaned_data.get("params")
        if params in (None, ""):
            return {}
        if not isinstance(params, dict):
            raise ValidationError('A JSON object, e.g. {"param1": "value"}.')
        unknown = sorted(set(params) - set(PARAM_FIELDS))
        if unknown:
            raise ValidationError(f"Only param1..param20; not {', '.join(unknown[:5])}.")
        for name, value in params.items():
            if not isinstance(value, str) or len(value) > 1000:
                raise ValidationError(f"{name}: a text of at most 1000 characters.")
            validate_storable(value)
        return params

    def clean(self):
        super().clean()
        data = self.cleaned_data
        instance = self.instance
        if self.errors or not {"txid", "conversion_type"} & set(self.changed_data):
            self.dedup_key = instance.dedup_key
            return data
        txid, conversion_type = data["txid"], data["conversion_type"]
        if txid:
            key = services.dedup_key(txid)
        elif instance.dedup_key.startswith("m:"):
            key = instance.dedup_key  # already one of several without a txid
        else:
            key = services.dedup_key(
                "", conversion_type, several=ingest.allows_several(conversion_type)
            )
        other = (
            Conversion.objects.filter(click_id=instance.click_id, dedup_key=key)
            .exclude(pk=instance.pk)
            .values_list("pk", flat=True)
            .first()
        )
        if other is not None:
            field = "txid" if txid else "conversion_type"
            what = "transaction ID" if txid else "conversion type (and no transaction ID)"
            self.add_error(field, f"Conversion #{other} of this click already has this {what}.")
        self.dedup_key = key
        return data
