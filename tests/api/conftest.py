"""API test helpers: tokens for users with chosen permissions, clients that send them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from tracker.models import APIToken


def make_token(*perms: str, superuser: bool = False, **fields) -> tuple[APIToken, str]:
    """A token (and its full key) for a new user holding ``perms`` (codenames such as
    "view_offer"), or for a new superuser."""
    user_model = get_user_model()
    name = f"u{user_model.objects.count()}"
    if superuser:
        user = user_model.objects.create_superuser(name, f"{name}@example.com", "pw-123456")
    else:
        user = user_model.objects.create_user(name, password="pw-123456")
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
    return APIToken.objects.create_key(name="test", user=user, **fields)


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def api(db) -> APIClient:
    """A client authenticated as a superuser by token."""
    return client_with(make_token(superuser=True)[1])


@pytest.fixture
def api_for(db):
    """``api_for("view_offer", ...)``: a client whose user holds only these permissions."""
    return lambda *perms: client_with(make_token(*perms)[1])
