"""Postback rules in admin: the rule form and its list."""

from django import forms
from django.contrib import admin
from django.utils.html import escape
from django.utils.translation import ngettext

from postbacks import macros
from postbacks.models import PostbackRule
from tracker.models import Conversion


class PostbackRuleForm(forms.ModelForm):
    statuses = forms.MultipleChoiceField(
        choices=Conversion.Status.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Fire only for these conversion statuses. None ticked: any status.",
    )
    conversion_types = forms.CharField(
        required=False,
        help_text="Comma-separated conversion types (ct), e.g. lead, sale. Empty: any type.",
    )

    class Meta:
        model = PostbackRule
        fields = [
            "name",
            "event_type",
            "is_active",
            "traffic_sources",
            "campaigns",
            "offers",
            "affiliate_networks",
            "statuses",
            "conversion_types",
            "delay_seconds",
            "kind",
            "url_template",
            "timeout_seconds",
            "max_attempts",
            "retry_base_seconds",
        ]
        widgets = {"url_template": forms.Textarea(attrs={"rows": 3, "cols": 100})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["conversion_types"] = ", ".join(self.instance.conversion_types)
        # Admin renders help text as HTML: "&currency=" would show as "¤cy=".
        help_text = f"{self.fields['url_template'].help_text} {macros.help_text()}"
        self.fields["url_template"].help_text = escape(help_text)

    def clean_conversion_types(self) -> list[str]:
        raw = self.cleaned_data.get("conversion_types") or ""
        types = [t.strip() for t in raw.split(",") if t.strip()]
        too_long = [t for t in types if len(t) > 64]
        if too_long:
            raise forms.ValidationError("A conversion type has at most 64 characters.")
        return types


@admin.register(PostbackRule)
class PostbackRuleAdmin(admin.ModelAdmin):
    form = PostbackRuleForm
    list_display = ("name", "event_type", "kind", "destination_host", "delay_seconds", "is_active")
    list_filter = ("is_active", "event_type", "kind", "traffic_sources")
    search_fields = ("name", "url_template")
    autocomplete_fields = ("campaigns", "offers", "traffic_sources", "affiliate_networks")
    actions = ["activate", "deactivate"]
    fieldsets = (
        (None, {"fields": ("name", "event_type", "is_active")}),
        (
            "Scope",
            {
                "fields": ("traffic_sources", "campaigns", "offers", "affiliate_networks"),
                "description": "Leave a list empty to match all. With several lists filled, "
                "the event must match one choice in each.",
            },
        ),
        ("Firing conditions", {"fields": ("statuses", "conversion_types", "delay_seconds")}),
        ("Destination", {"fields": ("kind", "url_template", "timeout_seconds")}),
        ("Retries", {"fields": ("max_attempts", "retry_base_seconds")}),
    )

    @admin.display(description="destination")
    def destination_host(self, obj: PostbackRule) -> str:
        return obj.url_template.split("://", 1)[-1].split("/", 1)[0]

    @admin.action(description="Activate selected rules")
    def activate(self, request, queryset):
        count = queryset.update(is_active=True)
        self.message_user(
            request, ngettext("%d rule activated.", "%d rules activated.", count) % count
        )

    @admin.action(description="Deactivate selected rules")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(
            request, ngettext("%d rule deactivated.", "%d rules deactivated.", count) % count
        )
