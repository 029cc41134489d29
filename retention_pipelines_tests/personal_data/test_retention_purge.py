"""The retention purge on a warehouse built from the Telco data by the real dbt project, with
rows of several ages in every table: what is past its cut-off goes, date by date, each date
with its audit entry; the champion's training snapshot stays; the plan, the Dagster asset
and the command line say what went and what was kept and why."""

from __future__ import annotations

import threading
import time as clock
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from retention_pipelines import cli
from retention_pipelines.assets.data_retention import data_retention_purge
from retention_pipelines.core import audit, data_retention, registry
from retention_pipelines.core.warehouse.streams import lock_partition
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    CUSTOMER_FEATURES,
    INGESTION_RUNS,
    PREDICTION_LOG,
    RAW_REJECTS,
    RAW_SNAPSHOTS,
)
from retention_pipelines.resources import DataRetentionResource, MlflowResource, WarehouseResource
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import TELCO_DAY, register_champion

pytestmark = pytest.mark.slow  # the Telco snapshot through dbt, a Dagster run
ZONE = "Europe/Paris"
TODAY = datetime.now(ZoneInfo(ZONE)).date()
KEEP = {"raw": 30, "features": 60, "scores": 60, "prediction_log": 7, "crm_outbox": 90}
# The champion trained on TRAINED; OLD is past every cut-off but the prediction log's is
# shorter still; RECENT is within them all.
TRAINED, OLD, RECENT = TODAY - timedelta(200), TODAY - timedelta(150), TODAY - timedelta(5)
CUSTOMERS_PER_DATE = 40


def _policy(crm_dir: Path) -> data_retention.RetentionPolicy:
    return data_retention.retention_policy(
        keep_raw_days=KEEP["raw"],
        keep_features_days=KEEP["features"],
        keep_scores_days=KEEP["scores"],
        keep_prediction_log_days=KEEP["prediction_log"],
        keep_crm_outbox_days=KEEP["crm_outbox"],
        timezone=ZONE,
        crm_dir=crm_dir,
    )


def _copy_date(conn: psycopg.Connection, table: str, day: date) -> None:
    """The first customers of the Telco snapshot again, as of ``day``."""
    columns = [
        row[0]
        for row in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema || '.' || table_name = %s order by ordinal_position",
            (table,),
        )
    ]
    select = ", ".join("%(day)s" if name == "snapshot_date" else name for name in columns)
    conn.execute(
        f"insert into {table} ({', '.join(columns)}) select {select} from {table}"
        " where snapshot_date = %(source)s order by customer_id limit %(limit)s",
        {"day": day, "source": date.fromisoformat(TELCO_DAY), "limit": CUSTOMERS_PER_DATE},
    )


def _add_day(conn: psycopg.Connection, day: date) -> None:
    """A day of raw rows, a reject, an ingestion record, features, scores and an outbox task."""
    for table in (RAW_SNAPSHOTS, CUSTOMER_FEATURES):
        _copy_date(conn, table, day)
    conn.execute(
        "insert into raw.customer_rejects (snapshot_date, source, row_number, customer_id,"
        " record, reasons) values (%s, 'customers.csv', 7, null, '{\"line\": \"x\"}', '{bad}')",
        (day,),
    )
    conn.execute(
        "insert into raw.ingestion_runs (snapshot_date, source, file_sha256, file_bytes,"
        " rows_read, rows_valid, rows_rejected, duplicates_collapsed)"
        " values (%s, 'customers.csv', 'f00d', 1, 41, 40, 1, 0)",
        (day,),
    )
    conn.execute(
        "insert into ml.churn_risk_scores select snapshot_date, customer_id, 0.5, 'medium',"
        " 'a', 0.1, 'b', 0.1, 'c', 0.1, 'churn-model', '1', now()"
        " from features.customer_features where snapshot_date = %s",
        (day,),
    )
    conn.execute(
        "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key, handoff_reason,"
        " churn_probability, risk_band, monthly_charges, revenue_at_risk, priority,"
        " talking_points, model_name, model_version)"
        " select snapshot_date, customer_id, snapshot_date || '/' || customer_id,"
        "  'entered_high', 0.8, 'high', 50, 40, 1, '[]', 'churn-model', '1'"
        " from features.customer_features where snapshot_date = %s limit 3",
        (day,),
    )


