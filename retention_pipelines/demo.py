"""What ``make demo`` does before it serves the UI: today's partition of everything, built
through the local Dagster instance so the runs show in the UI afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from retention_pipelines.core.database import settings_database_url
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.core.warehouse.features import count_features
from retention_pipelines.core.warehouse.raw import PartitionCounts, partition_counts
from retention_pipelines.local_runs import RunOutcome, RunProgress, local_instance, run_job
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
    run_id: str | None
    log_path: Path | None
    seconds: float
    counts: PartitionCounts
    feature_rows: int

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("landing file", f"{self.landing_file}{' (generated)' if self.generated else ''}"),
            ("Dagster run", self.run_id or "already built earlier: reused"),
            ("rows read", f"{self.counts.rows_read:,}"),
            ("valid rows (raw.customer_snapshots)", f"{self.counts.rows_valid:,}"),
            ("rejected rows (raw.customer_rejects)", f"{self.counts.rows_rejected:,}"),
            ("duplicates collapsed", f"{self.counts.duplicates_collapsed:,}"),
            ("feature rows (features.customer_features)", f"{self.feature_rows:,}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]


class DemoRunError(RuntimeError):
    """The run that builds the demo's partition failed; ``outcome`` says which step, and why."""

    def __init__(self, outcome: RunOutcome) -> None:
        log = outcome.log_path or "above"
        super().__init__(f"the demo run {outcome.run_id} failed: {outcome.error} (log: {log})")
        self.outcome = outcome


def today_in(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def run_demo(
    settings: RetentionSettings,
    *,
    customers: int,
    on_progress: Callable[[RunProgress], None] | None = None,
    log_path: Path | None = None,
) -> DemoReport:
    """Start (or reuse) the database and instance, land a snapshot, build today's partition."""
    started = time.perf_counter()
    url = settings_database_url(settings)
    instance = local_instance(settings)
    today = today_in(settings.timezone)
    landing = settings.resolved_landing_dir / landing_file_name(today)
    generated = not landing.exists()
    if generated:
        from retention_pipelines.datagen import write_landing_csv  # noqa: PLC0415

        landing.parent.mkdir(parents=True, exist_ok=True)
        write_landing_csv(landing, customers, seed=int(today.strftime("%Y%m%d")))
    run_id = None
    if today.isoformat() not in instance.get_materialized_partitions(FEATURE_ASSET):
        outcome = run_job(
            settings,
            DEMO_JOB,
            partition_key=today.isoformat(),
            on_progress=on_progress,
            log_path=log_path,
        )
        run_id = outcome.run_id
        if not outcome.success:
            raise DemoRunError(outcome)
    empty = PartitionCounts(0, 0, 0, 0)
    return DemoReport(
        snapshot_date=today,
        database_url=url,
        dagster_home=settings.dagster_home,
        landing_file=landing,
        generated=generated,
        run_id=run_id,
        log_path=log_path if run_id else None,
        seconds=time.perf_counter() - started,
        counts=partition_counts(url, today) or empty,
        feature_rows=count_features(url, today),
    )
