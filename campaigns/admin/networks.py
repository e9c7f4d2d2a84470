"""Affiliate networks in admin: presets, parameter and status mapping, postback security
(token, IP allowlist) and the postback URL to give the network."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from campaigns import network_presets
from campaigns.mapping import ParamMapField, StatusMapField
from campaigns.models import (
    AffiliateNetwork,
    new_network_key,
    new_postback_token,
)
from postbacks.masking import MASK


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
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
        self.fields["preset"].choices = choices  # type: ignore[attr-defined]  # a ChoiceField

    def clean_key(self) -> str:
        key = self.cleaned_data.get("key") or ""
        return key or self.instance.key or new_network_key()

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
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
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
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
        query_texts = {
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
            json.dumps(query_texts),
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