def _log_predictions(conn: psycopg.Connection, at: list[datetime]) -> None:
    for moment in at:
        conn.execute(
            "insert into ml.prediction_log values (%s, 0, %s, '0001-AAAAA', 'champion', true,"
            " 'churn-model', '1', 0.5, 'medium', 3.0, null)",
            (uuid.uuid4(), moment),
        )


# In Paris, 00:30 on the cut-off day is still the day before in UTC: kept all the same.
CUTOFF_LOG = TODAY - timedelta(KEEP["prediction_log"])
PREDICTIONS = {
    "gone": datetime.combine(CUTOFF_LOG - timedelta(1), time(23, 30), ZoneInfo(ZONE)),
    "kept": datetime.combine(CUTOFF_LOG, time(0, 30), ZoneInfo(ZONE)),
    "recent": datetime.combine(TODAY - timedelta(1), time(12), ZoneInfo(ZONE)),
}


@pytest.fixture(scope="module")
def warehouse(telco_warehouse: str) -> str:
    """Part of the Telco snapshot as of TRAINED, OLD and RECENT (the snapshot's own day
    removed), and three answers of the API around the prediction log's cut-off."""
    with psycopg.connect(telco_warehouse) as conn:
        for day in (TRAINED, OLD, RECENT):
            _add_day(conn, day)
        for table in (RAW_SNAPSHOTS, RAW_REJECTS, INGESTION_RUNS, CUSTOMER_FEATURES):
            conn.execute(f"delete from {table} where snapshot_date = %s", (TELCO_DAY,))
        _log_predictions(conn, list(PREDICTIONS.values()))
    return telco_warehouse


