"""API authentication by token and the per-token throttle.

``Authorization: Token <prefix>.<secret>`` (``Bearer`` is accepted too). Tokens are
:class:`tracker.models.APIToken` rows, stored hashed by djangorestframework-api-key; a
revoked or expired token, or one whose user is inactive, gets 401.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from tracker.models import APIToken

if TYPE_CHECKING:
    # Not at run time: DRF imports this module while rest_framework.views loads.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)
KEYWORDS = ("token", "bearer")
# last_used_at is written at most this often per token (seconds): not one UPDATE per call.
LAST_USED_EVERY = 60


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <token>``; returns ``(token.user, token)``. Raises
    AuthenticationFailed (401) for a malformed, unknown, revoked or expired token."""

    def authenticate(self, request: Request) -> tuple[object, APIToken] | None:
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower().decode("latin-1") not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: use 'Token <token>'.", code="invalid_token"
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(
                "The token has characters no token has.", code="invalid_token"
            ) from None
        try:
            # The library's manager is typed for its abstract key; this one holds APITokens.
            token = cast(APIToken, APIToken.objects.get_from_key(key))
            if token.has_expired:
                raise APIToken.DoesNotExist
        except APIToken.DoesNotExist:
            raise exceptions.AuthenticationFailed(
                "Unknown, revoked or expired token.", code="invalid_token"
            ) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(
                "The token's user is inactive.", code="inactive_user"
            )
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > (
            LAST_USED_EVERY
        ):
            APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return "Token"


class TokenRateThrottle(SimpleRateThrottle):
    """``API_THROTTLE_RATE`` requests per token (per user for session calls; per address for
    anonymous ones, which are refused anyway); 429 ``throttled`` with ``Retry-After``."""

    scope = "token"

    def allow_request(self, request: Request, view: APIView) -> bool:
        """As DRF's, but a cache that cannot be reached (Redis restarting) lets the call
        through, logged, rather than failing it with a 500."""
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("API throttle skipped: the cache is unavailable.", exc_info=True)
            return True

    def get_cache_key(self, request: Request, view: object) -> str:
        if isinstance(request.auth, APIToken):
            ident = f"token:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """The token scheme in the OpenAPI schema (drf-spectacular)."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`: an API token created in admin (API tokens).",
        }
