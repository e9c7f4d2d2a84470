"""What the dispatcher (:mod:`postbacks.dispatcher`) claims and records, as SQL and rows.

- :data:`CLAIM_SQL`: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
  RETURNING`` claims the due deliveries, oldest first, at most so many per host, with a
  lease (:data:`LEASE_SQL`) and the worker's name.
- :data:`RECORD_SQL`: the new states of finished deliveries, written only where this
  worker still owns them (status ``sending``, same attempt number, same worker).
- :data:`STREAK_SQL`: each rule's run of failed deliveries after a batch (auto-disable).
- :class:`Claimed` (a claimed delivery, built from a row of :data:`CLAIMED_COLUMNS`),
  :class:`Finished` (an attempt that came back), :class:`Streak` (a rule's batch).

Each SQL text is formatted with the table names and per-database pieces (PostgreSQL,
SQLite); values always go as query parameters. No database access here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from postbacks.transports import NO_SECRETS, PreparedRequest, Result, Secrets

# now + (timeout + margin) seconds, per database: the lease of a claimed delivery.
LEASE_SQL = {
    "postgresql": "%s + make_interval(secs => timeout_seconds + %s)",
    "sqlite": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s,"
    " '+' || (timeout_seconds + %s) || ' seconds')",
}
ROW_LOCK_SQL = {"postgresql": "FOR UPDATE SKIP LOCKED", "sqlite": ""}
# States ({scheduled}, {sending}) are formatted in from ``Delivery.Status`` as constants, not
# bound as parameters: the planner then matches the partial indexes on status.
CLAIM_SQL = """
WITH busy (host, n) AS (VALUES {busy})
UPDATE {table} SET status = '{sending}', attempt_count = attempt_count + 1, claimed_by = %s,
    lease_expires_at = {lease}, updated_at = %s
WHERE status = '{scheduled}' AND id IN (
    SELECT id FROM (
        SELECT id, due_at, COALESCE(busy.n, 0)
            + ROW_NUMBER() OVER (PARTITION BY due.host ORDER BY due_at, id) AS nth
        FROM (
            SELECT id, host, due_at FROM {table}
            WHERE status = '{scheduled}' AND due_at <= %s {exclude}
            ORDER BY due_at, id LIMIT %s {lock}
        ) AS due LEFT JOIN busy ON busy.host = due.host
    ) AS ranked
    WHERE nth <= %s ORDER BY due_at, id LIMIT %s
)
RETURNING {columns}, {source}, {secrets}
"""
# The traffic source's name, read in the claim (a key lookup): the metrics' label.
SOURCE_SQL = "(SELECT s.name FROM {sources} s WHERE s.id = {table}.traffic_source_id)"
# The rule's secrets, read in the claim itself (one round trip): the signing secret, the
# previous one while within its rotation grace (the parameter: now), the access token.
SECRETS_SQL = """(SELECT r.signing_secret FROM {rules} r WHERE r.id = {table}.rule_id),
    (SELECT CASE WHEN r.previous_secret_expires_at > %s THEN r.previous_signing_secret
        ELSE '' END FROM {rules} r WHERE r.id = {table}.rule_id),
    (SELECT r.access_token FROM {rules} r WHERE r.id = {table}.rule_id)"""
# The new state of each finished delivery, written only where this worker still owns it.
RECORD_SQL = """
WITH v (id, attempt_count, status, due_at, delivered_at, last_status_code, last_error)
    AS (VALUES {rows})
UPDATE {table} SET status = v.status, due_at = COALESCE(v.due_at, {table}.due_at),
    delivered_at = v.delivered_at, last_status_code = v.last_status_code,
    last_error = v.last_error, lease_expires_at = NULL, claimed_by = '', updated_at = %s
FROM v
WHERE {table}.id = v.id AND {table}.status = '{sending}' AND {table}.claimed_by = %s
    AND {table}.attempt_count = v.attempt_count
