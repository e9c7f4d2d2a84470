"""Admin for traffic sources (with presets), affiliate networks (with presets and their
postback URL), offers, landers and campaigns."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from campaigns import network_presets, presets
from campaigns.mapping import ParamMapField, StatusMapField
from campaigns.models import (
    AffiliateNetwork,
    Campaign,
    CampaignOffer,
    Lander,
    Offer,
    TrafficSource,
    TrafficSourceParameter,
    new_network_key,
    new_postback_token,
)
from postbacks import macros
from postbacks.masking import MASK
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


class AffiliateNetworkForm(forms.ModelForm):
    key = forms.SlugField(
        label="Postback URL key",
        required=False,
        max_length=AffiliateNetwork._meta.get_field("key").max_length,
        help_text="Names the network in its postback URL /cv/&lt;key&gt;: letters, digits, - "
        "and _. Leave the generated one (blank makes a new one). Changing it breaks the "
        "postback URL configured at the network.",
    )
    preset = forms.ChoiceField(
        label="Preset",
        required=False,
        choices=(),
        help_text="Fills the postback URL below with this network's macros for the click ID, "
        "payout, transaction ID, status and currency, from its documentation (official) or a "
        "tracker's (third-party: verify). When the network documents its own status values "
        "(Affise: 1, 2, 3, 5) and the status mapping is empty, the mapping is filled too. "
        "None: the URL shows REPLACE_WITH_... placeholders to replace with the network's "
        "macros.",
    )
    status_map = StatusMapField(
        label="Status mapping",
        required=False,
        help_text="One line per status value the network sends: <code>their value = our "
        "status</code>, our status being approved, pending, rejected or refunded (any case). "
        "For example <code>1 = approved</code>, <code>0 = rejected</code>, <code>2 = "
        "pending</code>, <code>chargeback = refunded</code>. Affise sends 1 approved, 2 "
        "pending, 3 declined and 5 hold: <code>3 = rejected</code>, <code>5 = pending</code>. "
        "Values not listed are read as our own statuses (any case). Their values are matched "
        "in any case.",
    )
    param_map = ParamMapField(
        label="Parameter mapping",
        required=False,
        help_text="Only for a network that cannot use our parameter names: one whose postback "
        "format is fixed (it sends its own names, e.g. a JSON or form POST with "
        "<code>transaction_id</code> and <code>state</code>) instead of filling the URL "
        "above. One line per /cv parameter it sends under another name: <code>our name = "
        "their name</code>, e.g. <code>txid = transaction_id</code>, <code>payout = "
        "sum</code>, <code>status = state</code>, <code>rejection_reason = reason</code>. Our "
        "names: click_id, txid, payout, payout_currency, ct, status, rejection_reason, "
        "param1..param20. Our names keep working. A network that fills our postback URL "
        "needs no mapping.",
    )

    class Meta:
        model = AffiliateNetwork
        fields = (
            "name",
            "key",
            "preset",
            "notes",
            "response_body",
            "accept_duplicates",
            "postback_token",
            "allowed_ips",
            "status_map",
            "param_map",
        )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.status_map_from_preset: network_presets.NetworkPreset | None = None
        choices = [("", "None: REPLACE_WITH_... placeholders")]
        choices += [
            (key, f"{name} ({network_presets.PRESETS[key].evidence})")
            for key, name in network_presets.choices()
        ]
        current = self.instance.preset
        if current and current not in network_presets.PRESETS:
            choices.append((current, f"{current} (no longer a known preset)"))
        self.fields["preset"].choices = choices

    def clean_key(self) -> str:
        key = self.cleaned_data.get("key") or ""
        return key or self.instance.key or new_network_key()

    def clean(self) -> dict:
        cleaned = super().clean()
        preset = network_presets.PRESETS.get(cleaned.get("preset") or "")
        if (
            preset is not None
            and preset.status_map
            and "status_map" in cleaned
            and not cleaned["status_map"]
        ):
            cleaned["status_map"] = dict(preset.status_map)
            self.status_map_from_preset = preset
        return cleaned


def _copyable(element_id: str, text: str) -> str:
    """``text`` in a ``<code>`` with a Copy button (see copy_script.html)."""
    return format_html(
        '<code id="{}" class="postback-url">{}</code> <button type="button" class="button '
        'postback-copy" data-copy="{}">Copy</button>',
        element_id,
        text,
        element_id,
    )


@admin.register(AffiliateNetwork)
class AffiliateNetworkAdmin(admin.ModelAdmin):
    form = AffiliateNetworkForm
    # The security token is a secret: shown only on the change form, never in lists.
    list_display = (
        "name",
        "preset_name",
        "postback_url_list",
        "token_required",
        "ip_allowlist",
        "created_at",
    )
    search_fields = ("name", "key")
    actions = ["generate_token"]
    readonly_fields = (
        "postback_url_field",
        "preset_info",
        "postback_url_masked",
        "postback_token_masked",
    )
    # The read-only page (no change permission) never shows the security token.
    MASKED_DISPLAY = {
        "postback_url_field": "postback_url_masked",
        "postback_token": "postback_token_masked",
    }
    fieldsets = (
        (None, {"fields": ("name", "notes")}),
        (
            "Postback URL for this network",
            {
                "fields": ("preset", "postback_url_field", "preset_info", "key"),
                "description": "What to paste into the network as its conversion postback "
                "URL (S2S), and how to pass our click ID in the offer URL.",
            },
        ),
        (
            "Answers and duplicates (/cv/<key>)",
            {"fields": ("response_body", "accept_duplicates")},
        ),
        (
            "Conversion postback security (/cv)",
            {
                "fields": ("postback_token", "allowed_ips"),
                "description": "Both are optional and checked for the network of the click's "
                "offer. Rejected postbacks answer 403 and are kept in the inbound request log.",
            },
        ),
        (
            "Status and parameter names (/cv)",
            {
                "fields": ("status_map", "param_map"),
                "description": "For networks that send their own status values or parameter "
                "names in the conversion postback.",
            },
        ),
    )

    def get_fieldsets(self, request: HttpRequest, obj: AffiliateNetwork | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fieldsets = [
                (name, {**opts, "fields": [self.MASKED_DISPLAY.get(f, f) for f in opts["fields"]]})
                for name, opts in fieldsets
            ]
        return fieldsets

    @admin.display(description="postback URL for this network")
    def postback_url_masked(self, obj: AffiliateNetwork) -> str:
        return format_html(
            '<code class="postback-url">{}</code>', obj.postback_url(show_token=False)
        )

    @admin.display(description="postback token")
    def postback_token_masked(self, obj: AffiliateNetwork) -> str:
        return MASK if obj.postback_token else "-"

    @admin.display(description="preset", ordering="preset")
    def preset_name(self, obj: AffiliateNetwork) -> str:
        preset = obj.network_preset
        return preset.name if preset else (f"{obj.preset} (unknown)" if obj.preset else "-")

    @admin.display(description="postback URL for this network")
    def postback_url_list(self, obj: AffiliateNetwork) -> str:
        if obj.postback_token:
            return format_html(
                '<code class="postback-url">{}</code><br><span class="help">The token is '
                "masked here: copy the URL from the network's page.</span>",
                obj.postback_url(show_token=False),
            )
        return _copyable(f"postback-url-{obj.pk}", obj.postback_url())

    @admin.display(description="postback URL for this network")
    def postback_url_field(self, obj: AffiliateNetwork) -> str:
        """The URL with a Copy button; the change form's script rebuilds it as the preset,
        key and token fields change (data-* attributes: the pieces of the URL)."""
        base = settings.TRACKER_BASE_URL.rstrip("/")
        queries = {"": network_presets.postback_params(None)}
        queries.update(
            {key: network_presets.postback_params(p) for key, p in network_presets.PRESETS.items()}
        )
        queries = {
            key: "&".join(f"{name}={value}" for name, value in pairs)
            for key, pairs in queries.items()
        }
        preset = obj.network_preset
        to_replace = [
            value
            for _, value in network_presets.postback_params(preset)
            if "REPLACE_WITH_" in value
        ]
        return format_html(
            '<div class="network-postback" data-base="{}/cv/" data-queries="{}">{}</div>'
            '<div class="help">{}Paste it into the network as its conversion postback (S2S) '
            "URL. The values are the network's macros, replaced by the network; parameters "
            "its preset has no macro for are left out. Replace each REPLACE_WITH_... with the "
            "network's macro, or remove the parameter. With a security token the URL carries "
            "it (&amp;token=...): keep it out of shared screenshots. A macro the network "
            "leaves unfilled arrives as written and /cv refuses it (e.g. 400 invalid_payout): "
            "check the inbound request log after the first conversion.</div>",
            base,
            json.dumps(queries),
            _copyable("postback-url", obj.postback_url()),
            format_html("<strong>Still to replace: {}.</strong> ", ", ".join(to_replace))
            if to_replace
            else "",
        )

    @admin.display(description="preset details")
    def preset_info(self, obj: AffiliateNetwork) -> str:
        preset = obj.network_preset
        if preset is None:
            return "No preset: the URL's macros are up to you (see the network's postback docs)."
        macros = format_html_join(
            ", ",
            "{}: <code>{}</code> ({})",
            ((m.param, m.macro, m.evidence) for m in preset.macros),
        )
        offer = (
            format_html(
                "Offer URL: put our click ID in <code>{}</code>, e.g. <code>{}</code>.",
                preset.offer_param,
                preset.offer_url_example,
            )
            if preset.offer_param
            else "Offer URL: the parameter for our click ID is not documented; put "
            "{click_id} in the sub-ID parameter whose macro the postback URL uses."
        )
        return format_html(
            '<strong>{}</strong>, from {}: <a href="{}" rel="noopener noreferrer" '
            'target="_blank">{}</a><br>Macros: {}<br>{}<br>{}',
            preset.name,
            preset.evidence_label,
            preset.docs_url,
            preset.docs_url,
            macros,
            offer,
            preset.notes,
        )

    def save_model(
        self, request: HttpRequest, obj: AffiliateNetwork, form: forms.Form, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        preset = getattr(form, "status_map_from_preset", None)
        if preset is not None:
            self.message_user(
                request,
                f"Status mapping filled from the {preset.name} preset: "
                + ", ".join(f"{k} = {v}" for k, v in preset.status_map.items())
                + ".",
                messages.INFO,
            )

    @admin.display(description="token required", boolean=True)
    def token_required(self, obj: AffiliateNetwork) -> bool:
        return bool(obj.postback_token)

    @admin.display(description="IP allowlist", boolean=True)
    def ip_allowlist(self, obj: AffiliateNetwork) -> bool:
        return bool(obj.allowed_ips.strip())

    @admin.action(description="Generate a new security token", permissions=["change"])
    def generate_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        # save() rather than update(): the signals clear the per-process campaign cache.
        for network in queryset:
            network.postback_token = new_postback_token()
            network.save(update_fields=["postback_token"])
        self.message_user(
            request,
            f"New token set on {len(queryset)} network(s): open each network to copy it into "
            "its postback URL; the old token no longer works.",
            messages.WARNING,
        )


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ("name", "affiliate_network", "payout", "currency", "payout_mode", "is_active")
    list_filter = ("payout_mode", "is_active", "affiliate_network")
    search_fields = ("name", "url")
    list_select_related = ("affiliate_network",)


def _lp_click_url() -> str:
    return f"{settings.TRACKER_BASE_URL.rstrip('/')}/lp/click"


class LanderForm(forms.ModelForm):
    class Meta:
        model = Lander
        fields = ("name", "url", "is_active")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if "url" not in self.fields:  # a read-only page (view permission only)
            return
        self.fields["url"].help_text = format_html(
            "Where visitors land first, with <code>{{click_id}}</code> where the page expects "
            "our click ID, e.g. <code>https://lander.example/?cid={{click_id}}</code>; other "
            "click macros work too (<code>{{externalid}}</code>, <code>{{var1}}</code>...). "
            "The page's call-to-action links to <code>{}?click_id=</code>&lt;the click ID&gt;, "
            "or to plain <code>{}</code> (the click-ID cookie is read then), which sends the "
            "visitor on to the offer.",
            _lp_click_url(),
            _lp_click_url(),
        )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        errors, _warnings = macros.validate(url, context="url")
        if errors:
            raise ValidationError(errors)
        return url


@admin.register(Lander)
class LanderAdmin(admin.ModelAdmin):
    form = LanderForm
    list_display = ("name", "url_code", "is_active", "campaign_count", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "url")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(campaign_count=Count("campaigns"))

    @admin.display(description="lander URL", ordering="url")
    def url_code(self, obj: Lander) -> str:
        return format_html("<code>{}</code>", obj.url)

    @admin.display(description="campaigns", ordering="campaign_count")
    def campaign_count(self, obj: Lander) -> int:
        return obj.campaign_count


class CampaignOfferInline(admin.TabularInline):
    model = CampaignOffer
    extra = 1
    autocomplete_fields = ("offer",)


class CampaignForm(forms.ModelForm):
    fallback_url = forms.URLField(
        label="Fallback URL",
        required=False,
        max_length=Campaign._meta.get_field("fallback_url").max_length,
        assume_scheme="https",
    )

    class Meta:
        model = Campaign
        fields = ("name", "traffic_source", "key", "is_active", "lander", "fallback_url")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # A read-only page (view permission only) builds the form without its fields.
        self.set_help_text(
            "lander",
            format_html(
                "Optional. With a lander, the tracking URL records the click (offer chosen as "
                "usual) and sends the visitor to the lander with the click ID filled in; the "
                "lander's call-to-action links to <code>{}</code>, which sends the visitor on to "
                "the click's offer. An inactive lander is skipped: visitors go straight to the "
                "offer.",
                _lp_click_url(),
            ),
        )
        self.set_help_text(
            "is_active",
            "Untick to pause: clicks are no longer recorded, visitors go to the fallback URL "
            "(or get 404 unknown_campaign without one).",
        )
        self.set_help_text(
            "fallback_url",
            "Where visitors go while the campaign is paused or has no active offer (and from "
            "a lander whose click cannot be found), e.g. your own site. Blank: 404 while "
            "paused, 503 no_offer without an active offer.",
        )

    def set_help_text(self, name: str, text: str) -> None:
        if name in self.fields:
            self.fields[name].help_text = text


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ("name", "key", "traffic_source", "state", "lander", "tracking_link")
    list_filter = (("is_active", admin.BooleanFieldListFilter), "traffic_source", "lander")
    search_fields = ("name", "key")
    list_select_related = ("traffic_source", "lander")
    readonly_fields = ("tracking_link",)
    fieldsets = (
        (None, {"fields": ("name", "traffic_source", "key", "tracking_link")}),
        ("Visitors' path", {"fields": ("is_active", "lander", "fallback_url")}),
    )
    inlines = [CampaignOfferInline]
    actions = ["pause", "resume"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("traffic_source__parameters")

    @admin.display(description="tracking URL")
    def tracking_link(self, obj: Campaign) -> str:
        if not obj.pk:
            return "Shown once the campaign is saved."
        return format_html("<code>{}</code>", obj.tracking_url())

    @admin.display(description="state", ordering="is_active")
    def state(self, obj: Campaign) -> str:
        if obj.is_active:
            return "Active"
        if obj.fallback_url:
            return format_html(
                '<strong class="campaign-paused">Paused</strong>: visitors go to <code>{}</code>',
                obj.fallback_url,
            )
        return mark_safe(
            '<strong class="campaign-paused">Paused</strong>: visitors get 404 (no fallback URL)'
        )

    def save_model(
        self, request: HttpRequest, obj: Campaign, form: forms.Form, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if not obj.is_active and not obj.fallback_url:
            self.message_user(
                request,
                f"“{obj}” is paused without a fallback URL: its visitors get 404.",
                messages.WARNING,
            )
        if obj.lander_id and not obj.lander.is_active:
            self.message_user(
                request,
                f"The lander “{obj.lander}” is inactive: visitors go straight to the offer.",
                messages.WARNING,
            )

    @admin.action(description="Pause selected campaigns", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Resume selected campaigns", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request: HttpRequest, queryset: QuerySet, *, active: bool) -> None:
        # save() rather than update(): the signals clear the per-process campaign cache.
        changed = [campaign for campaign in queryset if campaign.is_active != active]
        for campaign in changed:
            campaign.is_active = active
            campaign.save(update_fields=["is_active"])
        verb = "resumed" if active else "paused"
        self.message_user(request, f"{len(changed)} campaign(s) {verb}.", messages.SUCCESS)
