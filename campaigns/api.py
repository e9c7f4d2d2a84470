"""REST API resources of this app (serializers and viewsets), registered under /api/v1/.

Validation follows the admin: model ``full_clean`` (via :class:`StrictModelSerializer`) plus
the admin forms' own checks (status and parameter mappings, lander URL macros, fallback URL
without a scheme read as https, network key and preset), reusing the admin's code."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import BaseRouter

from campaigns import network_presets, presets
from campaigns.mapping import MappingField, ParamMapField, StatusMapField
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
from tracker.api.base import (
    ModelPermissions,
    StrictModelSerializer,
    StrictSerializer,
    django_errors,
)
from tracker.api.errors import ProtectedDeleteMixin, TrackerErrorSerializer

# --- shared helpers ---------------------------------------------------------------------


ModelSerializer = StrictModelSerializer


class NestedRowSerializer(StrictModelSerializer):
    """A row of a parent's nested list: model ``full_clean`` without the parent link (set
    on save) and without constraints across rows (the parent checks those)."""

    parent_field = ""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.Meta.model(**attrs)
        try:
            instance.full_clean(
                exclude=[self.parent_field], validate_unique=False, validate_constraints=False
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(django_errors(exc)) from None
        return attrs


class NestedListSerializer(ModelSerializer):
    """A model serializer with nested writable lists (``nested``: serializer field name ->
    related manager name): a list sent replaces every row; a list not sent (PATCH) leaves
    the rows as they are."""

    nested: dict[str, str] = {}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The model's full_clean cannot take reverse relations: check the rest, keep them.
        rows = {name: attrs.pop(name) for name in self.nested.values() if name in attrs}
        attrs = super().validate(attrs)
        attrs.update(rows)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> models.Model:
        rows = {name: validated_data.pop(name, []) for name in self.nested.values()}
        with transaction.atomic():
            instance = super().create(validated_data)
            for name, items in rows.items():
                self.replace_rows(instance, name, items)
        return instance

    def update(self, instance: models.Model, validated_data: dict[str, Any]) -> models.Model:
        rows = {n: validated_data.pop(n) for n in self.nested.values() if n in validated_data}
        with transaction.atomic():
            instance = super().update(instance, validated_data)
            for name, items in rows.items():
                self.replace_rows(instance, name, items)
        return instance

    def replace_rows(self, instance: models.Model, name: str, items: list[dict]) -> None:
        """Delete the rows of ``instance.<name>`` and create ``items`` (one by one: the
        campaign cache is cleared by the save signals)."""
        manager = getattr(instance, name)
        manager.all().delete()
        for item in items:
            manager.create(**item)
        if hasattr(instance, "_prefetched_objects_cache"):
            instance._prefetched_objects_cache.pop(name, None)


def check_mapping(field: MappingField, value: dict[str, Any]) -> dict[str, str]:
    """``value`` (a JSON object) checked pair by pair as the admin's mapping ``field`` checks
    its lines (``key = value``): the cleaned mapping, or ValidationError naming each bad
    key."""
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    errors: list[str] = []
    for key, item in value.items():
        try:
            if not isinstance(item, str) or "\n" in key or "\n" in item:
                raise DjangoValidationError("the value must be a text on one line.")
            left, right = field.pair(f"{key.strip()} = {item.strip()}")
            folded = field.fold(left)
            if folded in seen:
                raise DjangoValidationError(f"“{left}” is the same key as “{seen[folded]}”.")
            field.check(mapping, right)
        except DjangoValidationError as exc:
            errors.extend(f"{key}: {message}" for message in exc.messages)
            continue
        seen[folded] = left
        mapping[left] = right
    if errors:
        raise serializers.ValidationError(errors)
    return mapping


# --- traffic sources --------------------------------------------------------------------


class TrafficSourceParameterSerializer(NestedRowSerializer):
    parent_field = "traffic_source"

    class Meta:
        model = TrafficSourceParameter
        fields = ("slot", "name", "param", "placeholder", "is_enabled")


class TrafficSourceSerializer(NestedListSerializer):
    nested = {"parameters": "parameters"}
    parameters = TrafficSourceParameterSerializer(
        many=True,
        required=False,
        max_length=10,
        help_text="Custom variables var1..var10 (one per slot, URL parameters distinct). "
        "Sent: replaces every parameter; not sent (PATCH): unchanged.",
    )

    class Meta:
        model = TrafficSource
        fields = (
            "id",
            "name",
            "external_id_param",
            "external_id_placeholder",
            "preset",
            "parameters",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("preset",)

    def validate_parameters(self, value: list[dict]) -> list[dict]:
        for key, label in (("slot", "slot var{}"), ("param", "URL parameter {}")):
            values = [row[key] for row in value]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise serializers.ValidationError(
                    f"{label.format(twice[0])} is used more than once."
                )
        return value


class TrafficSourceFromPresetSerializer(StrictSerializer):
    """Body of ``POST /traffic-sources/from-preset/``."""

    preset = serializers.ChoiceField(
        choices=presets.choices(), help_text="A preset key (see /traffic-source-presets/)."
    )
    name = serializers.CharField(
        max_length=TrafficSource._meta.get_field("name").max_length,
        required=False,
        allow_blank=True,
        help_text="The traffic source's name; a name in use is refused. Not sent or blank: "
        'the preset\'s name, with " (2)", " (3)"... appended when a source already has it.',
    )


def source_from_preset_api(key: str, name: str = "") -> TrafficSource:
    """A traffic source (with its parameters, no postback rule) made from the preset ``key``
    by the admin's :func:`campaigns.presets.source_from_preset`, named ``name`` exactly,
    or, when blank, the preset's name made unique as the admin does. Raises
    ValidationError ``{"name": [...]}`` when ``name`` is taken (nothing is created) and
    KeyError for an unknown preset."""
    name = name.strip()
    with transaction.atomic():
        source, _rule = presets.source_from_preset(key, name=name, create_rule=False)
        if name and source.name != name:  # taken: the service chose "<name> (2)"
            raise serializers.ValidationError(
                {"name": [f"A traffic source named “{name}” already exists."]}
            )
    return source


class TrafficSourceViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Traffic sources (Taboola, Outbrain...): where visitors come from.

    `external_id_param` is the campaign-URL query parameter carrying the source's own click
    ID (1-64 letters, digits, `_`, `.`, `-`; not var1..var10), filled by the source's macro
    `external_id_placeholder`. `parameters`: the custom variables, a list of
    `{slot: 1..10, name, param, placeholder, is_enabled}`; writing it replaces the whole list.
    `preset` (read-only) names the preset the source was made from (see
    `/traffic-source-presets/`); `POST /traffic-sources/from-preset/` makes a source from
    one. Filters: `name`, `preset`. Errors: 400 `invalid` with field
    errors (a bad parameter row: `{"parameters": {"<index>": {field: [...]}}}`); DELETE of a
    source with campaigns or clicks: 409 `protected`.
    """

    queryset = TrafficSource.objects.prefetch_related("parameters")
    serializer_class = TrafficSourceSerializer
    filterset_fields = ("name", "preset")

    @extend_schema(
        summary="Create a traffic source from a preset",
        request=TrafficSourceFromPresetSerializer,
        responses={
            201: TrafficSourceSerializer,
            400: OpenApiResponse(
                TrackerErrorSerializer,
                description="invalid: field errors (preset: not a preset key; name: in use, "
                "too long; an unknown field)",
            ),
        },
    )
    @action(detail=False, methods=["post"], url_path="from-preset", url_name="from-preset")
    def from_preset(self, request: Request) -> Response:
        """Create a traffic source from a preset as the admin's "add from preset" does:
        its click-ID parameter and macro and its custom variables, ``preset`` set. No
        postback rule is created (``POST /postback-rules/`` with the preset's
        ``postback_url``). 201 with the traffic source; 400 ``invalid`` naming the field.
        Needs ``campaigns.add_trafficsource``."""
        form = TrafficSourceFromPresetSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        source = source_from_preset_api(
            form.validated_data["preset"], form.validated_data.get("name", "")
        )
        source = self.get_queryset().get(pk=source.pk)
        return Response(self.get_serializer(source).data, status=status.HTTP_201_CREATED)


class PresetParameterSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    name = serializers.CharField()
    param = serializers.CharField()
    placeholder = serializers.CharField()


class TrafficSourcePresetSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    external_id_param = serializers.CharField()
    external_id_placeholder = serializers.CharField()
    parameters = PresetParameterSerializer(many=True)
    postback_url = serializers.CharField(help_text="Empty: no S2S postback (see notes).")
    postback_method = serializers.CharField()
    to_replace = serializers.ListField(
        child=serializers.CharField(), help_text="REPLACE_WITH_... values in the postback URL."
    )
    docs_url = serializers.CharField()
    notes = serializers.CharField()
    evidence = serializers.ChoiceField(
        choices=[presets.OFFICIAL, presets.THIRD_PARTY, presets.UNCONFIRMED]
    )


class TrafficSourcePresetViewSet(viewsets.ViewSet):
    """The traffic-source presets (read-only, any authenticated user), sorted by name: each
    source's click-ID parameter and macro, custom variables, S2S postback URL (our macros;
    `REPLACE_WITH_...` values listed in `to_replace`), documentation and how sure it is
    (`evidence`: official, third-party, unconfirmed). Not paginated."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = TrafficSourcePresetSerializer
    pagination_class = None

    @extend_schema(
        summary="List traffic-source presets",
        responses=TrafficSourcePresetSerializer(many=True),
    )
    def list(self, request: Request) -> Response:
        items = [presets.PRESETS[key] for key, _ in presets.choices()]
        return Response(TrafficSourcePresetSerializer(items, many=True).data)


# --- affiliate networks -----------------------------------------------------------------


class AffiliateNetworkSerializer(ModelSerializer):
    key = serializers.SlugField(
        max_length=AffiliateNetwork._meta.get_field("key").max_length,
        required=False,
        allow_blank=True,
        help_text="Names the network in its postback URL /cv/<key>. Blank or not sent: kept "
        "(a new one generated on create). Changing it breaks the URL set up at the network.",
    )
    preset = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="Affiliate-network preset key ("
        + ", ".join(sorted(network_presets.PRESETS))
        + ") or blank. A preset with its own status values fills an empty status_map.",
    )
    postback_token = serializers.CharField(
        max_length=AffiliateNetwork._meta.get_field("postback_token").max_length,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        help_text="Security token (write-only, never returned): postbacks must carry it "
        "(token parameter or X-Postback-Token header). Blank: no token checked.",
    )
    has_postback_token = serializers.SerializerMethodField(
        help_text="Whether a security token is set."
    )
    status_map = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text='The network\'s status values -> ours, e.g. {"1": "approved", "0": '
        '"rejected"}: approved, pending, rejected or refunded (any case); keys at most 64 '
        "characters, matched in any case.",
    )
    param_map = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text='Our /cv parameter names -> the network\'s, e.g. {"txid": "transaction_id"}. '
        "Ours: click_id, txid, payout, payout_currency, ct, status, rejection_reason, "
        "param1..param20.",
    )
    postback_url = serializers.SerializerMethodField(
        help_text="The URL to paste into the network as its conversion postback; a token "
        "shows as token=***."
    )

    class Meta:
        model = AffiliateNetwork
        fields = (
            "id",
            "name",
            "key",
            "preset",
            "notes",
            "response_body",
            "accept_duplicates",
            "postback_token",
            "has_postback_token",
            "allowed_ips",
            "status_map",
            "param_map",
            "postback_url",
            "created_at",
        )

    def get_has_postback_token(self, obj: AffiliateNetwork) -> bool:
        return bool(obj.postback_token)

    def get_postback_url(self, obj: AffiliateNetwork) -> str:
        return obj.postback_url(show_token=False)

    def validate_key(self, value: str) -> str:
        return value or (self.instance.key if self.instance else "") or new_network_key()

    def validate_preset(self, value: str) -> str:
        current = self.instance.preset if self.instance else ""
        if value and value not in network_presets.PRESETS and value != current:
            raise serializers.ValidationError(f"“{value}” is not an affiliate-network preset.")
        return value

    def validate_status_map(self, value: dict[str, Any]) -> dict[str, str]:
        return check_mapping(StatusMapField(), value)

    def validate_param_map(self, value: dict[str, Any]) -> dict[str, str]:
        return check_mapping(ParamMapField(), value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        current = self.instance
        preset = network_presets.PRESETS.get(attrs.get("preset", current.preset if current else ""))
        status_map = attrs.get("status_map", current.status_map if current else {})
        if preset is not None and preset.status_map and not status_map:
            attrs["status_map"] = dict(preset.status_map)
        return super().validate(attrs)


class NetworkTokenSerializer(serializers.Serializer):
    postback_token = serializers.CharField(
        help_text="The new security token: shown this once (write-only elsewhere)."
    )
    postback_url = serializers.CharField(
        help_text="The postback URL to paste into the network, with the token."
    )


class NetworkChangePermission(ModelPermissions):
    """Setting or clearing a network's token: ``campaigns.change_affiliatenetwork``."""

    perms_map = {
        **ModelPermissions.perms_map,
        "POST": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.change_%(model_name)s"],
    }