@pytest.fixture(scope="module")
def crm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reports") / "crm"
    folder.mkdir()
    for name in (f"retention_tasks_{OLD}.csv", f"retention_tasks_{RECENT}.csv", "notes.csv"):
        (folder / name).write_text("snapshot_date,pseudonym\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def champion(mlflow_uri: str) -> str:
    """A champion trained on TRAINED (its version's data_snapshots tag)."""
    client = MlflowClient(mlflow_uri)
    version = register_champion(client, test_auc=0.8)
    client.set_model_version_tag(registry.MODEL_NAME, version, "data_snapshots", str(TRAINED))
    return version


def _counts(url: str) -> dict[str, dict[date, int]]:
    found: dict[str, dict[date, int]] = {}
    with psycopg.connect(url) as conn:
        for table in (RAW_SNAPSHOTS, RAW_REJECTS, INGESTION_RUNS, CUSTOMER_FEATURES,
                      CHURN_RISK_SCORES, CRM_OUTBOX):  # fmt: skip
            rows = conn.execute(
                f"select snapshot_date, count(*) from {table} group by 1"
            ).fetchall()
            found[table] = {day: int(count) for day, count in rows}
        rows = conn.execute(
            "select (predicted_at at time zone %s)::date, count(*) from ml.prediction_log"
            " group by 1",
            (ZONE,),
        ).fetchall()
        found[PREDICTION_LOG] = {day: int(count) for day, count in rows}
    return found


def _entries_after(url: str, last_id: int) -> list[audit.AuditEntry]:
    return [entry for entry in audit.entries(url, kind="purge") if entry.audit_id > last_id]


def _last_id(url: str) -> int:
    every = audit.entries(url)
    return every[-1].audit_id if every else 0


def test_the_plan_lists_dates_past_each_cut_off_and_keeps_the_champions_snapshot(
    warehouse: str, crm_dir: Path
) -> None:
    before = _counts(warehouse)
    plan = data_retention.plan_purge(
        warehouse,
        _policy(crm_dir),
        today=TODAY,
        champion=data_retention.ChampionData("7", (TRAINED,)),
    )
    by_table = {table_plan.rule.table: table_plan for table_plan in plan.tables}
    n = CUSTOMERS_PER_DATE
    for table, rows in ((RAW_SNAPSHOTS, n), (RAW_REJECTS, 1), (INGESTION_RUNS, 1),
                        (CUSTOMER_FEATURES, n)):  # fmt: skip
        assert by_table[table].purge == {OLD: rows}, table
        assert by_table[table].kept == {TRAINED: rows}, table
    assert by_table[RAW_SNAPSHOTS].cutoff == TODAY - timedelta(KEEP["raw"])
    assert by_table[CHURN_RISK_SCORES].purge == {TRAINED: n, OLD: n}
    assert by_table[CRM_OUTBOX].purge == {TRAINED: 3, OLD: 3}
    assert by_table[PREDICTION_LOG].purge == {CUTOFF_LOG - timedelta(1): 1}
    assert not by_table[CHURN_RISK_SCORES].kept and not by_table[CRM_OUTBOX].kept
    assert plan.kept_dates() == {TRAINED: f"champion churn-model v7 trained on {TRAINED}"}
    assert [path.name for path, _ in plan.crm_files] == [f"retention_tasks_{OLD}.csv"]
    assert _counts(warehouse) == before  # a plan deletes nothing


@pytest.fixture
def platform_env(
    warehouse: str, mlflow_uri: str, crm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The command line pointed at this module's warehouse, MLflow store and CRM folder."""
    monkeypatch.setenv("RETENTION_DATABASE_URL", warehouse)
    monkeypatch.setenv("RETENTION_MLFLOW_DATABASE", urlsplit(mlflow_uri).path.lstrip("/"))
    monkeypatch.setenv("RETENTION_REPORTS_DIR", str(crm_dir.parent))
    monkeypatch.setenv("RETENTION_TIMEZONE", ZONE)
    for name, days in KEEP.items():
        monkeypatch.setenv(f"RETENTION_KEEP_{name.upper()}_DAYS", str(days))
    monkeypatch.setattr(cli.console, "_width", 250)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_dry_run_says_what_would_go_and_what_is_kept_for_the_champion_and_deletes_nothing(
    warehouse: str, champion: str, platform_env: None
) -> None:
    before = _counts(warehouse)
    result = CliRunner().invoke(cli.app, ["purge", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing deleted" in result.output
    [scores] = [line for line in result.output.splitlines() if CHURN_RISK_SCORES in line]
    assert (
        f"{TODAY - timedelta(KEEP['scores'])}" in scores and f" {2 * CUSTOMERS_PER_DATE} " in scores
    )
    [features] = [line for line in result.output.splitlines() if CUSTOMER_FEATURES in line]
    kept = f"{CUSTOMERS_PER_DATE} rows of {TRAINED}: champion churn-model v{champion} trained on"
    assert f"{kept} {TRAINED}" in features
    assert "CRM CSV files" in result.output and "1 to remove" in result.output
    assert f"v{champion}'s training snapshots and drift reference ({TRAINED})" in result.output
    assert _counts(warehouse) == before
    assert (get_settings().crm_dir / f"retention_tasks_{OLD}.csv").exists()


def test_the_asset_purges_date_by_date_with_an_audit_entry_each_and_reports_counts(
    warehouse: str, mlflow_uri: str, champion: str, crm_dir: Path, tmp_path: Path
) -> None:
    last_id, before = _last_id(warehouse), _counts(warehouse)
    resource = WarehouseResource(database_url=warehouse)
    result = dg.materialize(
        [data_retention_purge],
        resources={
            "warehouse": resource,
            "mlflow_registry": MlflowResource(
                warehouse=resource, tracking_uri=mlflow_uri, artifact_root=str(tmp_path)
            ),
            "data_retention_policy": DataRetentionResource(
                **{f"keep_{name}_days": days for name, days in KEEP.items()},
                timezone=ZONE,
                crm_dir=str(crm_dir),
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )

    assert result.success
    after, n = _counts(warehouse), CUSTOMERS_PER_DATE
    for table in (RAW_SNAPSHOTS, RAW_REJECTS, INGESTION_RUNS, CUSTOMER_FEATURES):
        assert set(after[table]) == {TRAINED, RECENT}, table  # the champion's date stays
    assert set(after[CHURN_RISK_SCORES]) == set(after[CRM_OUTBOX]) == {RECENT}
    assert after[PREDICTION_LOG] == {CUTOFF_LOG: 1, TODAY - timedelta(1): 1}
    assert after[RAW_SNAPSHOTS][RECENT] == before[RAW_SNAPSHOTS][RECENT] == n
    assert sorted(path.name for path in crm_dir.iterdir()) == [
        "notes.csv",
        f"retention_tasks_{RECENT}.csv",
    ]

    metadata = result.asset_materializations_for_node("data_retention_purge")[0].metadata
    assert metadata["rows_purged"].value == 4 * n + 2 + 1 + 6  # the CRM file is no row
    assert metadata["ml_churn_risk_scores_rows"].value == 2 * n
    assert metadata["raw_customer_snapshots_rows"].value == n
    assert metadata["crm_files_removed"].value == 1
    assert f"{TRAINED}: champion churn-model v{champion} trained on {TRAINED}" in (
        metadata["kept"].value
    )

    entries = _entries_after(warehouse, last_id)
    assert {entry.actor for entry in entries} == {f"run:{result.run_id}"}
    by_subject = {(e.subject, e.details.get("date")): e.details.get("rows") for e in entries}
    assert by_subject == {
        (RAW_SNAPSHOTS, str(OLD)): n,
        (RAW_REJECTS, str(OLD)): 1,
        (INGESTION_RUNS, str(OLD)): 1,
        (CUSTOMER_FEATURES, str(OLD)): n,
        (CHURN_RISK_SCORES, str(TRAINED)): n,
        (CHURN_RISK_SCORES, str(OLD)): n,
        (PREDICTION_LOG, str(CUTOFF_LOG - timedelta(1))): 1,
        (CRM_OUTBOX, str(TRAINED)): 3,
        (CRM_OUTBOX, str(OLD)): 3,
        (data_retention.CRM_FILES, str(OLD)): None,
    }
    scores = next(e for e in entries if e.subject == CHURN_RISK_SCORES)
    assert scores.details["cutoff"] == str(TODAY - timedelta(KEEP["scores"]))
    assert scores.reason == "past its retention of 60 days (RETENTION_KEEP_SCORES_DAYS)"


def test_the_command_purges_what_has_aged_since_and_records_the_user(
    warehouse: str, champion: str, platform_env: None
) -> None:
    last_id = _last_id(warehouse)
    aged = TODAY - timedelta(KEEP["scores"] + 1)
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "insert into ml.churn_risk_scores select %s, customer_id, churn_probability,"
            " risk_band, top_reason_1, top_reason_1_contribution, top_reason_2,"
            " top_reason_2_contribution, top_reason_3, top_reason_3_contribution, model_name,"
            " model_version, scored_at from ml.churn_risk_scores where snapshot_date = %s",
            (aged, RECENT),
        )
    result = CliRunner().invoke(cli.app, ["purge"])

    assert result.exit_code == 0, result.output
    assert "dry run" not in result.output and "rows gone" in result.output
    assert aged not in _counts(warehouse)[CHURN_RISK_SCORES]
    [entry] = _entries_after(warehouse, last_id)
    assert (entry.subject, entry.details["date"], entry.actor) == (
        CHURN_RISK_SCORES,
        str(aged),
        audit.cli_actor(),
    )


# --- on a warehouse of its own ----------------------------------------------------------------


def test_a_purge_waits_for_a_writer_holding_the_dates_lock(
    database_url: str, tmp_path: Path
) -> None:
    """A nightly rewrite of a date (scoring, under the date's lock) and the purge of that date
    take turns: the purge deletes nothing while the writer's transaction is open."""
    old = TODAY - timedelta(KEEP["scores"] + 10)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into ml.churn_risk_scores values (%s, '0001-AAAAA', 0.5, 'medium', 'a', 0.1,"
            " 'b', 0.1, 'c', 0.1, 'churn-model', '1', now())",
            (old,),
        )
    policy = _policy(tmp_path / "crm")
    done = threading.Event()

    def purge() -> None:
        data_retention.purge(database_url, policy, today=TODAY, champion=None, actor="pytest")
        done.set()

    with psycopg.connect(database_url) as writer:
        lock_partition(writer, CHURN_RISK_SCORES, old)
        worker = threading.Thread(target=purge)
        worker.start()
        clock.sleep(1.5)
        assert not done.is_set()
        assert writer.execute("select count(*) from ml.churn_risk_scores").fetchone() == (1,)
        writer.commit()
    worker.join(timeout=30)
    assert done.is_set()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from ml.churn_risk_scores").fetchone() == (0,)


def test_without_a_champion_nothing_is_kept_past_a_cut_off_and_dbt_tables_may_be_missing(
    database_url: str, tmp_path: Path
) -> None:
    plan = data_retention.plan_purge(database_url, _policy(tmp_path), today=TODAY, champion=None)
    assert plan.notes() == ["no champion: nothing is kept past its cut-off"]
    assert all(not table_plan.purge for table_plan in plan.tables)  # features not built yet
    assert plan.crm_files == ()


def test_the_outbox_is_purged_under_the_lock_its_writers_take() -> None:
    from retention_pipelines.core.warehouse.crm_outbox import OUTBOX_LOCK_KEY  # noqa: PLC0415

    assert data_retention.table_lock_key(CRM_OUTBOX) == OUTBOX_LOCK_KEY
