"""Erasure: a customer removed from every warehouse table that holds them, on request.

Every base table of the warehouse with a ``customer_id`` column holds customers: the raw
snapshots, the features, the scores, the prediction log, the CRM outbox, the tables dbt
builds for business users (``analytics.customer_risk_latest``) and any such table added
later, found in the catalogue rather than listed here. Quarantined rows are matched by their
raw record and reasons too, since a rejected row may carry the id where ingestion could not
parse it. Views (staging, the score history) read those tables and need nothing.

All of it is one transaction: the tables are locked against writers first (in the order
ingestion, dbt and scoring write them) and, with dbt's lock held, no dbt build can copy the
customer into a table it rebuilds while the erasure runs. The erasure is an entry of the
audit log in the same transaction, naming the customer by pseudonym, never by id. An id that
no table holds erases nothing, raises :class:`UnknownCustomerError` and records nothing.

The upstream export usually still holds the customer, so the erasure also puts their full
pseudonym on the suppression list (``ops.erased_customers``), in the same transaction:
ingestion leaves out every row whose id has a listed pseudonym. The list holds no id. Erasing
a listed customer again removes whatever holds them since (an API answer logged, say), or
says they are already erased; :func:`allow_again` lifts the suppression, audited too.

Models trained before keep what they learnt from the customer: retraining (after the
erasure) gives a champion that never saw them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg
from psycopg import sql

from retention_pipelines.core import audit, pseudonyms
from retention_pipelines.core.database import connect
from retention_pipelines.core.schemas import CUSTOMER_ID_PATTERN
from retention_pipelines.core.warehouse.streams import ddl_lock, table_name
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    CUSTOMER_FEATURES,
    CUSTOMER_RISK_LATEST,
    ERASED_CUSTOMERS,
    PREDICTION_LOG,
    RAW_REJECTS,
    RAW_SNAPSHOTS,
)

# Locked in this order, the order their writers take them; tables found besides follow.
_WRITE_ORDER: Final = (
    RAW_SNAPSHOTS,
    RAW_REJECTS,
    CUSTOMER_FEATURES,
    CHURN_RISK_SCORES,
    PREDICTION_LOG,
    CRM_OUTBOX,
    CUSTOMER_RISK_LATEST,
)
# Every base table (or partitioned table) outside Postgres' own schemas with a customer id.
_TABLES_WITH_CUSTOMERS: Final = """
select n.nspname || '.' || c.relname
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
where a.attname = 'customer_id' and not a.attisdropped and c.relkind in ('r', 'p')
  and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%'
"""


class UnknownCustomerError(LookupError):
    """No warehouse table holds the customer: nothing was erased, nothing recorded."""


class NotErasedError(LookupError):
    """The customer is not on the suppression list: nothing lifted, nothing recorded."""


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed: rows per table, and the pseudonym the audit log names.

    ``already_erased``: the customer was on the suppression list and no table held them, so
    nothing changed and nothing was recorded; ``erased_at`` is then that earlier erasure's.
    """

    pseudonym: str
    rows: dict[str, int]
    erased_at: datetime
    already_erased: bool = False

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def forget_customer(
    url: str,
    customer_id: str,
    *,
    reason: str,
    actor: str,
    key: bytes,
    on_wait: Callable[[str], None] | None = None,
) -> Erasure:
    """Remove ``customer_id`` from every warehouse table in one transaction, record the
    erasure (pseudonym, rows per table, the reason) in the audit log and put the customer's
    full pseudonym on the suppression list.

    ``reason`` is recorded with any mention of the id replaced by the pseudonym. ``on_wait``
    hears one line while a dbt build holds the warehouse's dbt lock. The suppression list is
    locked first, as ingestion locks it before writing the raw tables: an ingestion under way
    finishes (the erasure then removes what it wrote), and one that starts later waits and
    reads the list with the customer on it.
    """
    wanted = customer_id.strip()
    if not wanted:
        raise ValueError("the customer id is empty")
    if not reason.strip():
        raise ValueError("an erasure needs a reason")
    full = pseudonyms.pseudonym(wanted, key)
    shown = pseudonyms.display(wanted, key)
    with ddl_lock(url, on_wait=on_wait), connect(url) as conn, conn.transaction():
        tables = customer_tables(conn)
        conn.execute(
            sql.SQL("lock table {}, {} in share row exclusive mode").format(
                table_name(ERASED_CUSTOMERS), sql.SQL(", ").join(map(table_name, tables))
            )
        )
        rows = {table: _delete(conn, table, wanted) for table in tables}
        if not any(rows.values()):
            listed = _erased_at(conn, full)
            if listed is not None:
                return Erasure(shown, {}, erased_at=listed, already_erased=True)
            raise UnknownCustomerError(
                f"no warehouse table holds that customer (pseudonym {shown}): nothing erased"
            )
        erased = {table: count for table, count in rows.items() if count}
        entry = audit.record(
            conn,
            "erasure",
            shown,
            actor=actor,
            reason=redact(reason, wanted, shown),
            details={"rows": erased, "total": sum(erased.values())},
        )
        erased_at = _suppress(conn, full, entry)
    return Erasure(shown, erased, erased_at=erased_at)


@dataclass(frozen=True)
class Lifted:
    """A suppression lifted: the pseudonym, and when the customer had been erased."""

    pseudonym: str
    erased_at: datetime


