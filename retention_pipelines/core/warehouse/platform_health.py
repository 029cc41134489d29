"""The platform's health as its tables record it: what the night produced (scores, rejects,
drift, data quality, realised performance, the champion), how the CRM hand-off is going, and
when the nightly run and the retention purge last succeeded. The Prometheus exporter
(``retention exporter``) reads these figures on every scrape it does not answer from its
cache, so each read is one statement:

- the warehouse's figures come from one query, a CTE per figure, each the newest row of its
  table found through the table's primary key. The customers scored on the latest date are
  counted from the key's index (about 0.2 s a million customers), and only when the date or
  the scores table changed since the previous count: the statistics collector's count of
  the table's row writes says so for free. The CRM tasks are counted over a range of the
  outbox's key (the last :data:`CRM_RECENT_DAYS` dates, at most that many days' capacity),
  and the oldest pending one is found through the partial index of pending tasks, which the
  dispatcher keeps small;
- the runs come from Dagster's run storage (dagster-postgres keeps them in the ``runs`` table
  of the Dagster database on the same server): one aggregate over the successful runs of the
  nightly job and of the purge job. The purge is judged by its job's runs, not by the audit
  log: a purge with nothing past its cut-off succeeds without writing an entry.

Both connections are read-only sessions with a statement timeout, tried once: a scrape must
answer in seconds whatever the database does, and a down database is a figure of its own
(``retention_platform_up``), not a reason to wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    DATA_QUALITY,
    DRIFT_REPORTS,
    INGESTION_RUNS,
    MODEL_PERFORMANCE,
    MODEL_VERSIONS,
)

# The registered model whose champion the platform scores with: registry.MODEL_NAME, named
# again here because importing the registry module imports MLflow, which a process that only
# reads a few rows has no use for (a test holds the two equal).
MODEL_NAME: Final = "churn-model"
# The Dagster run storage's table of runs (dagster-postgres, in the instance's database).
DAGSTER_RUNS: Final = "runs"
DAGSTER_SUCCESS: Final = "SUCCESS"
APPLICATION_NAME: Final = "retention-exporter"
# The CRM tasks counted per status: those of today's snapshot date (in RETENTION_TIMEZONE) and
# of the six before, the hand-offs the retention team is still working through.
CRM_RECENT_DAYS: Final = 7

_HEALTH_QUERY: Final = f"""
with latest_scores as (
    select max(snapshot_date) as snapshot_date from {CHURN_RISK_SCORES}
),
score_writes as (
    -- Rows ever inserted, updated or deleted in the scores table (the statistics collector's
    -- counters): while neither they nor the latest date move, the date's count holds.
    select n_tup_ins + n_tup_upd + n_tup_del as writes
    from pg_stat_user_tables
    where relid = %(scores_table)s::regclass
),
scored as (
    select
        latest_scores.snapshot_date,
        score_writes.writes,
        case
            when latest_scores.snapshot_date = %(known_date)s::date
                and score_writes.writes = %(known_writes)s::bigint
            then %(known_rows)s::bigint
            else (
                select count(*) from {CHURN_RISK_SCORES} as scores
                where scores.snapshot_date = latest_scores.snapshot_date
            )
        end as rows
    from latest_scores
    left join score_writes on true
),
ingested as (
    select snapshot_date, rows_read, rows_valid, rows_rejected, duplicates_collapsed,
        rows_suppressed
    from {INGESTION_RUNS}
    order by snapshot_date desc
    limit 1
),
drift as (
    select snapshot_date, dataset_drift, drift_share, drift_share_threshold
    from {DRIFT_REPORTS}
    order by snapshot_date desc
    limit 1
),
quality as (
    select snapshot_date, success, expectations, failed
    from {DATA_QUALITY}
    order by snapshot_date desc
    limit 1
),
champion as (
    select model_version, test_roc_auc
    from {MODEL_VERSIONS}
    where model_name = %(model_name)s and is_champion
    limit 1
),
realised as (
    -- As the retraining sensor judges it: the champion's freshest judged scores, the most
    -- recent labelled date and within it the most recent score date.
    select performance.roc_auc, performance.score_date, performance.evaluated_on
    from {MODEL_PERFORMANCE} as performance
    join champion using (model_version)
    where performance.roc_auc is not null
    order by performance.evaluated_on desc, performance.score_date desc
    limit 1
),
crm_recent as (
    select
        count(*) filter (where status = 'pending') as pending,
        count(*) filter (where status = 'sent') as sent,
        count(*) filter (where status = 'dead_letter') as dead_letter
    from {CRM_OUTBOX}
    where snapshot_date > %(today)s::date - %(crm_recent_days)s::integer
),
crm_pending as (
    -- Read through the partial index of pending tasks (crm_outbox_pending).
    select min(created_at) as oldest_created_at
    from {CRM_OUTBOX}
    where status = 'pending'
)
select
    scored.snapshot_date as scored_date,
    scored.rows as scored_rows,
    scored.writes as score_writes,
    ingested.snapshot_date as ingested_date,
    ingested.rows_read,
    ingested.rows_valid,
    ingested.rows_rejected,
    ingested.duplicates_collapsed,
    ingested.rows_suppressed,
    drift.snapshot_date as drift_date,
    drift.dataset_drift,
    drift.drift_share,
    drift.drift_share_threshold,
    quality.snapshot_date as quality_date,
    quality.success as quality_passed,
    quality.expectations as quality_expectations,
    quality.failed as quality_failed,
    champion.model_version as champion_version,
    champion.test_roc_auc as champion_test_roc_auc,
    realised.roc_auc as realised_roc_auc,
    realised.score_date as realised_score_date,
    realised.evaluated_on as realised_evaluated_on,
    crm_recent.pending as crm_pending,
    crm_recent.sent as crm_sent,
    crm_recent.dead_letter as crm_dead_letter,
    crm_pending.oldest_created_at as crm_oldest_pending_at
