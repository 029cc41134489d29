"""What ``make demo`` does before it serves the UI: today's partition of everything, built
through the local Dagster instance so the runs show in the UI afterwards."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
from rich.console import Console

from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.instance import write_local_instance
from retention_pipelines.resources import prepared_database_url
from retention_pipelines.settings import RetentionSettings

DEMO_JOB = "daily_snapshot_job"
FEATURE_ASSET = dg.AssetKey("customer_features")


@dataclass
class DemoReport:
    snapshot_date: date
    database_url: str
    dagster_home: Path
    landing_file: Path
    generated: bool
    built_now: bool
    run_id: str | None
    seconds: float
    rows_read: int
    rows_valid: int
    rows_rejected: int
    duplicates_collapsed: int
    feature_rows: int

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("landing file", f"{self.landing_file}{' (generated)' if self.generated else ''}"),
            ("Dagster run", self.run_id or "already built earlier: reused"),
            ("rows read", f"{self.rows_read:,}"),
            ("valid rows (raw.customer_snapshots)", f"{self.rows_valid:,}"),
            ("rejected rows (raw.customer_rejects)", f"{self.rows_rejected:,}"),
            ("duplicates collapsed", f"{self.duplicates_collapsed:,}"),
            ("feature rows (features.customer_features)", f"{self.feature_rows:,}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]


def today_in(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def run_demo(settings: RetentionSettings, *, customers: int, console: Console) -> DemoReport:
    """Start (or reuse) the database and instance, land a snapshot, build today's partition."""
    started = time.perf_counter()
    url = prepared_database_url()
    home = write_local_instance(settings, url)
    os.environ["DAGSTER_HOME"] = str(home)
    today = today_in(settings.timezone)
    landing = settings.resolved_landing_dir / landing_file_name(today)
    generated = not landing.exists()
    if generated:
        from retention_pipelines.datagen import write_landing_csv  # noqa: PLC0415

        landing.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"generating {customers:,} demo customers into {landing}")
        write_landing_csv(landing, customers, seed=int(today.strftime("%Y%m%d")))
    instance = dg.DagsterInstance.get()
    run_id = None
    if not _already_built(instance, today.isoformat()):
        from retention_pipelines.definitions import defs  # noqa: PLC0415

        console.print(f"materializing partition {today} of {DEMO_JOB} (ingestion, then dbt)")
        result = defs.resolve_job_def(DEMO_JOB).execute_in_process(
            instance=instance, partition_key=today.isoformat(), raise_on_error=False
        )
        run_id = result.run_id
        if not result.success:
            raise RuntimeError(f"the demo run {run_id} failed; open it in the Dagster UI")
    return _report(url, home, landing, today, generated, run_id, time.perf_counter() - started)


def _already_built(instance: dg.DagsterInstance, partition: str) -> bool:
    return partition in instance.get_materialized_partitions(FEATURE_ASSET)


def _report(
    url: str,
    home: Path,
    landing: Path,
    today: date,
    generated: bool,
    run_id: str | None,
    seconds: float,
) -> DemoReport:
    with psycopg.connect(url) as conn:
        run = conn.execute(
            "select rows_read, rows_valid, rows_rejected, duplicates_collapsed"
            " from raw.ingestion_runs where snapshot_date = %s",
            (today,),
        ).fetchone() or (0, 0, 0, 0)
        features = conn.execute(
            "select count(*) from features.customer_features where snapshot_date = %s", (today,)
        ).fetchone()
    return DemoReport(
        snapshot_date=today,
        database_url=url,
        dagster_home=home,
        landing_file=landing,
        generated=generated,
        built_now=run_id is not None,
        run_id=run_id,
        seconds=seconds,
        rows_read=int(run[0]),
        rows_valid=int(run[1]),
        rows_rejected=int(run[2]),
        duplicates_collapsed=int(run[3]),
        feature_rows=int(features[0]) if features else 0,
    )
