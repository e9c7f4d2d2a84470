"""A postback rule's validation, shared by every screen: the rule form (its checks of
templates, macros, destination kinds, headers, payout currency and success patterns, with the
transport's warnings) and the small helpers the admin's preview and test views and the REST
API both answer with. Screens import from here; this module imports no screen.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.forms.models import construct_instance
from django.utils.html import escape

from campaigns.models import TrafficSource
from campaigns.presets import Preset
from postbacks.models import EventType, PostbackRule
from postbacks.transports import get_transport, kind_fields
from tracker import currency, macros
from tracker.models import Conversion

TEMPLATE_FIELDS = ("url_template", "body_template", "headers_template")
RESPONSE_EXCERPT_CHARS = 2000


def human_seconds(seconds: int | None) -> str:
    """``3600`` -> ``"1 h"``, ``5400`` -> ``"1 h 30 min"``, ``0`` -> ``"none"``."""
    if not seconds:
        return "none"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2])


def destination_host(url_template: str) -> str:
    """The host of a postback URL template, for the list ('' when unusable)."""
    try:
        return urlsplit(url_template.strip()).hostname or ""
    except ValueError:
        return ""


def source_vars(source_ids: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """``{traffic source id: {"name", "vars"}}``: the ``{var:name}`` names each source
    defines (tracked parameters only), for the macro picker and the ``{var:...}`` check."""
    sources = TrafficSource.objects.prefetch_related("parameters").order_by("name")
    if source_ids is not None:
        sources = sources.filter(pk__in=source_ids)
    return {
        str(source.pk): {
            "name": source.name,
            "vars": sorted(p.name for p in source.parameters.all() if p.is_enabled),
        }
        for source in sources[:500]
    }


class PostbackRuleForm(forms.ModelForm):
    statuses = forms.MultipleChoiceField(
        choices=Conversion.Status.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Fire only for conversions in these statuses. None ticked: any status.",
    )
    conversion_types = forms.CharField(
        required=False,
        help_text="Comma-separated conversion types (ct), e.g. lead, sale (any case). "
        "Empty: any type.",
    )

    access_token = forms.CharField(
        label="Access token",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Meta / TikTok: the access token; Telegram: the bot token "
        "(123456:ABC-...); Slack / Discord: the webhook URL (it lets anyone post to the "
        "channel). Stored, never shown again: leave blank to keep the saved one.",
    )
    clear_access_token = forms.BooleanField(label="Remove the saved access token", required=False)
    new_signing_secret = forms.BooleanField(
        label="Generate a new signing secret",
        required=False,
        help_text="Shown once after saving. Replacing a secret keeps the old one signing "
        "too for POSTBACKS_SIGNING_GRACE_HOURS (24 h), so the receiver can switch over.",
    )
    stop_signing = forms.BooleanField(
        label="Stop signing",
        required=False,
        help_text="Drop the signing secret (and any previous one): requests go unsigned.",
    )

    class Meta:
        model = PostbackRule
        fields = [
            "name",
            "event_type",
            "is_active",
            "campaigns",
            "offers",
            "traffic_sources",
            "affiliate_networks",
            "replaces_global",
            "statuses",
            "trigger",
            "conversion_types",
            "rejection_reasons",
            "first_only",
            "delay_seconds",
            "kind",
            "http_method",
            "url_template",
            "body_format",
            "body_template",
            "headers_template",
            "field_mapping",
            "account_id",
            "access_token",
            "api_version",
            "test_event_code",
            "event_names",
            "payout_currency",
            "success_mode",
            "success_pattern",
            "timeout_seconds",
            "max_attempts",
            "retry_base_seconds",
            "disable_after_failures",
        ]
        widgets = {
            # Each kind's fields, labels and signing, from its transport class: the form's
            # script shows the fields of the chosen kind (static/postbacks/rule_form.js).
            "kind": forms.Select(attrs={"data-kinds": json.dumps(kind_fields())}),
            "url_template": forms.Textarea(attrs={"rows": 3, "class": "pb-template"}),
            "body_template": forms.Textarea(attrs={"rows": 6, "class": "pb-template"}),
            "headers_template": forms.Textarea(attrs={"rows": 3, "class": "pb-template"}),
            "field_mapping": forms.Textarea(attrs={"rows": 6, "class": "pb-template"}),
            "event_names": forms.Textarea(attrs={"rows": 2}),
            "success_pattern": forms.TextInput(attrs={"class": "vTextField"}),
            "payout_currency": forms.TextInput(attrs={"size": 4, "placeholder": "EUR"}),
        }
        help_texts = {
            "delay_seconds": "Seconds to wait before the first attempt, 0..604800 (7 days), "
            "e.g. 3600 = 1 h, 86400 = 1 day; for fraud checks. A status change that no longer "
            "matches cancels the deliveries still waiting.",
            "rejection_reasons": "Only for rejected conversions: fire only for these reasons. "
            "None chosen: any reason (or none).",
            "headers_template": "One 'Name: value' per line, macros allowed, e.g. "
            "Authorization: Bearer xyz. Values are sent as they are (control characters "
            "removed).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.validation_warnings: list[str] = []
        if self.instance.pk:
            self.initial["conversion_types"] = ", ".join(self.instance.conversion_types or [])
        if "url_template" in self.fields:
            url = self.fields["url_template"]
            url.help_text = f"{url.help_text} {macros.help_text()}"
        # Admin renders help text as HTML: "&currency=" would show as "¤cy=" and
        # "/c/<campaign key>" would vanish as an unknown tag. Every help text here is plain.
        for field in self.fields.values():
            if field.help_text:
                field.help_text = escape(str(field.help_text))

    def clean_payout_currency(self) -> str:
        code = (self.cleaned_data.get("payout_currency") or "").strip().upper()
        if code and not currency.is_known(code):
            raise forms.ValidationError(
                f"{code} is not an ISO 4217 currency code (e.g. EUR, GBP); leave it blank "
                "to send the payout in the conversion's own currency.",
                code="unknown_currency",
            )
        return code

    def clean_conversion_types(self) -> list[str]:
        raw = self.cleaned_data.get("conversion_types") or ""
        types = list(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
        if any(len(t) > 64 for t in types):
            raise forms.ValidationError("A conversion type has at most 64 characters.")
        return types

    def clean_event_names(self) -> dict[str, str]:
        names = self.cleaned_data.get("event_names") or {}
        if not isinstance(names, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()
        ):
            raise forms.ValidationError(
                'Enter an object of conversion type -> event name, e.g. {"sale": "Purchase"}.'
            )
        return {k.strip().lower(): v.strip() for k, v in names.items()}

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("new_signing_secret") and cleaned.get("stop_signing"):
            self.add_error("stop_signing", "Choose either a new secret or no signing.")
        # The token is never rendered back: a blank entry keeps the saved one.
        if cleaned.get("clear_access_token"):
            cleaned["access_token"] = ""
        elif not cleaned.get("access_token"):
            cleaned["access_token"] = self.instance.access_token or ""
        if not self.errors.get("kind") and cleaned.get("kind"):
            self._validate_destination(cleaned)
        return cleaned

    def known_vars(self) -> set[str] | None:
        """``{var:name}`` names of the traffic sources the rule can fire for: the chosen
        ones, else those of the chosen campaigns (a campaign has one source); None (any)
        when neither limits the sources."""
        sources = self.cleaned_data.get("traffic_sources")
        if sources:
            ids = [s.pk for s in sources]
        else:
            campaigns = self.cleaned_data.get("campaigns")
            if not campaigns:
                return None
            ids = sorted({c.traffic_source_id for c in campaigns})
        return {name for entry in source_vars(ids).values() for name in entry["vars"]}

    def rule_from_data(self) -> PostbackRule:
        """An unsaved copy of the rule with the cleaned values (the instance stays as is)."""
        rule = PostbackRule(pk=self.instance.pk)
        for field in PostbackRule._meta.concrete_fields:
            setattr(rule, field.attname, getattr(self.instance, field.attname))
        return construct_instance(self, rule, fields=self._meta.fields)

    def _validate_destination(self, cleaned: dict[str, Any]) -> None:
        """Errors per field (blocking) and warnings (shown after saving) from the transport."""
        try:
            warnings = get_transport(cleaned["kind"]).validate(
                self.rule_from_data(), known_vars=self.known_vars()
            )
        except ValidationError as exc:
            self._add_errors(exc)
            warnings = []
        self.validation_warnings = list(dict.fromkeys(warnings or []))

    def _update_errors(self, errors: ValidationError) -> None:
        """The model's errors (``full_clean``), less those of a field already in error: its
        value was left out of the instance, so they judge the saved (or empty) value, e.g.
        "Enter the destination URL." after "Unknown macro {extrenalid}"."""
        if hasattr(errors, "error_dict"):
            kept = {
                field: messages
                for field, messages in errors.error_dict.items()
                if field == NON_FIELD_ERRORS or field not in self.errors
            }
            if not kept:
                return
            errors = ValidationError(kept)
        super()._update_errors(errors)  # type: ignore[misc]  # private Form API, not in the stubs

    def _add_errors(self, exc: ValidationError) -> None:
        """Add a ValidationError keyed by model field; keys the form lacks go on top."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)
            return
        for field, errors in exc.error_dict.items():
            key = field if field in self.fields else None
            if key is not None and field in self.errors:
                known = set(self.errors[field])
                errors = [e for e in errors if str(e.message) not in known]
            if errors:
                self.add_error(key if key else NON_FIELD_ERRORS, errors)