from (select) as one_row
left join scored on true
left join ingested on true
left join drift on true
left join quality on true
left join champion on true
left join realised on true
left join crm_recent on true
left join crm_pending on true
"""

_RUNS_QUERY: Final = f"""
select
    pipeline_name as job,
    min(end_time) as first_success,
    max(end_time) as last_success,
    max(partition) filter (where partition ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$')
        as latest_date
from {DAGSTER_RUNS}
where pipeline_name = any(%(jobs)s) and status = %(status)s
group by pipeline_name
"""


@dataclass(frozen=True)
class Ingestion:
    """Where the rows of the latest ingested date went (``raw.ingestion_runs``)."""

    snapshot_date: date
    rows_read: int
    rows_valid: int
    rows_rejected: int
    duplicates_collapsed: int
    rows_suppressed: int  # rows of erased customers, left out

    @property
    def reject_share(self) -> float:
        """As the ingestion's blocking check computes it: rejected over read."""
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0


@dataclass(frozen=True)
class Drift:
    """The latest drift report's verdict (``monitoring.drift_reports``)."""

    snapshot_date: date
    dataset_drift: bool
    drift_share: float
    drift_share_threshold: float


@dataclass(frozen=True)
class Quality:
    """The latest Great Expectations verdict (``monitoring.data_quality``)."""

    snapshot_date: date
    passed: bool
    expectations: int
    failed: int


@dataclass(frozen=True)
class Champion:
    """The champion as ``ml.model_versions`` copies it from the registry, with its freshest
    realised ROC AUC (None until labels have judged its scores)."""

    version: str
    test_roc_auc: float | None
    realised_roc_auc: float | None
    realised_score_date: date | None
    realised_evaluated_on: date | None


@dataclass(frozen=True)
class ScoredRows:
    """The customers scored on the latest date (None: nothing scored yet), counted when the
    scores table had seen ``writes`` row writes (None: the server keeps no such count)."""

    snapshot_date: date | None
    rows: int
    writes: int | None


NOTHING_COUNTED: Final = ScoredRows(snapshot_date=None, rows=0, writes=None)


@dataclass(frozen=True)
class CrmTasks:
    """The CRM hand-off (``ml.crm_outbox``): the tasks of the last :data:`CRM_RECENT_DAYS`
    snapshot dates per status, and when the oldest task still pending, of any date, was
    selected (None: none is pending)."""

    pending: int
    sent: int
    dead_letter: int
    oldest_pending_at: datetime | None

    def by_status(self) -> dict[str, int]:
        return {"pending": self.pending, "sent": self.sent, "dead_letter": self.dead_letter}


@dataclass(frozen=True)
class WarehouseHealth:
    """The warehouse's figures; a part is None while its table has no row (a new platform)."""

    scored: ScoredRows
    ingestion: Ingestion | None
    drift: Drift | None
    quality: Quality | None
    champion: Champion | None
    crm: CrmTasks


@dataclass(frozen=True)
class JobRuns:
    """A job's successful runs in Dagster's run storage: when the first and the newest
    ended, and the newest date (partition) one succeeded for. None: no such run."""

    first_success_at: datetime | None
    last_success_at: datetime | None
    latest_date: date | None


NO_RUNS: Final = JobRuns(first_success_at=None, last_success_at=None, latest_date=None)


@dataclass(frozen=True)
class NightlyWindow:
    """The night whose scores are due by now: its date (the partition the 02:00 run scores)
    and the deadline by which its run must have succeeded."""

    due_date: date
    deadline: datetime


def read_warehouse_health(
    url: str, *, today: date, timeout_s: float, known: ScoredRows = NOTHING_COUNTED
) -> WarehouseHealth:
    """The warehouse's figures in one statement (see the module's docstring), the CRM tasks
    counted over the dates up to ``today``'s :data:`CRM_RECENT_DAYS`; the latest date's
    scores are counted again unless ``known``, the previous read's count, still holds."""
    parameters = {
        "today": today,
        "crm_recent_days": CRM_RECENT_DAYS,
        "model_name": MODEL_NAME,
        "scores_table": CHURN_RISK_SCORES,
        "known_date": known.snapshot_date,
        "known_writes": known.writes,
        "known_rows": known.rows,
    }
    with _read_only(url, timeout_s) as conn:
        row = conn.execute(_HEALTH_QUERY, parameters).fetchone()
    assert row is not None  # noqa: S101  # a select from one row returns one row
    return _warehouse_health(row)


def read_job_runs(dagster_url: str, jobs: Sequence[str], *, timeout_s: float) -> dict[str, JobRuns]:
    """The successful runs of each of ``jobs`` in the Dagster database at ``dagster_url``
    (:data:`NO_RUNS` for a job without one, and for every job while the instance has not
    created its tables: no Dagster process has opened it yet)."""
    found = dict.fromkeys(jobs, NO_RUNS)
    with _read_only(dagster_url, timeout_s) as conn:
        try:
            rows = conn.execute(_RUNS_QUERY, {"jobs": list(jobs), "status": DAGSTER_SUCCESS})
            found.update({row["job"]: _job_runs(row) for row in rows.fetchall()})
        except psycopg.errors.UndefinedTable:
            pass
    return found


def nightly_window(now: datetime, timezone: str, deadline: time) -> NightlyWindow:
    """The latest night whose deadline (``deadline`` on its own date, in ``timezone``, the
    timezone of the daily partitions and the schedule) is not in the future at ``now``.

    Before the deadline today, yesterday's night is the one due; from the deadline on,
    today's. Computed here rather than in PromQL, whose clock functions know only UTC.
    """
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    due_date = local.date()
    due = datetime.combine(due_date, deadline, tzinfo=zone)
    if due > local:
        due_date -= timedelta(days=1)
        due = datetime.combine(due_date, deadline, tzinfo=zone)
    return NightlyWindow(due_date=due_date, deadline=due)


def start_of_day(day: date, timezone: str) -> datetime:
    """Midnight at the start of ``day`` in ``timezone``: a date as a point in time."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone))


def _read_only(url: str, timeout_s: float) -> psycopg.Connection[dict[str, Any]]:
    """One attempt at a read-only session whose statements stop after ``timeout_s``."""
    milliseconds = max(1, round(timeout_s * 1000))
    return connect(
        url,
        retry_s=0,
        row_factory=dict_row,
        connect_timeout=max(1, round(timeout_s)),
        application_name=APPLICATION_NAME,
        options=(f"-c default_transaction_read_only=on -c statement_timeout={milliseconds}"),
    )  # type: ignore[return-value]  # row_factory=dict_row makes the rows dicts


def _job_runs(row: dict[str, Any]) -> JobRuns:
    first, last, latest = row["first_success"], row["last_success"], row["latest_date"]
    return JobRuns(
        first_success_at=None if first is None else datetime.fromtimestamp(first, UTC),
        last_success_at=None if last is None else datetime.fromtimestamp(last, UTC),
        latest_date=None if latest is None else date.fromisoformat(latest),
    )


def _warehouse_health(row: dict[str, Any]) -> WarehouseHealth:
    return WarehouseHealth(
        scored=ScoredRows(
            snapshot_date=row["scored_date"],
            rows=int(row["scored_rows"] or 0),
            writes=row["score_writes"],
        ),
        ingestion=_ingestion(row),
        drift=_drift(row),
        quality=_quality(row),
        champion=_champion(row),
        crm=CrmTasks(
            pending=int(row["crm_pending"] or 0),
            sent=int(row["crm_sent"] or 0),
            dead_letter=int(row["crm_dead_letter"] or 0),
            oldest_pending_at=row["crm_oldest_pending_at"],
        ),
    )


def _ingestion(row: dict[str, Any]) -> Ingestion | None:
    if row["ingested_date"] is None:
        return None
    return Ingestion(
        snapshot_date=row["ingested_date"],
        rows_read=row["rows_read"],
        rows_valid=row["rows_valid"],
        rows_rejected=row["rows_rejected"],
        duplicates_collapsed=row["duplicates_collapsed"],
        rows_suppressed=row["rows_suppressed"],
    )


def _drift(row: dict[str, Any]) -> Drift | None:
    if row["drift_date"] is None:
        return None
    return Drift(
        snapshot_date=row["drift_date"],
        dataset_drift=bool(row["dataset_drift"]),
        drift_share=float(row["drift_share"]),
        drift_share_threshold=float(row["drift_share_threshold"]),
    )


def _quality(row: dict[str, Any]) -> Quality | None:
    if row["quality_date"] is None:
        return None
    return Quality(
        snapshot_date=row["quality_date"],
        passed=bool(row["quality_passed"]),
        expectations=row["quality_expectations"],
        failed=row["quality_failed"],
    )


def _champion(row: dict[str, Any]) -> Champion | None:
    if row["champion_version"] is None:
        return None
    test_auc, realised = row["champion_test_roc_auc"], row["realised_roc_auc"]
    return Champion(
        version=row["champion_version"],
        test_roc_auc=None if test_auc is None else float(test_auc),
        realised_roc_auc=None if realised is None else float(realised),
        realised_score_date=row["realised_score_date"],
        realised_evaluated_on=row["realised_evaluated_on"],
    )
