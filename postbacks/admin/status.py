"""The admin status page (``/admin/status/``, linked from the admin index): what the
delivery engine is doing now (:func:`postbacks.status.snapshot`), for staff who may view
deliveries."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from postbacks import status


def status_view(request: HttpRequest) -> HttpResponse:
    """The status page: backlog, oldest due, sending now, workers, periodic tasks' last runs
    and failing rules. Wrapped in ``admin.site.admin_view`` by the URLconf (staff only);
    403 without the permission to view deliveries."""
    if not request.user.has_perm("postbacks.view_delivery"):
        raise PermissionDenied
    snapshot = status.snapshot()
    context = {
        **admin.site.each_context(request),
        "title": "Postback engine status",
        "status": snapshot,
        "oldest_due_age": snapshot.backlog.oldest_due_age(snapshot.now),
        "retention_task": status.RETENTION_TASK,
    }
    return TemplateResponse(request, "admin/postbacks/status.html", context)
