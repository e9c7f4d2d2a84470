"""The conversion list's action "Export for Google Ads (CSV)": a short form (conversion
names, time zone, statuses), then the upload file as a streamed download. The file format
and which conversions are left out: ``tracker.google_ads``."""

from __future__ import annotations

from collections import Counter
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from tracker import google_ads
from tracker.models import Conversion


class GoogleAdsExportForm(forms.Form):
    """Conversion action names, time zone of the conversion times, statuses exported."""

    names = forms.CharField(
        label="Conversion names",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Purchase\nlead = Lead form"}),
        help_text="The Google Ads conversion action name, exactly: one name for every "
        "conversion type, or one 'type = Name' per line (* = Name for the other types).",
    )
    time_zone = forms.CharField(
        initial=settings.TIME_ZONE,
        help_text="Time zone ID of the conversion times, e.g. Europe/Berlin (the account's).",
    )
    statuses = forms.MultipleChoiceField(
        choices=Conversion.Status.choices,
        initial=[Conversion.Status.APPROVED],
        widget=forms.CheckboxSelectMultiple,
        help_text="Test conversions and conversions without a gclid are always left out.",
    )

    def clean_names(self) -> dict[str, str]:
        try:
            names = google_ads.parse_names(self.cleaned_data["names"].splitlines())
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if not names:
            raise forms.ValidationError("Enter a conversion name.")
        return names

    def clean_time_zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.cleaned_data["time_zone"].strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError("Enter a time zone ID such as Europe/Berlin.") from None


@admin.action(description="Export for Google Ads (CSV)", permissions=["view"])
def export_google_ads(modeladmin: admin.ModelAdmin, request, queryset):
    """The form, then the CSV download; a message (shown on the next page) says how many
    conversions were exported and why others were left out. The selection is read twice:
    once to count, once to stream."""
    form = GoogleAdsExportForm(request.POST if "export" in request.POST else None)
    if form.is_bound and form.is_valid():
        names, zone = form.cleaned_data["names"], form.cleaned_data["time_zone"]
        statuses = form.cleaned_data["statuses"]
        skipped: Counter[str] = Counter()
        lines = google_ads.export_csv(queryset, names, zone, statuses=statuses, skipped=skipped)
        exported = sum(1 for _ in lines) - 2
        level = messages.WARNING if skipped or not exported else messages.INFO
        modeladmin.message_user(request, google_ads.summary(exported, skipped), level)
        response = StreamingHttpResponse(
            google_ads.export_csv(queryset, names, zone, statuses=statuses),
            content_type="text/csv; charset=utf-8",
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="google-ads-{stamp}.csv"'
        return response
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Export conversions for Google Ads",
        "form": form,
        "count": queryset.count(),
        "opts": modeladmin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
    }
    return TemplateResponse(request, "admin/tracker/conversion/export_google_ads.html", context)
