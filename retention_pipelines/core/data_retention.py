"""Retention: how long each table keeps personal data, and the purge of what is past it.

Every table that holds customers has a retention in days (``RETENTION_KEEP_*_DAYS``). Its
cut-off is today, in ``RETENTION_TIMEZONE``, minus those days: dates before the cut-off go,
the cut-off date itself and later ones stay. A table is purged partition by partition, one
date per transaction holding the advisory lock its writers take for that date
(:func:`~retention_pipelines.core.warehouse.streams.lock_partition`; the CRM outbox's
writers take one lock for the whole table, and so does its purge), so a purge and a rewrite
of the same date never interleave; the feature table, which dbt writes, is purged under the
warehouse's dbt lock as well. Each transaction appends one audit entry per table it
emptied of that date (table, date, rows, cut-off): a date is never gone without its entry.

What the current champion needs is never purged: the snapshot dates it was trained on are
also its drift reference (``core.drift`` reads their feature rows), so those dates of the raw
tables and of ``features.customer_features`` are kept whatever their age, and the plan says
so. CRM hand-off files (CSV under ``crm_dir``, named with their date) follow the outbox's
retention.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
from psycopg import sql

from retention_pipelines.core import audit, drift, registry
from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.streams import ddl_lock, lock_partition, table_name
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    CUSTOMER_FEATURES,
    INGESTION_RUNS,
    PREDICTION_LOG,
    RAW_REJECTS,
    RAW_SNAPSHOTS,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)

# The first ISO date in a CRM file's name is the date of its tasks.
_FILE_DATE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")
CRM_FILES: Final = "CRM CSV files"


@dataclass(frozen=True)
class RetentionRule:
    """How long one table keeps its rows, and how its dates are found and locked."""

    table: str
    keep_days: int
    setting: str  # the variable that sets keep_days
    lock: str  # the table whose partition lock its writers take for a date
    lock_whole_table: bool = False  # its writers take one lock for the table, not per date
    date_column: str = "snapshot_date"
    timestamped: bool = False  # dated by a timestamp: its calendar day in the timezone
    kept_for_champion: bool = False  # the champion's training dates are kept
    written_by_dbt: bool = False  # purged under the warehouse's dbt lock too


@dataclass(frozen=True)
class RetentionPolicy:
    """The rules of every table, the timezone that says what "today" is, and the CRM files."""

    rules: tuple[RetentionRule, ...]
    timezone: str
    crm_dir: Path
    crm_keep_days: int

    def today(self) -> date:
        return datetime.now(ZoneInfo(self.timezone)).date()


def retention_policy(
    *,
    keep_raw_days: int,
    keep_features_days: int,
    keep_scores_days: int,
    keep_prediction_log_days: int,
    keep_crm_outbox_days: int,
    timezone: str,
    crm_dir: Path,
) -> RetentionPolicy:
    """The policy of the platform's tables. The three raw tables share one retention and one
    lock (ingestion replaces a date of all three in one transaction)."""
    raw = {"keep_days": keep_raw_days, "setting": "RETENTION_KEEP_RAW_DAYS"}
    rules = (
        RetentionRule(RAW_SNAPSHOTS, **raw, lock=RAW_SNAPSHOTS, kept_for_champion=True),
        RetentionRule(RAW_REJECTS, **raw, lock=RAW_SNAPSHOTS, kept_for_champion=True),
        RetentionRule(INGESTION_RUNS, **raw, lock=RAW_SNAPSHOTS, kept_for_champion=True),
        RetentionRule(
            CUSTOMER_FEATURES,
            keep_features_days,
            "RETENTION_KEEP_FEATURES_DAYS",
            lock=CUSTOMER_FEATURES,
            kept_for_champion=True,
            written_by_dbt=True,
        ),
        RetentionRule(
            CHURN_RISK_SCORES, keep_scores_days, "RETENTION_KEEP_SCORES_DAYS", CHURN_RISK_SCORES
        ),
        RetentionRule(
            PREDICTION_LOG,
            keep_prediction_log_days,
            "RETENTION_KEEP_PREDICTION_LOG_DAYS",
            lock=PREDICTION_LOG,
            date_column="predicted_at",
            timestamped=True,
        ),
        RetentionRule(
            CRM_OUTBOX,
            keep_crm_outbox_days,
            "RETENTION_KEEP_CRM_OUTBOX_DAYS",
            lock=CRM_OUTBOX,
            lock_whole_table=True,  # the selection's and the dispatcher's lock
        ),
    )
    return RetentionPolicy(rules, timezone, crm_dir, keep_crm_outbox_days)


def policy_from_settings(settings: RetentionSettings) -> RetentionPolicy:
    return retention_policy(
        keep_raw_days=settings.keep_raw_days,
        keep_features_days=settings.keep_features_days,
        keep_scores_days=settings.keep_scores_days,
        keep_prediction_log_days=settings.keep_prediction_log_days,
        keep_crm_outbox_days=settings.keep_crm_outbox_days,
        timezone=settings.timezone,
        crm_dir=settings.crm_dir,
    )


# --- what the champion needs -----------------------------------------------------------------


@dataclass(frozen=True)
class ChampionData:
    """The current champion and the snapshot dates it was trained on: its training data and,
    read again by every drift report, its reference."""

    version: str
    snapshots: tuple[date, ...]

    def why(self, day: date) -> str:
        return f"champion {registry.MODEL_NAME} v{self.version} trained on {day.isoformat()}"


def champion_data(client: MlflowClient) -> ChampionData | None:
    """What the registry's champion needs kept; None without a champion. A champion whose
    version does not record its snapshots (``data_snapshots``) needs nothing that can be
    named: the drift report cannot find its reference either."""
    version = registry.champion_version(client)
    if version is None:
        return None
    tags = client.get_model_version(registry.MODEL_NAME, version).tags
    try:
        snapshots = drift.snapshot_dates_of(tags.get("data_snapshots"))
    except (LookupError, ValueError):
        logger.warning("%s v%s records no training snapshots", registry.MODEL_NAME, version)
        snapshots = ()
    return ChampionData(version, snapshots)


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TablePlan:
    """One table's dates past the cut-off: those that go and those kept, with their rows."""

    rule: RetentionRule
    cutoff: date
    purge: dict[date, int]
    kept: dict[date, int]


