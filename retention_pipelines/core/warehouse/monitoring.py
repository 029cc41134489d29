"""The ``monitoring`` tables: drift reports and data quality verdicts (one row per date), and
realised model performance (rows per labelled date). Each is replaced per its date in one
transaction; the retraining sensor reads them back, and people query them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, Final

import pandas as pd
from psycopg.types.json import Jsonb

from retention_pipelines.core.database import connect
from retention_pipelines.core.warehouse.streams import (
    copy_in,
    delete_partition,
    partition_transaction,
    query_frame,
)
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CUSTOMER_FEATURES,
    DATA_QUALITY,
    DRIFT_REPORTS,
    MODEL_PERFORMANCE,
)

DRIFT_COLUMNS: Final[tuple[str, ...]] = (
    "snapshot_date",
    "reference_model_version",
    "reference_snapshots",
    "reference_rows",
    "current_rows",
    "dataset_drift",
    "drift_share",
    "drift_share_threshold",
    "drifted_columns",
    "column_results",
    "findings",
    "prediction_drift",
    "report_path",
)
_DRIFT_JSON: Final = frozenset(
    {"drifted_columns", "column_results", "findings", "prediction_drift"}
)
QUALITY_COLUMNS: Final[tuple[str, ...]] = (
    "snapshot_date",
    "success",
    "expectations",
    "failed",
    "results",
    "docs_path",
)
PERFORMANCE_COLUMNS: Final[tuple[str, ...]] = (
    "evaluated_on",
    "score_date",
    "model_version",
    "customers",
    "churned",
    "roc_auc",
    "top_decile_lift",
    "brier",
    "mean_probability",
    "churn_rate",
    "calibration",
)
CALIBRATION_BINS: Final = 10


def _replace_row(url: str, table: str, columns: tuple[str, ...], row: Mapping[str, Any]) -> None:
    """Replace the row of ``row["snapshot_date"]`` in a table keyed by date."""
    day = row["snapshot_date"]
    placeholders = ", ".join(["%s"] * len(columns))
    with partition_transaction(url, table, day) as conn:
        delete_partition(conn, table, day)
        conn.execute(
            f"insert into {table} ({', '.join(columns)}) values ({placeholders})",
            [row[column] for column in columns],
        )


# --- drift -----------------------------------------------------------------------------------


def save_drift_report(url: str, row: Mapping[str, Any]) -> None:
    """Replace the date's row of ``monitoring.drift_reports`` (JSON columns given as Python
    lists and dicts)."""
    values = {
        column: Jsonb(row[column])
        if column in _DRIFT_JSON and row[column] is not None
        else row[column]
        for column in DRIFT_COLUMNS
    }
    _replace_row(url, DRIFT_REPORTS, DRIFT_COLUMNS, values)


def latest_drift_reports(url: str, limit: int = 1) -> list[dict[str, Any]]:
    """The newest ``limit`` rows of ``monitoring.drift_reports``, newest first."""
    with connect(url) as conn:
        rows = query_frame(
            conn,
            f"select {', '.join(DRIFT_COLUMNS)} from {DRIFT_REPORTS}"
            " order by snapshot_date desc limit %s",
            (limit,),
        )
    return rows.to_dict("records")  # type: ignore[return-value]


# --- data quality ----------------------------------------------------------------------------


def save_quality(url: str, row: Mapping[str, Any]) -> None:
    """Replace the date's row of ``monitoring.data_quality`` (``results`` as a JSON list)."""
    _replace_row(url, DATA_QUALITY, QUALITY_COLUMNS, {**row, "results": Jsonb(row["results"])})


def quality_passed(url: str, snapshot_date: date) -> bool | None:
    """The date's Great Expectations verdict (None: the suite has not run on it)."""
    with connect(url) as conn:
        row = conn.execute(
            f"select success from {DATA_QUALITY} where snapshot_date = %s", (snapshot_date,)
        ).fetchone()
    return None if row is None else bool(row[0])


# --- realised performance --------------------------------------------------------------------

