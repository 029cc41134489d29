"""A scored warehouse for the dashboard's tests, made the platform's way: the Telco file landed
as two snapshots and turned into features by the real dbt project, scores written with the
scorer's COPY writer, monitoring rows with the monitoring writers, the registry's copy with its
writer, then the analytics models built and tested by real dbt and the reader role granted.

The scores are made up, not predicted (training is the training tests' business), but look
like the scorer's: a probability from the customer's contract, tenure, internet, payment and
charges, banded with the platform's thresholds, and the three strongest of those terms as
reasons, in the scorer's words (``explain.describe``), signed.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from retention_pipelines.core import database
from retention_pipelines.core.explain import describe
from retention_pipelines.core.warehouse.model_versions import (
    MODEL_VERSION_COLUMNS,
    replace_model_versions,
)
from retention_pipelines.core.warehouse.monitoring import (
    PERFORMANCE_COLUMNS,
    replace_performance,
    save_drift_report,
    save_quality,
)
from retention_pipelines.core.warehouse.scores import SCORE_COLUMNS, replace_scores
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import RetentionSettings, get_settings
from retention_pipelines_tests.helpers import build_snapshot

MODEL_NAME = "churn-model"
EARLY_DAY = date(2026, 1, 14)  # every Telco customer, scored by version 1
LATEST_DAY = date(2026, 1, 15)  # all but the last LEFT_OUT customers, scored by version 2
HISTORY_DAYS = (date(2026, 1, 11), date(2026, 1, 12), date(2026, 1, 13))  # HISTORY_CUSTOMERS
HISTORY_CUSTOMERS = 300
LEFT_OUT = 34
NO_DRIFT_REPORT_DAY = EARLY_DAY  # the drift report of this date is missing on purpose
CHAMPION_VERSION = "2"
TRAINING_AUC = {"1": 0.84, "2": 0.86}
SCORED_AT = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class ScoredWarehouse:
    url: str  # the owner's URL of the test database
    latest_customers: int  # customers scored on LATEST_DAY: the call list's length
    left_out: tuple[str, ...]  # customers whose latest score is EARLY_DAY's
    history_customer: str  # a customer scored on every date


def build_scored_warehouse(url: str, telco_csv: Path, work: Path) -> ScoredWarehouse:
    """Fill the migrated database at ``url`` (see the module's docstring)."""
    settings = get_settings()
    latest_csv = work / "latest.csv"
    left_out = _without_last_rows(telco_csv, latest_csv, LEFT_OUT)
    build_snapshot(url, telco_csv, EARLY_DAY.isoformat(), work / "dbt-early")
    build_snapshot(url, latest_csv, LATEST_DAY.isoformat(), work / "dbt-latest")
    early = _features(url, EARLY_DAY)
    latest = _features(url, LATEST_DAY)
    history = early.head(HISTORY_CUSTOMERS)
    for offset, day in enumerate(HISTORY_DAYS):
        _write_scores(url, day, history, "1", settings, shift=-0.3 + 0.1 * offset)
    _write_scores(url, EARLY_DAY, early, "1", settings, shift=0.0)
    _write_scores(url, LATEST_DAY, latest, CHAMPION_VERSION, settings, shift=0.2)
    _write_monitoring(url)
    _write_model_versions(url)
    build_analytics(url, work / "dbt-analytics")
    database.ensure_reader_role(url, database.reader_role_of(settings))
    return ScoredWarehouse(
        url=url,
        latest_customers=len(latest),
        left_out=left_out,
        history_customer=str(history["customer_id"].iloc[0]),
    )


def build_analytics(url: str, target_path: Path) -> None:
    """Build and test every analytics model with the real dbt project, as the nightly
    analytics steps do (no snapshot var: every date is tested)."""
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(
            [dbt_executable(), "build", "--quiet", "--select", "path:models/analytics",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--target-path", str(target_path)],
            check=True,
        )  # fmt: skip


def _without_last_rows(source: Path, target: Path, count: int) -> tuple[str, ...]:
    """Copy the landing file without its last ``count`` customers; return their ids."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    with target.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[:-count])
    return tuple(row[0] for row in rows[-count:])


def _features(url: str, day: date) -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select customer_id, contract, tenure_months, internet_service, payment_method,"
            " monthly_charges::double precision as monthly_charges"
            " from features.customer_features where snapshot_date = %s order by customer_id",
            (day,),
        )
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])


_CONTRACT = {"Month-to-month": 1.3, "One year": -0.4, "Two year": -1.1}
_INTERNET = {"Fiber optic": 0.8, "DSL": -0.1, "No": -0.6}


def _terms(customer: Any) -> list[tuple[str, float]]:
    """The made-up model's terms of one customer: (reason text, contribution)."""
    return [
        (describe("contract", customer.contract), _CONTRACT.get(customer.contract, 0.0)),
        (describe("tenure_months", customer.tenure_months), -0.04 * (customer.tenure_months - 30)),
        (describe("internet_service", customer.internet_service),
         _INTERNET.get(customer.internet_service, 0.0)),
        (describe("payment_method", customer.payment_method),
         0.5 if customer.payment_method == "Electronic check" else -0.2),
        (describe("monthly_charges", customer.monthly_charges),
         0.015 * (customer.monthly_charges - 65)),
    ]  # fmt: skip


def score_row(
    customer: Any, day: date, version: str, settings: RetentionSettings, shift: float
) -> dict[str, Any]:
    """One customer's made-up score of ``day`` in the scorer's columns."""
    terms = _terms(customer)
    probability = 1 / (1 + math.exp(-(-1.0 + shift + sum(value for _, value in terms))))
    band = (
        "high"
        if probability >= settings.risk_high_threshold
        else "medium"
        if probability >= settings.risk_medium_threshold
        else "low"
    )
    strongest = sorted(terms, key=lambda term: -abs(term[1]))[:3]
    row: dict[str, Any] = {
        "snapshot_date": day,
        "customer_id": customer.customer_id,
        "churn_probability": probability,
        "risk_band": band,
        "model_name": MODEL_NAME,
        "model_version": version,
        "scored_at": SCORED_AT,
    }
    for rank, (text, value) in enumerate(strongest, start=1):
        row[f"top_reason_{rank}"] = text
        row[f"top_reason_{rank}_contribution"] = value
    return row


def _write_scores(
    url: str,
    day: date,
    customers: pd.DataFrame,
    version: str,
    settings: RetentionSettings,
    shift: float,
) -> None:
    rows = [
        score_row(customer, day, version, settings, shift)
        for customer in customers.itertuples(index=False)
    ]
    replace_scores(url, day, [pd.DataFrame(rows, columns=list(SCORE_COLUMNS))])


def _write_monitoring(url: str) -> None:
    """Drift reports of the history days and LATEST_DAY (drift on the latest, none on
    NO_DRIFT_REPORT_DAY), data quality failing on LATEST_DAY, and realised performance of
    the history days falling below version 1's training AUC by more than the allowed drop."""
    for day in (*HISTORY_DAYS, LATEST_DAY):
        drifted = day == LATEST_DAY
        columns = ["tenure_months", "monthly_charges"] if drifted else []
        save_drift_report(
            url,
            {
                "snapshot_date": day,
                "reference_model_version": "1",
                "reference_snapshots": "2026-01-01",
                "reference_rows": 5000,
                "current_rows": 5600,
                "dataset_drift": drifted,
                "drift_share": 0.6 if drifted else 0.1,
                "drift_share_threshold": 0.5,
                "drifted_columns": [
                    {"column": name, "method": "psi", "score": 0.3, "threshold": 0.1}
                    for name in columns
                ],
                "column_results": [],
                "findings": [],
                "prediction_drift": None,
                "report_path": f"/reports/drift-{day}.html",
            },
        )
    for day, success in ((EARLY_DAY, True), (LATEST_DAY, False)):
        save_quality(
            url,
            {
                "snapshot_date": day,
                "success": success,
                "expectations": 20,
                "failed": 0 if success else 1,
                "results": [
                    {
                        "expectation": "expect_column_values_to_not_be_null",
                        "column": "monthly_charges",
                        "success": success,
                        "observed": 3,
                    },
                ],
                "docs_path": None,
            },
        )
    calibration = [
        {"bin": i, "mean_probability": (i + 0.5) / 10, "churn_rate": (i + 0.3) / 10,
         "customers": 100 + 10 * i}
        for i in range(10)
    ]  # fmt: skip
    performance = pd.DataFrame(
        [
            {
                "evaluated_on": LATEST_DAY,
                "score_date": day,
                "model_version": "1",
                "customers": 300,
                "churned": 80,
                "roc_auc": auc,
                "top_decile_lift": 2.5,
                "brier": 0.15,
                "mean_probability": 0.3,
                "churn_rate": 0.27,
                "calibration": json.dumps(calibration),
            }
            for day, auc in zip(HISTORY_DAYS, (0.83, 0.81, 0.74), strict=True)
        ],
        columns=list(PERFORMANCE_COLUMNS),
    )
    replace_performance(url, LATEST_DAY, performance)


def _write_model_versions(url: str) -> None:
    """Two versions as the registry sync writes them: 1 promoted first, 2 the champion."""
    synced = SCORED_AT
    rows = [
        (MODEL_NAME, version, registered, version == CHAMPION_VERSION, False,
         registered + timedelta(hours=1), "pytest", reason, "passed the gate",
         "2026-01-01", 5000, TRAINING_AUC[version], 0.14, 2.7, 0.80, synced)
        for version, registered, reason in (
            ("1", datetime(2026, 1, 2, tzinfo=UTC), "first champion"),
            ("2", datetime(2026, 1, 14, 4, tzinfo=UTC), "beat version 1 on ROC AUC"),
        )
    ]  # fmt: skip
    assert all(len(row) == len(MODEL_VERSION_COLUMNS) for row in rows)
    with database.connect(url) as conn, conn.transaction():
        replace_model_versions(conn, MODEL_NAME, rows)
