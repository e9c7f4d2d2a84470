"""Affiliate networks (``/api/v1/affiliate-networks/``): presets, parameter and status
mapping, the postback security token (write-only, set or generated)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import network_presets
from campaigns.api.common import ModelSerializer, check_mapping
from campaigns.mapping import ParamMapField, StatusMapField
from campaigns.models import (
    AffiliateNetwork,
    new_network_key,
    new_postback_token,
)
from tracker.api.base import (
    ModelPermissions,
)
from tracker.api.errors import ProtectedDeleteMixin


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
