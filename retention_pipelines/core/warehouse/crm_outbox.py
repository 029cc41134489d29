"""``ml.crm_outbox``: the day's retention tasks, selected inside Postgres, and their delivery.

The selection compares each customer's score of the date with their previous one and ranks
the customers worth a call by revenue at risk in one statement: a million customers per date
never pass through Python, only the day's capped list is written. A date's pending rows are
replaced in one transaction; rows already sent or dead-lettered are never touched by a
selection, so no task is handed off twice.

One lock orders the writers: the selection takes it for its transaction, a dispatcher for its
whole session (on a connection of its own, released by the server when the process dies), so
a date's pending rows are never replaced while they are being sent and two dispatchers never
send the same rows.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final

import pandas as pd
import psycopg
from psycopg.rows import class_row

from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.streams import query_frame, scalar
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    CUSTOMER_FEATURES,
)

STATUSES: Final = ("pending", "sent", "dead_letter")
OUTBOX_LOCK_KEY: Final = zlib.crc32(CRM_OUTBOX.encode()) & 0x7FFF_FFFF
# Mixed into every task's key, so the keys of this platform's tasks are its own.
_KEY_NAMESPACE: Final = "retention-crm-task"
# A probability rise is a difference of two doubles: 0.60 - 0.45 falls a hair short of 0.15.
_RISE_TOLERANCE: Final = 1e-9
_ERROR_CHARS: Final = 1000

TASK_COLUMNS: Final[tuple[str, ...]] = (
    "idempotency_key",
    "snapshot_date",
    "customer_id",
    "priority",
    "handoff_reason",
    "churn_probability",
    "previous_probability",
    "risk_band",
    "monthly_charges",
    "revenue_at_risk",
    "talking_points",
    "model_name",
    "model_version",
)

# The day's tasks, in one statement. `previous` is each customer's score of the latest scored
# date before the day: the previous date's scores are joined whole (a hash join), and only a
# customer missing from it is looked up further back, through the scores' customer index.
_SELECT_AND_INSERT: Final = f"""
with previous_date as (
    select max(snapshot_date) as day from {CHURN_RISK_SCORES} where snapshot_date < %(day)s
),
today as (
    select s.customer_id, s.churn_probability, s.risk_band,
           s.top_reason_1, s.top_reason_1_contribution,
           s.top_reason_2, s.top_reason_2_contribution,
           s.top_reason_3, s.top_reason_3_contribution,
           s.model_name, s.model_version, f.monthly_charges
    from {CHURN_RISK_SCORES} s
    join {CUSTOMER_FEATURES} f
      on f.snapshot_date = s.snapshot_date and f.customer_id = s.customer_id
    where s.snapshot_date = %(day)s
),
compared as (
    select t.*,
           coalesce(p.churn_probability, older.churn_probability) as previous_probability,
           coalesce(p.risk_band, older.risk_band) as previous_band
    from today t
    left join {CHURN_RISK_SCORES} p
      on p.snapshot_date = (select day from previous_date) and p.customer_id = t.customer_id
    left join lateral (
        select o.churn_probability, o.risk_band
        from {CHURN_RISK_SCORES} o
        where p.customer_id is null
          and o.customer_id = t.customer_id and o.snapshot_date < %(day)s
        order by o.snapshot_date desc
        limit 1
    ) older on true
),
candidates as (
    select c.*,
           case
               when c.risk_band = 'high' and c.previous_band is distinct from 'high'
                   then 'entered_high'
               when c.churn_probability - c.previous_probability >= %(min_rise)s
                   then 'risk_rose'
           end as handoff_reason,
           c.churn_probability * c.monthly_charges as revenue_at_risk
    from compared c
),
chosen as (
    select * from candidates c
    where c.handoff_reason is not null
      -- handed off around the date (the cooldown), or on the date itself (sent, dead-lettered)
      and not exists (
          select 1 from {CRM_OUTBOX} o
          where o.customer_id = c.customer_id
            and o.snapshot_date between %(day)s::date - %(cooldown)s::integer
                                    and %(day)s::date + %(cooldown)s::integer
      )
    order by c.revenue_at_risk desc, c.customer_id
    limit %(room)s
)
insert into {CRM_OUTBOX} (
    snapshot_date, customer_id, idempotency_key, handoff_reason, churn_probability,
    previous_probability, risk_band, monthly_charges, revenue_at_risk, priority,
    talking_points, model_name, model_version
)
select
    %(day)s, customer_id,
    left(encode(sha256(convert_to(
        %(namespace)s || ':' || %(day_text)s || ':' || customer_id, 'UTF8')), 'hex'), 32
    )::uuid::text,
    handoff_reason, churn_probability, previous_probability, risk_band, monthly_charges,
    revenue_at_risk,
    %(kept)s::integer + row_number() over (order by revenue_at_risk desc, customer_id),
    jsonb_build_array(
        jsonb_build_object('reason', top_reason_1, 'contribution', top_reason_1_contribution),
        jsonb_build_object('reason', top_reason_2, 'contribution', top_reason_2_contribution),
        jsonb_build_object('reason', top_reason_3, 'contribution', top_reason_3_contribution)
    ),
    model_name, model_version
