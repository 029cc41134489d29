"""The audit log (``ops.audit_log``): who changed the model or the keys, what was handed to
the CRM, what personal data was erased or purged (and whose erasure was lifted), and why.

Append-only: the table's triggers refuse updates, deletes and truncation to every role, the
platform's own included. An entry about a customer names them by pseudonym, never by id.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

import psycopg

from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.tables import AUDIT_LOG

AuditKind = Literal[
    "promotion",
    "rollback",
    "gate_refusal",
    "api_key_created",
    "api_key_revoked",
    "crm_handoff",
    "erasure",
    "erasure_lifted",
    "purge",
]
KINDS: Final[tuple[AuditKind, ...]] = get_args(AuditKind)


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    recorded_at: datetime
    kind: str
    actor: str
    subject: str
    reason: str | None
    details: dict[str, Any]


def cli_actor() -> str:
    """The actor of a command run by a person: their OS user."""
    return f"cli:{getpass.getuser()}"


def run_actor(run_id: str) -> str:
    """The actor of work done by a Dagster run."""
    return f"run:{run_id}"


def record(
    conn: psycopg.Connection[Any],
    kind: AuditKind,
    subject: str,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append an entry in ``conn``'s transaction: it is kept exactly when the change it
    describes is committed. Returns its ``audit_id``, for a row that refers to it."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}: one of {', '.join(KINDS)}")
    row = conn.execute(
        f"insert into {AUDIT_LOG} (kind, actor, subject, reason, details)"
        " values (%s, %s, %s, %s, %s::jsonb) returning audit_id",
        (kind, actor, subject, reason, json.dumps(dict(details or {}), default=str)),
    ).fetchone()
    assert row is not None  # noqa: S101  # an insert returning a row returns one
    return int(row[0])


def record_now(
    url: str,
    kind: AuditKind,
    subject: str,
    *,
    actor: str,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append an entry in a transaction of its own (for changes made outside the warehouse,
    such as an alias moved in the MLflow registry)."""
    with connect(url) as conn:
        record(conn, kind, subject, actor=actor, reason=reason, details=details)


def entries(
    url: str, *, since: datetime | None = None, kind: str | None = None, limit: int | None = None
) -> list[AuditEntry]:
    """Entries oldest first, from ``since`` on, of one ``kind`` when given; the latest
    ``limit`` of them when given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}: one of {', '.join(KINDS)}")
    query = (
        f"select audit_id, recorded_at, kind, actor, subject, reason, details from {AUDIT_LOG}"
        " where (%(since)s::timestamptz is null or recorded_at >= %(since)s)"
        " and (%(kind)s::text is null or kind = %(kind)s)"
        " order by audit_id desc limit %(limit)s"
    )
    with connect(url) as conn:
        rows = conn.execute(query, {"since": since, "kind": kind, "limit": limit}).fetchall()
    return [AuditEntry(*row) for row in reversed(rows)]