RETURNING {table}.id
"""
# Typed placeholders of one VALUES row (PostgreSQL cannot infer the type of a NULL column).
RECORD_CASTS = {
    "postgresql": (
        "CAST({} AS bigint)",
        "CAST({} AS integer)",
        "CAST({} AS varchar)",
        "CAST({} AS timestamptz)",
        "CAST({} AS timestamptz)",
        "CAST({} AS integer)",
        "CAST({} AS text)",
    ),
    "sqlite": ("{}",) * 7,
}
# Each rule's run of failed deliveries, after one batch: reset (1 when one was delivered),
# the failures after the last delivered one, gone (1 after a 410). No-op rows (no failure,
# count already 0) are not written: most batches of a healthy rule touch nothing. On
# PostgreSQL the rows are locked in id order first, so the recorders of several workers
# cannot deadlock on them.
STREAK_SQL = """
WITH v (id, reset, failures, gone) AS (VALUES {rows}),
todo AS (
    SELECT r.id FROM {table} r JOIN v ON v.id = r.id
    WHERE v.failures > 0 OR v.gone = 1 OR r.consecutive_failures <> 0
    ORDER BY r.id {lock}
)
UPDATE {table} SET consecutive_failures = CASE WHEN v.reset = 1 THEN v.failures
    ELSE {table}.consecutive_failures + v.failures END
FROM v JOIN todo ON todo.id = v.id
WHERE {table}.id = v.id
RETURNING {table}.id, {table}.consecutive_failures, {table}.disable_after_failures,
    {table}.is_active
"""
STREAK_LOCK_SQL = {"postgresql": "FOR UPDATE OF r", "sqlite": ""}
STREAK_CASTS = {
    "postgresql": ("CAST({} AS bigint)",) + ("CAST({} AS integer)",) * 3,
    "sqlite": ("{}",) * 4,
}
GONE_REASON = "Deactivated: the destination answered 410 Gone"


CLAIMED_COLUMNS = (
    "id", "due_at", "host", "kind", "method", "url", "body", "headers", "attempt_count",
    "max_attempts", "retry_base_seconds", "timeout_seconds", "success_mode",
    "success_pattern", "rule_id", "is_test", "public_id", "created_at", "event_type",
)  # fmt: skip


@dataclass
class Claimed:
    """A delivery claimed for one attempt: what sending and recording it need.

    ``attempt_count`` is the number of this attempt (the claim counted it). The request
    (method, URL, body, headers, success mode and pattern) is sent exactly as planned.
    """

    pk: int
    due_at: object
    host: str
    kind: str
    method: str
    url: str
    body: str
    headers: dict[str, str]
    attempt_count: int
    max_attempts: int
    retry_base_seconds: int
    timeout_seconds: int
    success_mode: str = "status"
    success_pattern: str = ""
    rule_id: int | None = None
    is_test: bool = False
    public_id: object = ""  # the delivery ID receivers see (Idempotency-Key): log lines name it
    created_at: object = None  # written with its event: the start of the delivery lag
    event_type: str = ""
    traffic_source: str = ""  # the source's name ("" without one): the metrics' label
    secrets: Secrets = NO_SECRETS  # the rule's, read by the claim (never stored)

    @classmethod
    def from_row(cls, row: tuple) -> Claimed:
        """From a row of :data:`CLAIM_SQL`: the :data:`CLAIMED_COLUMNS`, the traffic
        source's name (NULL without one), then the rule's signing secret, previous signing
        secret (empty past its grace) and access token (NULL without a rule)."""
        *values, source, signing, previous, token = row
        item = cls(*values)
        item.traffic_source = source or ""
        keys = tuple(key for key in (signing, previous) if key)
        if keys or token:
            item.secrets = Secrets(signing=keys, access_token=token or "")
        if isinstance(item.headers, str):  # JSON arrives as text from the cursor
            item.headers = json.loads(item.headers)
        item.is_test = bool(item.is_test)  # 0/1 on SQLite
        if isinstance(item.public_id, str):  # 32 hex digits on SQLite: as receivers see it
            item.public_id = uuid.UUID(item.public_id)
        return item

    def request(self) -> PreparedRequest:
        """The planned request, as the transport sends it."""
        return PreparedRequest(
            self.method,
            self.url,
            self.body,
            self.headers,
            self.success_mode,
            self.success_pattern,
        )


@dataclass
class Streak:
    """What one batch did to a rule's run of failed deliveries (see :data:`STREAK_SQL`)."""

    reset: bool = False
    failures: int = 0
    gone: bool = False
    last_error: str = ""


@dataclass
class Finished:
    """One attempt that came back: the claimed delivery, its result, when it started."""

    delivery: Claimed
    result: Result
    started_at: datetime