from chosen
"""


def task_key(snapshot_date: date, customer_id: str) -> str:
    """The idempotency key of a customer's task of a date (what the selection computes in
    SQL): a UUID-shaped SHA-256 of the pair, the same on every run."""
    name = f"{_KEY_NAMESPACE}:{snapshot_date.isoformat()}:{customer_id}"
    return str(uuid.UUID(hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]))


def batch_key(task_keys: Sequence[str]) -> str:
    """The Idempotency-Key of a request: derived from its tasks' keys, so the same batch sent
    again (a retry, a rerun after a crash) carries the same key."""
    digest = hashlib.sha256("\n".join(task_keys).encode("utf-8")).hexdigest()
    return str(uuid.UUID(digest[:32]))


@dataclass(frozen=True)
class SelectionOutcome:
    selected: int  # pending tasks written now
    kept: int  # the date's tasks already sent or dead-lettered, left as they were
    replaced: int  # pending tasks of an earlier selection of the date, removed


def replace_pending(
    conn: psycopg.Connection[Any],
    snapshot_date: date,
    *,
    min_rise: float,
    cooldown_days: int,
    capacity: int,
) -> SelectionOutcome:
    """Replace the date's pending tasks with a fresh selection, in the caller's transaction.

    The date's sent and dead-lettered tasks stay as they are and count against ``capacity``;
    their customers are not selected again for the date.
    """
    conn.execute("select pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
    replaced = conn.execute(
        f"delete from {CRM_OUTBOX} where snapshot_date = %s and status = 'pending'",
        (snapshot_date,),
    ).rowcount
    # Fresh statistics of the (small) outbox: the anti-join against it must never be
    # planned as a scan of the whole window per candidate on an estimate of one row.
    conn.execute(f"analyze {CRM_OUTBOX}")
    kept = int(
        scalar(
            conn, f"select count(*) from {CRM_OUTBOX} where snapshot_date = %s", (snapshot_date,)
        )
        or 0
    )
    selected = conn.execute(
        _SELECT_AND_INSERT,  # type: ignore[arg-type]  # built from module constants
        {
            "day": snapshot_date,
            "day_text": snapshot_date.isoformat(),
            "namespace": _KEY_NAMESPACE,
            "min_rise": min_rise - _RISE_TOLERANCE,
            "cooldown": cooldown_days,
            "room": max(0, capacity - kept),
            "kept": kept,
        },
    ).rowcount
    return SelectionOutcome(selected=selected, kept=kept, replaced=replaced)


def has_scores(conn: psycopg.Connection[Any], snapshot_date: date) -> bool:
    return bool(
        scalar(
            conn,
            f"select exists (select 1 from {CHURN_RISK_SCORES} where snapshot_date = %s)",
            (snapshot_date,),
        )
    )


@contextmanager
def dispatch_session(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection holding the outbox lock until it closes: each status written
    on it is committed at once, and the server releases the lock if the process dies."""
    with connect(url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (OUTBOX_LOCK_KEY,))
        yield conn


