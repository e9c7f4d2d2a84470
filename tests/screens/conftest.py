"""Helpers for the screens' defect tests: staff users holding only chosen permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from tests.api.conftest import api, api_for, client_with, make_token  # noqa: F401


@pytest.fixture
def staff_with(db):
    """``staff_with("view_postbackrule", ...)``: a logged-in admin client whose staff user
    holds only these permissions (codenames)."""

    def make(*codenames: str) -> Client:
        user_model = get_user_model()
        user = user_model.objects.create_user(
            f"staff{user_model.objects.count()}", password="pw-123456", is_staff=True
        )
        for codename in codenames:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make