def allow_again(url: str, customer_id: str, *, reason: str, actor: str, key: bytes) -> Lifted:
    """Take ``customer_id`` off the suppression list: the next ingestion of a file that holds
    them stores them again (they became a customer again and consented). The lift is an
    ``erasure_lifted`` entry of the audit log, by pseudonym, in the same transaction; a
    customer not on the list raises :class:`NotErasedError` and records nothing."""
    wanted = customer_id.strip()
    if not wanted:
        raise ValueError("the customer id is empty")
    if not reason.strip():
        raise ValueError("lifting an erasure needs a reason")
    shown = pseudonyms.display(wanted, key)
    with connect(url) as conn, conn.transaction():
        row = conn.execute(
            sql.SQL("delete from {} where pseudonym = %s returning erased_at, audit_id").format(
                table_name(ERASED_CUSTOMERS)
            ),
            (pseudonyms.pseudonym(wanted, key),),
        ).fetchone()
        if row is None:
            raise NotErasedError(
                f"that customer (pseudonym {shown}) is not on the suppression list: nothing to lift"
            )
        erased_at, erasure_entry = row
        audit.record(
            conn,
            "erasure_lifted",
            shown,
            actor=actor,
            reason=redact(reason, wanted, shown),
            details={"erased_at": erased_at.isoformat(), "erasure_audit_id": erasure_entry},
        )
    return Lifted(shown, erased_at)


def erased_pseudonyms(conn: psycopg.Connection) -> frozenset[str]:
    """The suppression list's full pseudonyms, the list locked until ``conn``'s transaction
    ends: in SHARE mode, which ingestions of other dates share and an erasure or a lift
    waits for, so that none changes the list while an ingestion relies on it."""
    conn.execute(sql.SQL("lock table {} in share mode").format(table_name(ERASED_CUSTOMERS)))
    rows = conn.execute(sql.SQL("select pseudonym from {}").format(table_name(ERASED_CUSTOMERS)))
    return frozenset(str(row[0]) for row in rows)


def _erased_at(conn: psycopg.Connection, full: str) -> datetime | None:
    row = conn.execute(
        sql.SQL("select erased_at from {} where pseudonym = %s").format(
            table_name(ERASED_CUSTOMERS)
        ),
        (full,),
    ).fetchone()
    return None if row is None else row[0]


def _suppress(conn: psycopg.Connection, full: str, audit_id: int) -> datetime:
    """List the pseudonym (again: a later erasure is the one the list refers to)."""
    row = conn.execute(
        sql.SQL(
            "insert into {} (pseudonym, audit_id) values (%s, %s) on conflict (pseudonym)"
            " do update set erased_at = excluded.erased_at, audit_id = excluded.audit_id"
            " returning erased_at"
        ).format(table_name(ERASED_CUSTOMERS)),
        (full, audit_id),
    ).fetchone()
    assert row is not None  # noqa: S101  # an upsert returning a row returns one
    return row[0]


def customer_tables(conn: psycopg.Connection) -> list[str]:
    """The tables holding customers, in the order to lock them."""
    found = {str(row[0]) for row in conn.execute(_TABLES_WITH_CUSTOMERS)}
    known = [table for table in _WRITE_ORDER if table in found]
    return known + sorted(found - set(known))


def _delete(conn: psycopg.Connection, table: str, customer_id: str) -> int:
    if table == RAW_REJECTS:
        return _delete_rejects(conn, customer_id)
    statement = sql.SQL("delete from {} where customer_id = %s").format(table_name(table))
    return conn.execute(statement, (customer_id,)).rowcount


def _delete_rejects(conn: psycopg.Connection, customer_id: str) -> int:
    """Quarantined rows of the customer: by the id ingestion parsed, or, for an id of the
    platform's form (which cannot be part of another customer's), by any mention of it in
    the raw record or the reasons, whatever its case (JSON escapes included). Any other
    string is matched only as a whole value of the record, so that a short one cannot take
    unrelated rows with it."""
    if re.fullmatch(CUSTOMER_ID_PATTERN, customer_id.upper()):
        escaped = json.dumps(customer_id, ensure_ascii=False)[1:-1]
        statement = sql.SQL(
            "delete from {} where customer_id = %(id)s"
            " or strpos(lower(record::text), lower(%(id)s)) > 0"
            " or strpos(lower(record::text), lower(%(escaped)s)) > 0"
            " or strpos(lower(array_to_string(reasons, ' ')), lower(%(id)s)) > 0"
        )
        params = {"id": customer_id, "escaped": escaped}
    else:
        statement = sql.SQL(
            "delete from {} where customer_id = %(id)s or exists ("
            " select 1 from jsonb_path_query(record, 'strict $.**') as value"
            " where jsonb_typeof(value) = 'string' and trim(value #>> '{{}}') = %(id)s)"
        )
        params = {"id": customer_id}
    return conn.execute(statement.format(table_name(RAW_REJECTS)), params).rowcount


def redact(text: str, customer_id: str, shown: str) -> str:
    """``text`` with every mention of ``customer_id`` (any case) replaced by the pseudonym."""
    return re.sub(re.escape(customer_id), f"[customer {shown}]", text, flags=re.IGNORECASE)