@dataclass(frozen=True)
class PurgePlan:
    today: date
    tables: tuple[TablePlan, ...]
    champion: ChampionData | None
    crm_keep_days: int
    crm_cutoff: date
    crm_files: tuple[tuple[Path, date], ...]

    def kept_dates(self) -> dict[date, str]:
        """Every date kept past a cut-off, with why."""
        if self.champion is None:
            return {}
        days = {day for plan in self.tables for day in plan.kept}
        return {day: self.champion.why(day) for day in sorted(days)}

    def notes(self) -> list[str]:
        """What a person should know besides the counts."""
        if self.champion is None:
            return ["no champion: nothing is kept past its cut-off"]
        if not self.champion.snapshots:
            return [
                f"champion {registry.MODEL_NAME} v{self.champion.version} records no training "
                "snapshots (data_snapshots): nothing can be kept for it"
            ]
        dates = ", ".join(day.isoformat() for day in self.champion.snapshots)
        return [
            f"kept whatever their age: {registry.MODEL_NAME} v{self.champion.version}'s "
            f"training snapshots and drift reference ({dates}) in the raw and feature tables"
        ]


def plan_purge(
    url: str, policy: RetentionPolicy, *, today: date, champion: ChampionData | None
) -> PurgePlan:
    """What a purge on ``today`` removes and keeps, read from the warehouse; changes nothing."""
    protected = set(champion.snapshots) if champion is not None else set()
    tables = []
    with connect(url) as conn:
        for rule in policy.rules:
            cutoff = today - timedelta(days=rule.keep_days)
            past = _dates_before(conn, rule, cutoff, policy.timezone) if _exists(conn, rule) else {}
            keep = protected if rule.kept_for_champion else set()
            tables.append(
                TablePlan(
                    rule,
                    cutoff,
                    purge={day: rows for day, rows in past.items() if day not in keep},
                    kept={day: rows for day, rows in past.items() if day in keep},
                )
            )
    crm_cutoff = today - timedelta(days=policy.crm_keep_days)
    files = tuple((path, day) for path, day in _crm_files(policy.crm_dir) if day < crm_cutoff)
    return PurgePlan(today, tuple(tables), champion, policy.crm_keep_days, crm_cutoff, files)