def preview_answer(**fields: Any) -> dict[str, Any]:
    """A JSON answer of the preview and test views; errors and warnings said once each."""
    answer: dict[str, Any] = {"errors": [], "warnings": [], **fields}
    answer["errors"] = list(dict.fromkeys(answer["errors"]))
    answer["warnings"] = list(dict.fromkeys(answer["warnings"]))
    return answer


def form_messages(form: forms.BaseForm) -> list[str]:
    """The form's errors as "Label: message" sentences, as ``preview.field_messages``."""
    messages_ = []
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = str(field.label) if field is not None and field.label else "Rule"
        messages_ += [f"{label[:1].upper()}{label[1:]}: {error}" for error in errors]
    return messages_


def describe_conversion(conversion: Conversion | None) -> str:
    """One line naming the conversion whose values a preview or test used."""
    if conversion is None:
        return "Sample values (no real conversion)."
    txid = f", txid {conversion.txid}" if conversion.txid else ""
    kind = conversion.conversion_type or "conversion"
    return (
        f"Conversion #{conversion.pk}: {kind}, {conversion.status}, "
        f"{macros.format_value(conversion.payout)} {conversion.currency}{txid}."
    )


def rule_from_preset(source: TrafficSource, preset: Preset) -> PostbackRule:
    """Create and save the postback rule of ``source``, just made from ``preset``: "<source
    name> postback", the preset's URL and method for approved conversions of this source
    only; inactive while the URL still holds ``REPLACE_WITH_...`` values. Raises
    ValidationError when the preset's URL is refused (the caller's transaction rolls back).
    """
    rule = PostbackRule(
        name=f"{source.name} postback",
        event_type=EventType.CONVERSION,
        statuses=["approved"],
        kind="s2s",
        url_template=preset.postback_url,
        http_method=preset.postback_method,
        preset=preset.key,
        is_active=not preset.to_replace,
    )
    rule.full_clean()
    rule.save(force_insert=True)
    rule.traffic_sources.set([source])
    return rule