@dataclass(frozen=True)
class OutboxTask:
    """A task as the receiver gets it."""

    idempotency_key: str
    snapshot_date: date
    customer_id: str
    priority: int
    handoff_reason: str
    churn_probability: float
    previous_probability: float | None
    risk_band: str
    monthly_charges: Decimal
    revenue_at_risk: float
    talking_points: list[dict[str, Any]]
    model_name: str
    model_version: str

    def payload(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "customer_id": self.customer_id,
            "snapshot_date": self.snapshot_date.isoformat(),
            "priority": self.priority,
            "handoff_reason": self.handoff_reason,
            "churn_probability": self.churn_probability,
            "previous_probability": self.previous_probability,
            "risk_band": self.risk_band,
            "monthly_charges": float(self.monthly_charges),
            "revenue_at_risk": round(self.revenue_at_risk, 2),
            "talking_points": self.talking_points,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }


_TASK_SELECT: Final = f"select {', '.join(TASK_COLUMNS)} from {CRM_OUTBOX}"


def pending_dates(conn: psycopg.Connection[Any], snapshot_date: date | None) -> list[date]:
    """The dates with pending tasks (only ``snapshot_date`` when given), oldest first."""
    rows = conn.execute(
        f"select distinct snapshot_date from {CRM_OUTBOX} where status = 'pending'"
        " and (%(day)s::date is null or snapshot_date = %(day)s) order by snapshot_date",
        {"day": snapshot_date},
    ).fetchall()
    return [row[0] for row in rows]


def pending_batch(
    conn: psycopg.Connection[Any],
    snapshot_date: date,
    *,
    after: tuple[int, str] | None,
    limit: int,
) -> list[OutboxTask]:
    """The next ``limit`` pending tasks of the date in priority order, after ``after``
    (priority, customer id): each batch moves on, whatever became of the previous one."""
    last_priority, last_customer = after if after else (0, "")
    with conn.cursor(row_factory=class_row(OutboxTask)) as cursor:
        return cursor.execute(
            f"{_TASK_SELECT} where snapshot_date = %s and status = 'pending'"
            " and (priority, customer_id) > (%s, %s)"
            " order by priority, customer_id limit %s",
            (snapshot_date, last_priority, last_customer, limit),
        ).fetchall()


def record_attempt(
    conn: psycopg.Connection[Any],
    keys: Sequence[str],
    *,
    status_code: int | None,
    error: str | None,
) -> None:
    """One more request carried these tasks: what it got back (no error: it succeeded)."""
    conn.execute(
        f"update {CRM_OUTBOX} set attempts = attempts + 1, last_attempt_at = now(),"
        " last_status_code = %s, last_error = %s"
        " where idempotency_key = any(%s) and status = 'pending'",
        (status_code, error[:_ERROR_CHARS] if error else None, list(keys)),
    )


def mark_sent(conn: psycopg.Connection[Any], keys: Sequence[str], destination: str) -> int:
    return conn.execute(
        f"update {CRM_OUTBOX} set status = 'sent', sent_at = now(), destination = %s"
        " where idempotency_key = any(%s) and status = 'pending'",
        (destination, list(keys)),
    ).rowcount


def mark_dead_letter(conn: psycopg.Connection[Any], key: str, destination: str) -> int:
    """The task failed for good: it keeps its last status code and error (the answered body)."""
    return conn.execute(
        f"update {CRM_OUTBOX} set status = 'dead_letter', destination = %s"
        " where idempotency_key = %s and status = 'pending'",
        (destination, key),
    ).rowcount