def _exists(conn: psycopg.Connection, rule: RetentionRule) -> bool:
    """Whether the table is there: dbt's tables are not before the first build."""
    return conn.execute("select to_regclass(%s)", (rule.table,)).fetchone() != (None,)


def _dates_before(
    conn: psycopg.Connection, rule: RetentionRule, cutoff: date, timezone: str
) -> dict[date, int]:
    """Rows per date before ``cutoff``, oldest first."""
    column = sql.Identifier(rule.date_column)
    if rule.timestamped:
        day = sql.SQL("({column} at time zone {zone})::date").format(
            column=column, zone=sql.Literal(timezone)
        )
        bound: object = _midnight(cutoff, timezone)
    else:
        day, bound = column, cutoff
    query = sql.SQL(
        "select {day} as day, count(*) from {table} where {column} < %s group by 1 order by 1"
    ).format(day=day, table=table_name(rule.table), column=column)
    return {row[0]: int(row[1]) for row in conn.execute(query, (bound,))}


def _midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(timezone))


def _crm_files(folder: Path) -> Iterator[tuple[Path, date]]:
    """The CSV files under ``folder`` whose name holds a date, with that date."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*.csv")):
        found = _FILE_DATE.search(path.name)
        if found is None:
            continue
        try:
            yield path, date.fromisoformat(found.group(1))
        except ValueError:
            continue


# --- the purge -------------------------------------------------------------------------------


@dataclass
class PurgeResult:
    plan: PurgePlan
    deleted: dict[str, dict[date, int]] = field(default_factory=dict)  # table -> date -> rows
    files_removed: list[Path] = field(default_factory=list)

    def rows(self, table: str) -> int:
        return sum(self.deleted.get(table, {}).values())


def purge(
    url: str,
    policy: RetentionPolicy,
    *,
    today: date,
    champion: ChampionData | None,
    actor: str,
) -> PurgeResult:
    """Delete what is past its cut-off (see :func:`plan_purge`), one date per transaction
    under the date's partition lock, each with its audit entries; then the old CRM files."""
    plan = plan_purge(url, policy, today=today, champion=champion)
    result = PurgeResult(plan)
    for lock, plans in _by_lock(plan.tables).items():
        dates = sorted({day for table_plan in plans for day in table_plan.purge})
        if not dates:
            continue
        with _dbt_lock_if(url, any(p.rule.written_by_dbt for p in plans)):
            for day in dates:
                counts = _purge_date(url, lock, plans, day, policy.timezone, actor)
                for table, rows in counts.items():
                    result.deleted.setdefault(table, {})[day] = rows
    result.files_removed = _purge_files(url, plan, actor)
    return result


def _by_lock(tables: Iterable[TablePlan]) -> dict[str, list[TablePlan]]:
    groups: dict[str, list[TablePlan]] = {}
    for table_plan in tables:
        groups.setdefault(table_plan.rule.lock, []).append(table_plan)
    return groups


@contextmanager
def _dbt_lock_if(url: str, needed: bool) -> Iterator[None]:
    """dbt's lock, for tables dbt writes: a build rewriting them waits for the purge."""
    with ExitStack() as stack:
        if needed:
            stack.enter_context(ddl_lock(url))
        yield


