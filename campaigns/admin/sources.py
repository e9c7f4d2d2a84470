"""Traffic sources in admin, with their presets (a source and its postback rule in one step)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from campaigns import presets
from campaigns.models import (
    TrafficSource,
    TrafficSourceParameter,
)
from postbacks.models import PostbackRule

RULE_PERMISSION = "postbacks.add_postbackrule"


class TrafficSourceParameterInline(admin.TabularInline):
    model = TrafficSourceParameter
    extra = 0
    max_num = 10
    fields = ("slot", "name", "param", "placeholder", "is_enabled")


class PresetListFilter(admin.SimpleListFilter):
    """The presets traffic sources were made from: only values in use, by preset name."""

    title = "preset"
    parameter_name = "preset"
    NONE = "_none"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        keys = TrafficSource.objects.order_by().values_list("preset", flat=True).distinct()
        found = [(key or self.NONE, _preset_name(key)) for key in keys]
        return sorted(found, key=lambda pair: (pair[0] == self.NONE, pair[1].lower()))

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(preset="" if value == self.NONE else value)


def _preset_name(key: str) -> str:
    if not key:
        return "None (set up by hand)"
    preset = presets.PRESETS.get(key)
    return preset.name if preset else f"{key} (unknown preset)"


class PresetForm(forms.Form):
    """The "add from preset" form: a plain radio list, usable without JavaScript."""

    preset = forms.ChoiceField(
        choices=presets.choices,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose a preset."},
    )
    name = forms.CharField(
        required=False,
        max_length=TrafficSource._meta.get_field("name").max_length,
        help_text='Optional. Default: the preset\'s name; " (2)", " (3)"... is appended when '
        "a traffic source already has the name.",
    )
    create_rule = forms.BooleanField(
        label="Create its postback rule",
        required=False,
        initial=True,
        help_text="For presets with an S2S postback URL: a rule firing it for approved "
        "conversions of this traffic source.",
    )


@admin.register(TrafficSource)
class TrafficSourceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "external_id_param",
        "external_id_placeholder",
        "preset_name",
        "created_at",
    )
    list_filter = (PresetListFilter,)
    search_fields = ("name",)
    readonly_fields = ("preset_info",)
    inlines = [TrafficSourceParameterInline]
    fieldsets = (
        (None, {"fields": ("name",)}),
        ("Preset", {"fields": ("preset_info",)}),
        (
            "External ID (the traffic source's click ID)",
            {
                "fields": ("external_id_param", "external_id_placeholder"),
                "description": "Postback rules send it back with the {externalid} macro. "
                "Without it the traffic source cannot register the conversion.",
            },
        ),
    )

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.add_from_preset_view)
        # Before the default URLs: their "<path:object_id>/" would catch this one.
        return [
            path("add-from-preset/", view, name="{}_{}_add_from_preset".format(*info)),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args: object) -> str:
        return reverse(f"{self.admin_site.name}:{name}", args=args)

    @admin.display(description="preset", ordering="preset")
    def preset_name(self, obj: TrafficSource) -> str:
        return _preset_name(obj.preset) if obj.preset else "-"

    @admin.display(description="preset")
    def preset_info(self, obj: TrafficSource) -> str:
        if obj.pk is None:
            return format_html(
                'None. To start from a real traffic source\'s settings, <a href="{}">add it '
                "from a preset</a> instead.",
                self._url("campaigns_trafficsource_add_from_preset"),
            )
        if not obj.preset:
            return "None (set up by hand)."
        preset = presets.PRESETS.get(obj.preset)
        if preset is None:
            return f"{obj.preset} (no longer a known preset)."
        rules = PostbackRule.objects.filter(traffic_sources=obj).order_by("name")
        rule_links = format_html_join(
            ", ",
            '<a href="{}">{}</a>{}',
            (
                (
                    self._url("postbacks_postbackrule_change", rule.pk),
                    rule.name,
                    "" if rule.is_active else " (inactive)",
                )
                for rule in rules
            ),
        )
        return format_html(
            '<strong>{}</strong>: {}<br>Documentation: <a href="{}" rel="noopener '
            'noreferrer" target="_blank">{}</a>, from {}.<br>Postback: {}<br>Rules for this '
            "source: {}",
            preset.name,
            preset.notes,
            preset.docs_url,
            preset.docs_url,
            preset.evidence_label,
            format_html("<code>{}</code>", preset.postback_url)
            if preset.postback_url
            else "none (see the notes)",
            rule_links or "none",
        )

    def add_from_preset_view(self, request: HttpRequest) -> HttpResponse:
        """Create a traffic source (and its postback rule) from a preset."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        may_add_rule = request.user.has_perm(RULE_PERMISSION)
        chosen = request.GET.get("preset")
        initial = {"preset": chosen} if chosen in presets.PRESETS else {}
        form = PresetForm(request.POST if request.method == "POST" else None, initial=initial)
        if not may_add_rule:
            del form.fields["create_rule"]
        if request.method == "POST" and form.is_valid():
            key = form.cleaned_data["preset"]
            create_rule = may_add_rule and form.cleaned_data["create_rule"]
            source, rule = presets.source_from_preset(
                key, name=form.cleaned_data["name"], create_rule=create_rule
            )
            self.log_addition(request, source, [{"added": {}}])
            if rule is not None:
                self.log_addition(request, rule, [{"added": {}}])
            level = messages.WARNING if rule and not rule.is_active else messages.SUCCESS
            self.message_user(request, self._created_message(source, rule, may_add_rule), level)
            return HttpResponseRedirect(self._url("campaigns_trafficsource_change", source.pk))
        selected = form["preset"].value() if form.is_bound else initial.get("preset")
        groups: dict[str, list[presets.Preset]] = {}
        for preset in presets.PRESETS.values():
            groups.setdefault(preset.category, []).append(preset)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add traffic source from a preset",
            "opts": self.opts,
            "form": form,
            "groups": groups,
            "selected": selected,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(
            request, "admin/campaigns/trafficsource/add_from_preset.html", context
        )

    def _created_message(
        self, source: TrafficSource, rule: PostbackRule | None, may_add_rule: bool
    ) -> str:
        preset = presets.get(source.preset)
        count = len(preset.parameters)
        text = format_html(
            "Traffic source “{}” created from the {} preset with {} custom variable{}.",
            source.name,
            preset.name,
            count,
            "" if count == 1 else "s",
        )
        if rule is not None:
            link = format_html(
                '<a href="{}">{}</a>',
                self._url("postbacks_postbackrule_change", rule.pk),
                rule.name,
            )
            if rule.is_active:
                return format_html("{} Postback rule {} created and active.", text, link)
            return format_html(
                "{} Postback rule {} created <strong>inactive</strong>: replace {} in its URL "
                "with your account's values, then activate it.",
                text,
                link,
                ", ".join(preset.to_replace),
            )
        if preset.postback_url and not may_add_rule:
            return format_html(
                "{} No postback rule was created: you may not add postback rules.", text
            )
        if preset.postback_url:
            return format_html("{} No postback rule was created, as asked.", text)
        return format_html("{} This preset has no S2S postback: see its notes.", text)
