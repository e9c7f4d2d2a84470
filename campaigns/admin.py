from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from campaigns.models import (
    AffiliateNetwork,
    Campaign,
    CampaignOffer,
    Offer,
    TrafficSource,
    TrafficSourceParameter,
    new_postback_token,
)


class TrafficSourceParameterInline(admin.TabularInline):
    model = TrafficSourceParameter
    extra = 0
    max_num = 10
    fields = ("slot", "name", "param", "placeholder", "is_enabled")


@admin.register(TrafficSource)
class TrafficSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "external_id_param", "external_id_placeholder", "created_at")
    search_fields = ("name",)
    inlines = [TrafficSourceParameterInline]
    fieldsets = (
        (None, {"fields": ("name",)}),
        (
            "External ID (the traffic source's click ID)",
            {
                "fields": ("external_id_param", "external_id_placeholder"),
                "description": "Postback rules send it back with the {externalid} macro. "
                "Without it the traffic source cannot register the conversion.",
            },
        ),
    )


@admin.register(AffiliateNetwork)
class AffiliateNetworkAdmin(admin.ModelAdmin):
    # The security token is a secret: shown only on the change form, never in lists.
    list_display = ("name", "token_required", "ip_allowlist", "created_at")
    search_fields = ("name",)
    actions = ["generate_token"]
    fieldsets = (
        (None, {"fields": ("name", "notes")}),
        (
            "Conversion postback security (/cv)",
            {
                "fields": ("postback_token", "allowed_ips"),
                "description": "Both are optional and checked for the network of the click's "
                "offer. Rejected postbacks answer 403 and are kept in the inbound request log.",
            },
        ),
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


class CampaignOfferInline(admin.TabularInline):
    model = CampaignOffer
    extra = 1
    autocomplete_fields = ("offer",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "traffic_source", "is_active", "tracking_link")
    list_filter = ("is_active", "traffic_source")
    search_fields = ("name", "key")
    list_select_related = ("traffic_source",)
    readonly_fields = ("tracking_link",)
    fields = ("name", "traffic_source", "key", "is_active", "tracking_link")
    inlines = [CampaignOfferInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("traffic_source__parameters")

    @admin.display(description="tracking URL")
    def tracking_link(self, obj: Campaign) -> str:
        if not obj.pk:
            return "Shown once the campaign is saved."
        return format_html("<code>{}</code>", obj.tracking_url())
