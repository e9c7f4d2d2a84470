"""Traffic sources (``/api/v1/traffic-sources/``, creation from a preset) and the presets
(``/api/v1/traffic-source-presets/``)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import presets
from campaigns.api.common import NestedListSerializer, NestedRowSerializer
from campaigns.models import (
    TrafficSource,
    TrafficSourceParameter,
)
from tracker.api.base import (
    StrictSerializer,
)
from tracker.api.errors import ProtectedDeleteMixin, TrackerErrorSerializer


class TrafficSourceParameterSerializer(NestedRowSerializer):
    parent_field = "traffic_source"

    class Meta:
        model = TrafficSourceParameter
        fields = ("slot", "name", "param", "placeholder", "is_enabled")


class TrafficSourceSerializer(NestedListSerializer):
    nested = {"parameters": "parameters"}
    # many=True hands max_length to the ListSerializer; the stubs do not list it.
    parameters = TrafficSourceParameterSerializer(  # type: ignore[call-arg]
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
