"""Exchange rates in admin: the rate table (edited one by one, or loaded from a CSV or JSON
file all or nothing through ``tracker.currency.rates_load``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import pycountry
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from tracker import currency
from tracker.currency import Action
from tracker.models import ExchangeRate

MAX_UPLOAD_BYTES = 1_000_000


def display_help() -> str:
    """The sentence every rate page shows: which display currency rates are in."""
    code = currency.display_currency()
    return (
        f"The display currency is {code} (setting TRACKER_DISPLAY_CURRENCY): a rate is what 1 "
        f"unit of the currency is worth in {code}, e.g. 1.08 for EUR when 1 EUR = 1.08 {code}. "
        f"{code} itself is always 1. A new rate applies to conversions recorded from now on; "
        "recorded conversions keep the rate they were recorded with."
    )


def currency_name(code: str) -> str:
    found = pycountry.currencies.get(alpha_3=code) if code else None
    return found.name if found is not None else ""


class ExchangeRateForm(forms.ModelForm):
    class Meta:
        model = ExchangeRate
        fields = ["currency", "rate"]
        widgets = {"currency": forms.TextInput(attrs={"size": 4, "placeholder": "EUR"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        code = currency.display_currency()
        fields = self.fields
        fields["currency"].help_text = f"ISO 4217 code, e.g. EUR. Not {code}: the display currency."
        fields["rate"].help_text = (
            f"1 unit of this currency in {code}, e.g. 1.08 for EUR when 1 EUR = 1.08 {code}. "
            "Greater than 0."
        )

    def clean_currency(self) -> str:
        code = (self.cleaned_data.get("currency") or "").strip().upper()
        problem = currency.currency_problem(code)
        if problem:
            raise forms.ValidationError(problem, code="invalid_currency")
        return code

    def clean_rate(self) -> Decimal:
        value, problem = currency.rate_check(self.cleaned_data["rate"])
        if value is None:
            raise forms.ValidationError(problem, code="invalid_rate")
        return value


class RatesFileForm(forms.Form):
    file = forms.FileField(
        help_text="CSV with lines currency,rate (an optional header line currency,rate), or "
        'a JSON object {"EUR": "1.08", "GBP": "1.27"}; UTF-8. At most 1 MB.'
    )
    dry_run = forms.BooleanField(
        label="Only check the file", required=False, help_text="Report, change nothing."
    )

    def clean_file(self) -> bytes:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError("The file is larger than 1 MB: is it a rates file?")
        return upload.read()


@admin.register(ExchangeRate)
class ExchangeRateAdmin(admin.ModelAdmin):
    form = ExchangeRateForm
    change_list_template = "admin/tracker/exchangerate/change_list.html"
    list_display = ("currency", "name", "rate_text", "inverse_text", "updated_at")
    list_display_links = ("currency",)
    search_fields = ("currency",)
    search_help_text = "Currency code, e.g. EUR."
    readonly_fields = ("updated_at",)

    def get_fieldsets(self, request, obj=None):
        fields = ["currency", "rate"] + (["updated_at"] if obj is not None else [])
        return [(None, {"fields": fields, "description": display_help()})]

    @admin.display(description="name")
    def name(self, obj: ExchangeRate) -> str:
        return currency_name(obj.currency)

    @admin.display(description="rate", ordering="rate")
    def rate_text(self, obj: ExchangeRate) -> str:
        return f"1 {obj.currency} = {obj.rate.normalize():f} {currency.display_currency()}"

    @admin.display(description="1 / rate")
    def inverse_text(self, obj: ExchangeRate) -> str:
        try:
            inverse = (1 / obj.rate).quantize(currency.QUANTUM).normalize()
        except (InvalidOperation, ZeroDivisionError):
            return "-"
        return f"1 {currency.display_currency()} = {inverse:f} {obj.currency}"

    def changelist_view(self, request, extra_context=None):
        extra = {
            "display_help": display_help(),
            "may_load": self._may_load(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)

    # --- load from a file ---------------------------------------------------------------

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.load_view)
        # Before the default URLs: their "<path:object_id>/" would catch this one.
        return [path("load/", view, name="{}_{}_load".format(*info)), *super().get_urls()]

    def _may_load(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def load_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a rates file; every line is checked and the file applied all or nothing.
        The page lists each line with what was (or would be) created, updated or refused."""
        if not self._may_load(request):
            raise PermissionDenied
        posted = request.method == "POST"
        form = RatesFileForm(request.POST if posted else None, request.FILES if posted else None)
        result = None
        if posted and form.is_valid():
            data, dry_run = form.cleaned_data["file"], form.cleaned_data["dry_run"]
            result = currency.rates_load(data, dry_run=dry_run)
            if result.applied:
                self._log(request, result)
                level = messages.SUCCESS
            else:
                level = messages.INFO if result.ok else messages.ERROR
            self.message_user(request, result.summary(), level)
        context = {
            **self.admin_site.each_context(request),
            "title": "Load exchange rates from a file",
            "opts": self.opts,
            "form": form,
            "result": result,
            "display_help": display_help(),
            "display_currency": currency.display_currency(),
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/tracker/exchangerate/load.html", context)

    def _log(self, request: HttpRequest, result: currency.RatesLoad) -> None:
        """Admin history entries for the rates a file created or updated."""
        changed = {
            line.currency: line
            for line in result.lines
            if line.action in (Action.CREATED, Action.UPDATED)
        }
        rates = ExchangeRate.objects.filter(currency__in=list(changed))
        for rate in rates:
            line = changed[rate.currency]
            if line.action == Action.CREATED:
                self.log_addition(request, rate, [{"added": {}}])
            else:
                self.log_change(request, rate, f"Loaded from a file (was {line.previous_text}).")
