"""Who may change a conversion's status, whatever door the change comes through.

A status change needs ``tracker.change_conversion``: ``POST conversions/{id}/status/``
asks for it, and so must the other doors that reach the same change, a repeat of an
existing conversion with another status (``POST conversions/``, the admin's add form) and
an upload row doing the same. The API and the admin call these functions rather than
deciding it themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from tracker import ingest, uploads
from tracker.models import Conversion

STATUS_CHANGE_PERMISSION = "tracker.change_conversion"
PERMISSION_DENIED = "permission_denied"


def may_change_status(user: Any) -> bool:
    """Whether ``user`` may change a conversion's status (``tracker.change_conversion``)."""
    return bool(user is not None and user.has_perm(STATUS_CHANGE_PERMISSION))


def status_change_refusal(conversion_id: int | None) -> str:
    """The detail of a refused status change of conversion ``conversion_id``."""
    which = f"Conversion {conversion_id}" if conversion_id else "The conversion"
    return (
        f"{which} already exists: changing its status needs the "
        f"{STATUS_CHANGE_PERMISSION} permission. Nothing was changed."
    )


class _StatusChangeRefused(Exception):
    def __init__(self, result: ingest.Result) -> None:
        super().__init__("status change refused")
        self.result = result


def conversion_ingest_as(
    user: Any, data: Mapping[str, str], inbound: ingest.Inbound
) -> ingest.Result:
    """:func:`tracker.ingest.conversion_ingest` on behalf of ``user``.

    When the request turns out to change an existing conversion's status and ``user`` lacks
    ``tracker.change_conversion``, everything it wrote (the change, its deliveries, its log
    row; the wake-up registered on commit) is rolled back, and the refusal is answered and
    logged instead: 403 ``{"error": "permission_denied", "detail": ...}``. Other outcomes
    are :func:`conversion_ingest`'s. Never raises for bad input.
    """
    if may_change_status(user):
        return ingest.conversion_ingest(data, inbound)
    try:
        with transaction.atomic():
            result = ingest.conversion_ingest(data, inbound)
            if result.body.get("status") == "status_changed":
                raise _StatusChangeRefused(result)
    except _StatusChangeRefused as refused:
        changed = refused.result
        # A status change has its conversion_id.
        conversions = Conversion.objects.filter(pk=changed.conversion_id)  # type: ignore[misc]
        click = conversions.select_related("click").first()
        denied = ingest.error_result(
            403,
            PERMISSION_DENIED,
            status_change_refusal(changed.conversion_id),
            network=changed.network,
        )
        return ingest.record(inbound, denied, click=click.click if click else None)
    return result


def rows_changing_status(rows: Iterable[Any]) -> list[int]:
    """Row numbers of upload rows (:class:`tracker.uploads.Row`) that may change the status
    of a conversion already recorded: they send a status (or a refund type) for a click
    that has a conversion. Malformed rows and unknown clicks are not counted (they are
    refused or recorded as new conversions)."""
    candidates: dict[uuid.UUID, list[int]] = {}
    for row in rows:
        data = getattr(row, "data", None)
        if not data:
            continue
        sends_status = (data.get("status") or "").strip() or (
            (data.get("ct") or "").strip().lower() in ingest.REFUND_TYPES
        )
        if not sends_status:
            continue
        try:
            click_id = uuid.UUID((data.get("click_id") or data.get("cf_click_id") or "")[:64])
        except ValueError:
            continue
        candidates.setdefault(click_id, []).append(row.number)
    if not candidates:
        return []
    converted = set(
        Conversion.objects.filter(click_id__in=list(candidates)).values_list("click_id", flat=True)
    )
    return sorted(n for click_id in converted for n in candidates[click_id])


def upload_refusal(user: Any, data: bytes) -> str:
    """Why ``user`` may not upload the file ``data`` (a sentence), or "" when they may
    (also when the file itself is unreadable: :func:`tracker.uploads.upload_create` says so).

    An upload is checked whole before it is stored: rows are registered later, by a
    worker, so a row that would change an existing conversion's status is refused here,
    for a user without ``tracker.change_conversion``."""
    if may_change_status(user):
        return ""
    try:
        text, _count = uploads.read(data)
        numbers = rows_changing_status(uploads.iter_rows(text))
    except uploads.UploadError:
        return ""
    if not numbers:
        return ""
    shown = ", ".join(str(n) for n in numbers[:10]) + (", ..." if len(numbers) > 10 else "")
    return (
        f"Row(s) {shown} send a status for a click that already has a conversion: changing "
        f"a conversion's status needs the {STATUS_CHANGE_PERMISSION} permission. Nothing "
        "was imported."
    )
