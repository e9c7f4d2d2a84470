"""The macro catalogue of the REST API (``/api/v1/macros/``)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from tracker import macros


class MacroSerializer(serializers.Serializer):
    name = serializers.CharField()
    group = serializers.CharField()
    description = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    recorded = serializers.BooleanField(help_text="False: not recorded yet, renders empty.")
    deprecated = serializers.CharField(help_text="Empty, or advice for a deprecated spelling.")


class MacroViewSet(viewsets.ViewSet):
    """The macro catalogue for rule templates: ``{name}`` (or an alias) in a URL, body
    or header template is replaced by the event's value. Any authenticated user."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = MacroSerializer

    @extend_schema(responses=MacroSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(MacroSerializer(macros.catalogue(), many=True).data)