def requeue_dead_letters(conn: psycopg.Connection[Any], snapshot_date: date) -> int:
    """Put the date's dead-lettered tasks back in the queue (after the receiver was fixed)."""
    return conn.execute(
        f"update {CRM_OUTBOX} set status = 'pending', destination = null"
        " where snapshot_date = %s and status = 'dead_letter'",
        (snapshot_date,),
    ).rowcount


def file_tasks(
    conn: psycopg.Connection[Any], snapshot_date: date, destination: str
) -> Iterator[OutboxTask]:
    """What the date's CSV holds: its pending tasks and those written to the same file
    before, in priority order (a server-side cursor: memory stays flat)."""
    with conn.cursor(name="crm_file_tasks", row_factory=class_row(OutboxTask)) as cursor:
        cursor.execute(
            f"{_TASK_SELECT} where snapshot_date = %s"
            " and (status = 'pending' or (status = 'sent' and destination = %s))"
            " order by priority, customer_id",
            (snapshot_date, destination),
        )
        yield from cursor


def mark_pending_sent(conn: psycopg.Connection[Any], snapshot_date: date, destination: str) -> int:
    return conn.execute(
        f"update {CRM_OUTBOX} set status = 'sent', sent_at = now(), destination = %s,"
        " attempts = attempts + 1, last_attempt_at = now()"
        " where snapshot_date = %s and status = 'pending'",
        (destination, snapshot_date),
    ).rowcount


def status_counts(url: str, snapshot_date: date) -> dict[str, int]:
    """The date's tasks per status (every status named, 0 when none)."""
    with connect(url) as conn:
        return status_counts_on(conn, snapshot_date)


def status_counts_on(conn: psycopg.Connection[Any], snapshot_date: date) -> dict[str, int]:
    rows = conn.execute(
        f"select status, count(*) from {CRM_OUTBOX} where snapshot_date = %s group by status",
        (snapshot_date,),
    ).fetchall()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(count) for status, count in rows})
    return counts


def task_rows(url: str, snapshot_date: date, limit: int) -> pd.DataFrame:
    """The date's first tasks by priority, customer ids included: for callers that replace
    them before the rows leave the warehouse's side."""
    with connect(url) as conn:
        return query_frame(
            conn,
            "select priority, customer_id, handoff_reason,"
            " round(churn_probability::numeric, 3)::float as churn_probability,"
            " round(previous_probability::numeric, 3)::float as previous_probability,"
            f" risk_band, status, attempts from {CRM_OUTBOX}"
            " where snapshot_date = %s order by priority, customer_id limit %s",
            (snapshot_date, limit),
        )


def revenue_at_risk(url: str, snapshot_date: date) -> float:
    """The date's tasks' expected monthly revenue at risk, together."""
    with connect(url) as conn:
        total = scalar(
            conn,
            f"select coalesce(sum(revenue_at_risk), 0) from {CRM_OUTBOX} where snapshot_date = %s",
            (snapshot_date,),
        )
    return float(total or 0)


def counts_by_date(url: str, snapshot_date: date | None, limit: int) -> pd.DataFrame:
    """Tasks per status of the latest ``limit`` dates (or of ``snapshot_date``), newest first."""
    with connect(url) as conn:
        return query_frame(
            conn,
            "select snapshot_date,"
            " count(*) filter (where status = 'pending') as pending,"
            " count(*) filter (where status = 'sent') as sent,"
            " count(*) filter (where status = 'dead_letter') as dead_letter,"
            " max(sent_at) as last_sent_at"
            f" from {CRM_OUTBOX}"
            " where %(day)s::date is null or snapshot_date = %(day)s"
            " group by snapshot_date order by snapshot_date desc limit %(limit)s",
            {"day": snapshot_date, "limit": limit},
        )