def network_token_set(network: AffiliateNetwork, token: str | None = None) -> str:
    """Set ``network``'s security token to ``token`` (default: a new random one from
    :func:`new_postback_token`, as the admin's "Generate a new security token"; "" clears
    it) and save it (the save signals clear the campaign cache); returns the token. The
    old token stops working at once."""
    network.postback_token = new_postback_token() if token is None else token
    network.save(update_fields=["postback_token"])
    return network.postback_token


class AffiliateNetworkViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Affiliate networks: where offers come from; they call our `/cv/<key>` postback URL.

    `postback_token` is write-only (never returned; `has_postback_token` tells whether one
    is set, and `postback_url` shows it as `token=***`). `allowed_ips`: IPs or CIDRs
    separated by commas, spaces or new lines. `status_map` (their status value -> ours) and
    `param_map` (our parameter name -> theirs) are JSON objects of texts, checked like the
    admin's mapping fields. A `preset` with documented status values fills an empty
    `status_map`. `POST {id}/token/` generates a new random token and answers it once
    with the URL to paste; `DELETE {id}/token/` clears it. Filters: `name`, `key`,
    `preset`. Errors: 400 `invalid` with field errors.
    """

    queryset = AffiliateNetwork.objects.all()
    serializer_class = AffiliateNetworkSerializer
    filterset_fields = ("name", "key", "preset")

    @extend_schema(
        methods=["POST"],
        summary="Generate a new security token for a network",
        description="A new random security token (as the admin's “Generate a new security "
        "token”), saved: the old one stops working at once. The answer is the only place "
        "the token is shown (`postback_token` is write-only elsewhere): `postback_url` is "
        "the URL to paste into the network, with the token. Needs "
        "`campaigns.change_affiliatenetwork`.",
        request=None,
        responses={200: NetworkTokenSerializer},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Clear a network's security token",
        description="Postbacks of this network are no longer asked for a token (its IP "
        "allowlist, if any, still applies). Needs `campaigns.change_affiliatenetwork`.",
        request=None,
        responses={204: OpenApiResponse(description="Cleared: postbacks need no token.")},
    )
    @action(
        detail=True,
        methods=["post", "delete"],
        url_path="token",
        permission_classes=[NetworkChangePermission],
    )
    def token(self, request: Request, pk: str | None = None) -> Response:
        """``POST``: generate a new random security token (as the admin's action), save it
        and answer 200 ``{"postback_token", "postback_url"}``, the URL with the token: the
        only answer that shows it. The old token stops working at once. ``DELETE``: clear
        the token (204): postbacks of this network are no longer asked for one. Needs
        ``campaigns.change_affiliatenetwork``; 404 ``not_found``."""
        network = self.get_object()
        if request.method == "DELETE":
            network_token_set(network, "")
            return Response(status=status.HTTP_204_NO_CONTENT)
        token = network_token_set(network)
        body = {"postback_token": token, "postback_url": network.postback_url()}
        return Response(body, headers={"Cache-Control": "no-store"})


# --- offers and landers -----------------------------------------------------------------


class OfferSerializer(ModelSerializer):
    class Meta:
        model = Offer
        fields = (
            "id",
            "name",
            "affiliate_network",
            "url",
            "payout",
            "currency",
            "payout_mode",
            "is_active",
            "created_at",
        )


class OfferViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Offers: landing destinations paid per conversion.

    `url`: an http(s) URL with `{click_id}` or `{cf_click_id}` where the network stores our
    click ID. `payout`: a decimal text (6 decimals) in `currency` (ISO 4217, e.g. USD);
    `payout_mode` `auto` (the network's payout, `payout` when it sends none) or `manual`
    (always `payout`). `affiliate_network`: id or null. Filters: `name`,
    `affiliate_network`, `currency`, `payout_mode`, `is_active`. Errors: 400 `invalid` with
    field errors; DELETE of an offer in a campaign: 409 `protected`.
    """

    queryset = Offer.objects.all()
    serializer_class = OfferSerializer
    filterset_fields = ("name", "affiliate_network", "currency", "payout_mode", "is_active")


class LanderSerializer(ModelSerializer):
    class Meta:
        model = Lander
        fields = ("id", "name", "url", "is_active", "created_at")

    def validate_url(self, value: str) -> str:
        url = value.strip()
        errors, _warnings = macros.validate(url, context="url")
        if errors:
            raise serializers.ValidationError(errors)
        return url


class LanderViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Landers (pre-landers) shown before the offer.

    `url`: an http(s) URL with `{click_id}` where the page expects our click ID (other click
    macros allowed); its call-to-action links to `<TRACKER_BASE_URL>/lp/click`. Filters:
    `name`, `is_active`. Errors: 400 `invalid` with field errors; DELETE of a lander used by
    a campaign: 409 `protected`.
    """

    queryset = Lander.objects.all()
    serializer_class = LanderSerializer
    filterset_fields = ("name", "is_active")


# --- campaigns --------------------------------------------------------------------------


class CampaignOfferSerializer(NestedRowSerializer):
    parent_field = "campaign"

    class Meta:
        model = CampaignOffer
        fields = ("offer", "weight")


class CampaignSerializer(NestedListSerializer):
    nested = {"offers": "campaign_offers"}
    offers = CampaignOfferSerializer(
        source="campaign_offers",
        many=True,
        required=False,
        help_text="The offers in rotation with their weights (1..10000, relative share of "
        "clicks), each offer once. Sent: replaces the rotation; not sent (PATCH): unchanged.",
    )
    fallback_url = serializers.CharField(
        max_length=Campaign._meta.get_field("fallback_url").max_length,
        required=False,
        allow_blank=True,
        help_text="Where visitors go while the campaign is paused or has no active offer; "
        "without a scheme read as https://. Blank: 404 while paused, 503 without an offer.",
    )
    tracking_url = serializers.SerializerMethodField(
        help_text="The URL to paste into the traffic source (its macros left verbatim)."
    )

    class Meta:
        model = Campaign
        fields = (
            "id",
            "name",
            "key",
            "traffic_source",
            "is_active",
            "lander",
            "fallback_url",
            "offers",
            "tracking_url",
            "created_at",
        )

    def get_tracking_url(self, obj: Campaign) -> str:
        return obj.tracking_url()

    def validate_fallback_url(self, value: str) -> str:
        field = forms.URLField(
            required=False,
            max_length=Campaign._meta.get_field("fallback_url").max_length,
            assume_scheme="https",
        )
        try:
            return field.clean(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_offers(self, value: list[dict]) -> list[dict]:
        ids = [row["offer"].pk for row in value]
        twice = sorted({pk for pk in ids if ids.count(pk) > 1})
        if twice:
            raise serializers.ValidationError(f"Offer {twice[0]} is listed more than once.")
        return value


class CampaignViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Campaigns: a traffic source plus weighted offers; visitors enter through
    `tracking_url` (read-only, `<TRACKER_BASE_URL>/c/<key>?...`).

    `key` (slug, generated when not sent) appears in the tracking URL: changing it breaks
    live links. `offers`: `[{offer: id, weight: 1..10000}]`; writing it replaces the
    rotation. `is_active` false pauses the campaign (visitors go to `fallback_url`, else
    404). `lander`: id or null. Filters: `name`, `key`, `traffic_source`, `lander`,
    `is_active`. Errors: 400 `invalid` with field errors (a bad offer row:
    `{"offers": {"<index>": {field: [...]}}}`); DELETE of a campaign with clicks:
    409 `protected`.
    """

    queryset = Campaign.objects.select_related("traffic_source").prefetch_related(
        "traffic_source__parameters", "campaign_offers"
    )
    serializer_class = CampaignSerializer
    filterset_fields = ("name", "key", "traffic_source", "lander", "is_active")


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("traffic-sources", TrafficSourceViewSet)
    router.register(
        "traffic-source-presets", TrafficSourcePresetViewSet, basename="traffic-source-preset"
    )
    router.register("affiliate-networks", AffiliateNetworkViewSet)
    router.register("offers", OfferViewSet)
    router.register("landers", LanderViewSet)
    router.register("campaigns", CampaignViewSet)