def _purge_date(
    url: str, lock: str, plans: list[TablePlan], day: date, timezone: str, actor: str
) -> dict[str, int]:
    """One date of the tables sharing ``lock``, in one transaction, with an audit entry per
    table that had rows of it."""
    counts: dict[str, int] = {}
    with connect(url) as conn, conn.transaction():
        if any(table_plan.rule.lock_whole_table for table_plan in plans):
            conn.execute("select pg_advisory_xact_lock(%s)", (table_lock_key(lock),))
        else:
            lock_partition(conn, lock, day)
        for table_plan in plans:
            rule = table_plan.rule
            if day >= table_plan.cutoff or day in table_plan.kept:
                continue
            rows = _delete_date(conn, rule, day, timezone)
            if rows:
                counts[rule.table] = rows
                audit.record(
                    conn,
                    "purge",
                    rule.table,
                    actor=actor,
                    reason=f"past its retention of {rule.keep_days} days ({rule.setting})",
                    details={
                        "date": day,
                        "rows": rows,
                        "cutoff": table_plan.cutoff,
                        "keep_days": rule.keep_days,
                    },
                )
    return counts


def table_lock_key(table: str) -> int:
    """The one advisory lock a table's writers take for the whole table (the CRM outbox's
    selection and dispatcher: ``core.warehouse.crm_outbox.OUTBOX_LOCK_KEY``)."""
    return zlib.crc32(table.encode()) & 0x7FFF_FFFF


def _delete_date(conn: psycopg.Connection, rule: RetentionRule, day: date, timezone: str) -> int:
    column = sql.Identifier(rule.date_column)
    if rule.timestamped:
        statement = sql.SQL("delete from {table} where {column} >= %s and {column} < %s")
        params: tuple[Any, ...] = (
            _midnight(day, timezone),
            _midnight(day + timedelta(days=1), timezone),
        )
    else:
        statement = sql.SQL("delete from {table} where {column} = %s")
        params = (day,)
    query = statement.format(table=table_name(rule.table), column=column)
    return conn.execute(query, params).rowcount


def _purge_files(url: str, plan: PurgePlan, actor: str) -> list[Path]:
    """Remove the old CRM files; each removal's audit entry is committed only once the file
    is gone (a file that cannot be removed leaves no entry)."""
    removed = []
    for path, day in plan.crm_files:
        with connect(url) as conn, conn.transaction():
            audit.record(
                conn,
                "purge",
                CRM_FILES,
                actor=actor,
                reason=(
                    f"past its retention of {plan.crm_keep_days} days "
                    "(RETENTION_KEEP_CRM_OUTBOX_DAYS)"
                ),
                details={"file": path.name, "date": day, "cutoff": plan.crm_cutoff},
            )
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# --- for people ------------------------------------------------------------------------------


def plan_frame(plan: PurgePlan, result: PurgeResult | None = None) -> pd.DataFrame:
    """One row per table: its retention, cut-off, what goes (or went, given ``result``) and
    what is kept past the cut-off and why."""
    rows = []
    for table_plan in plan.tables:
        rule = table_plan.rule
        gone = result.deleted.get(rule.table, {}) if result is not None else table_plan.purge
        rows.append(
            {
                "table": rule.table,
                "keep_days": rule.keep_days,
                "cutoff": table_plan.cutoff.isoformat(),
                "dates": len(gone),
                "rows": sum(gone.values()),
                "kept": _kept_text(plan, table_plan),
            }
        )
    return pd.DataFrame(rows)


def files_text(plan: PurgePlan, result: PurgeResult | None = None) -> str:
    """The CRM files' line: how many are (or were) past their cut-off."""
    count = len(result.files_removed) if result is not None else len(plan.crm_files)
    verb = "removed" if result is not None else "to remove"
    return (
        f"{CRM_FILES} (under the CRM folder, cut-off {plan.crm_cutoff.isoformat()}, "
        f"{plan.crm_keep_days} days): {count} {verb}"
    )


def _kept_text(plan: PurgePlan, table_plan: TablePlan) -> str:
    if not table_plan.kept or plan.champion is None:
        return ""
    return "; ".join(
        f"{rows:,} rows of {day.isoformat()}: {plan.champion.why(day)}"
        for day, rows in table_plan.kept.items()
    )
