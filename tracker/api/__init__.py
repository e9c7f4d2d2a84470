"""The REST API under ``/api/v1/``: shared parts (authentication, permissions, pagination,
errors, strict serializers) and the router gathering each app's ``api`` module."""