# One pass: the labelled customers of the day joined to the scores in the horizon (`joined`,
# materialized once), ranked per group (one sort serves all three windows), aggregated per
# group, with the calibration bins of each group as a jsonb array. The AUC comes back as the
# positives' mid-rank sum (Mann-Whitney); the caller turns it into the AUC.
_REALISED = f"""
with labelled as (
    select customer_id, churned::int as label
    from {CUSTOMER_FEATURES}
    where snapshot_date = %(day)s and churned is not null
),
joined as materialized (
    select s.snapshot_date as score_date, s.model_version, s.customer_id,
           s.churn_probability as probability,
           least(greatest(s.churn_probability, 1e-7), 1 - 1e-7) as clipped,
           l.label
    from {CHURN_RISK_SCORES} s
    join labelled l on l.customer_id = s.customer_id
    where s.snapshot_date >= %(first)s and s.snapshot_date < %(day)s
),
ranked as (
    select score_date, model_version, probability, clipped, label,
           rank() over by_probability
               + (count(*) over (partition by score_date, model_version, clipped) - 1) / 2.0
               as mid_rank,
           count(*) over by_group - row_number() over by_position + 1 as from_top,
           count(*) over by_group as group_size
    from joined
    window by_group as (partition by score_date, model_version),
           by_probability as (by_group order by clipped),
           by_position as (by_group order by clipped, customer_id desc)
),
metrics as (
    select score_date, model_version,
           count(*) as customers,
           sum(label) as churned,
           coalesce(sum(mid_rank) filter (where label = 1), 0) as positive_rank_sum,
           avg(label) filter (where from_top <= greatest(1, group_size / 10)) as top_decile_rate,
           avg((clipped - label) ^ 2) as brier,
           avg(probability) as mean_probability,
           avg(label) as churn_rate
    from ranked
    group by score_date, model_version
),
bins as (
    select score_date, model_version,
           least(width_bucket(probability, 0, 1, {CALIBRATION_BINS}), {CALIBRATION_BINS}) as bin,
           avg(probability) as mean_probability, avg(label) as churn_rate, count(*) as customers
    from joined
    group by 1, 2, 3
),
calibration as (
    select score_date, model_version,
           jsonb_agg(jsonb_build_object(
               'bin', bin, 'mean_probability', mean_probability,
               'churn_rate', churn_rate, 'customers', customers) order by bin) as bins
    from bins
    group by score_date, model_version
)
select m.score_date, m.model_version, m.customers, m.churned, m.positive_rank_sum,
       m.top_decile_rate, m.brier, m.mean_probability, m.churn_rate, c.bins
from metrics m
join calibration c using (score_date, model_version)
order by m.score_date, m.model_version
"""
REALISED_COLUMNS: Final[tuple[str, ...]] = (
    "score_date",
    "model_version",
    "customers",
    "churned",
    "positive_rank_sum",
    "top_decile_rate",
    "brier",
    "mean_probability",
    "churn_rate",
    "bins",
)


def realised_groups(url: str, evaluated_on: date, first_score_date: date) -> pd.DataFrame:
    """Per (score date, model version) with scores from ``first_score_date`` up to the day
    before ``evaluated_on``, joined to that day's labels: the figures of
    :data:`REALISED_COLUMNS`, one row per group, computed inside Postgres (memory stays
    bounded whatever the customer count)."""
    with connect(url) as conn, conn.transaction():
        # A hash join, never a nested loop: the day's labels were usually written minutes ago
        # and the planner would expect a handful of rows where there are millions.
        conn.execute("set local enable_nestloop = off")
        rows = conn.execute(_REALISED, {"day": evaluated_on, "first": first_score_date}).fetchall()
    return pd.DataFrame(rows, columns=list(REALISED_COLUMNS))


def replace_performance(url: str, evaluated_on: date, rows: pd.DataFrame) -> None:
    """Replace the rows of ``evaluated_on`` with ``rows`` (:data:`PERFORMANCE_COLUMNS`,
    ``calibration`` as JSON text) in one transaction."""
    with partition_transaction(url, MODEL_PERFORMANCE, evaluated_on) as conn:
        delete_partition(conn, MODEL_PERFORMANCE, evaluated_on, key_column="evaluated_on")
        copy_in(conn, MODEL_PERFORMANCE, rows, PERFORMANCE_COLUMNS)


def read_performance(url: str, evaluated_on: date) -> pd.DataFrame:
    """The rows recorded for one labelled date, in score date and version order."""
    with connect(url) as conn:
        return query_frame(
            conn,
            f"select {', '.join(PERFORMANCE_COLUMNS)} from {MODEL_PERFORMANCE}"
            " where evaluated_on = %s order by score_date, model_version",
            (evaluated_on,),
        )


def latest_realised_auc(url: str, version: str) -> tuple[date, date, float] | None:
    """(evaluated_on, score_date, ROC AUC) of ``version``'s freshest judged scores: the most
    recent labelled date, and within it the most recent score date (one-class groups, which
    have no AUC, skipped)."""
    with connect(url) as conn:
        row = conn.execute(
            f"select evaluated_on, score_date, roc_auc from {MODEL_PERFORMANCE}"
            " where model_version = %s and roc_auc is not null"
            " order by evaluated_on desc, score_date desc limit 1",
            (version,),
        ).fetchone()
    return None if row is None else (row[0], row[1], float(row[2]))


def realised_auc_history(url: str, *, until: date, days: int = 90) -> pd.DataFrame:
    """Per score date of the ``days`` before ``until`` and model version, the realised ROC
    AUC by the latest labels up to ``until`` (a score date is judged again by every labelled
    snapshot within the horizon after it; the latest judgement is the one shown)."""
    with connect(url) as conn:
        return query_frame(
            conn,
            "select distinct on (score_date, model_version)"
            " score_date, model_version, evaluated_on, roc_auc, customers"
            f" from {MODEL_PERFORMANCE}"
            " where evaluated_on <= %(until)s and score_date >= %(since)s"
            " and roc_auc is not null"
            " order by score_date, model_version, evaluated_on desc",
            {"until": until, "since": until - timedelta(days=days)},
        )
