"""One night at scale: every nightly stage measured on generated customers, then the same night
planned for ``--target`` customers from those measurements.

    RETENTION_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        uv run python benchmarks/night_at_scale.py [--customers 1000000] [--target 100000000] \\
        [--window-hours 4] [--pod-memory-gib 4] [--history-dates 30]

In a throwaway warehouse database and MLflow database on the platform's Postgres
(RETENTION_DATABASE_URL or the embedded server; both dropped at the end, whatever happens) it
trains a champion with a small budget on a labelled snapshot (``retrain_job``; not measured),
writes one unlabelled landing file of ``--customers`` customers and runs the night's stages on
it, as the nightly job orders them. Each stage runs in a fresh process that first loads the
code location, as a step pod does, so its peak RSS (``VmHWM``, plus dbt's own process for the
dbt steps) is what the step's pod holds:

1. ``ingestion``: the landing file checked, validated and loaded as the raw partition, with the
   asset's counts and preview;
2. ``features``: ``dbt build`` of the staging and feature models for the date;
3. ``quality``: the Great Expectations suite on the date;
4. ``scoring``: the champion's scores with reasons, with the asset's summary and checks;
5. ``drift``: the drift report against the champion's training data;
6. ``analytics``: ``dbt build`` of the analytics models (the call list rebuilt); then, the
   scores vacuumed, built again with the night's scores alone and with three copies of them
   as earlier dates, which measures what each scored date kept in ``ml.churn_risk_scores``
   adds to the call list's rebuild.

Per stage: seconds, rows/s, peak RSS, rows written and their rate (Postgres write throughput),
the bytes the stage added to its tables, the WAL records of the database's relations
(``pg_walinspect``, PostgreSQL 15+, with a temporary replication slot keeping the segments until
they are read; without them, the whole server's WAL, other sessions' writes included),
temporary file bytes of the database, and CPU seconds of the
stage's processes and of its Postgres backends (read from ``/proc`` when the server runs on this
machine). What does not grow with the customers is measured apart and not scaled: a dbt build
of a date without rows, loading the champion, importing Great Expectations, reading the drift
reference; Evidently grows only up to ``RETENTION_DRIFT_MAX_ROWS`` rows (the sample it reads).
``--save FILE`` keeps the measurements; ``--replan FILE`` plans another target, window or pod
size from them without measuring again.

Then the night at ``--target`` customers, scaled linearly from those figures: per stage the
time on one process, the memory per pod (flat for the chunked stages, growing with the date for
the quality suite, which reads the date whole), the partitions of the date and pods per step
for the night to fit ``--window-hours`` in pods of ``--pod-memory-gib``, the Postgres write
throughput needed (rows/s, and MB/s of table and WAL), and the limits in the order the
customer count reaches them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psycopg

from retention_pipelines.core import database, registry
from retention_pipelines.settings import get_settings

TRAIN_DAY: Final = date(2026, 3, 31)
NIGHT: Final = date(2026, 4, 1)
EMPTY_DAY: Final = date(2026, 4, 15)  # a date without rows: the dbt steps' fixed cost
HISTORY_COPIES: Final = 3  # earlier scored dates added to time the call list's history
SMALL_BUDGET: Final = {
    "xgboost_trials": 10,
    "xgboost_timeout_s": 60,
    "catboost_trials": 3,
    "catboost_timeout_s": 90,
}
FEATURE_MODELS: Final = ["--select", "path:models/staging", "path:models/features"]
ANALYTICS_MODELS: Final = [
    "--select", "path:models/analytics", "--exclude", "path:models/analytics/model_health",
]  # fmt: skip
WRITTEN_SCHEMAS: Final = ("raw", "staging", "features", "ml", "monitoring", "analytics")
# The tables whose size per customer the report names.
SIZED_TABLES: Final = (
    "raw.customer_snapshots",
    "features.customer_features",
    "ml.churn_risk_scores",
    "analytics.customer_risk_latest",
)
# Ingestion copies the whole file into a temporary table first (core.warehouse.raw).
INGEST_TEMP_BUFFERS: Final = 512 * 1024**2
GIB: Final = 1024**3


# --- What each stage is, read from the code. ---


@dataclass(frozen=True)
class Kind:
    """How a stage grows: ``memory`` is ``chunk`` (bounded by a chunk setting), ``date`` (the
    whole date in memory), ``sample`` (at most the drift sample) or ``client`` (the work runs in
    Postgres; the pod holds dbt). ``split`` says whether partitions of the date divide its
    work between pods; ``why`` says what bounds the stage, for people."""

    memory: str
    split: bool
    why: str


KINDS: Final = {
    "ingestion": Kind("chunk", split=True,
                      why="RETENTION_INGEST_CHUNK_ROWS rows at a time; one file per partition"),
    "features": Kind("client", split=False,
                     why="one insert of the date inside Postgres"),
    "quality": Kind("date", split=True,
                    why="reads the whole date into one frame"),
    "scoring": Kind("chunk", split=True,
                    why="RETENTION_SCORING_CHUNK_ROWS rows at a time"),
    "drift": Kind("sample", split=False,
                  why="a sample of at most RETENTION_DRIFT_MAX_ROWS rows"),
    "analytics": Kind("client", split=False,
                      why="the call list rebuilt inside Postgres from every scored date kept"),
}  # fmt: skip


# --- Measured figures of one stage, and the pure arithmetic that scales them. ---


@dataclass(frozen=True)
class Stage:
    """One stage as measured on ``rows`` customers."""

    name: str
    rows: int
    seconds: float
    fixed_s: float  # does not grow with the customers
    capped_s: float  # grows with them up to the drift sample, then stays
    rows_written: int
    peak_mib: float
    base_mib: float  # held before any row: the code location loaded, the stage's libraries
    client_cpu_s: float
    postgres_cpu_s: float | None
    table_bytes: int
    wal_bytes: int
    temp_bytes: int
    per_history_date_s: float = 0.0  # the call list: seconds per further scored date kept
    growth: dict[str, int] = field(default_factory=dict)  # bytes added, per table
    wal_exact: bool = True  # False: the server's WAL, other sessions' included


@dataclass(frozen=True)
class Night:
    """Everything measured, enough to plan any target again (``--replan``)."""

    customers: int
    stages: list[Stage]
    file_bytes: int
    max_file_bytes: int
    drift_max_rows: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Night:
        values = json.loads(text)
        values["stages"] = [Stage(**stage) for stage in values["stages"]]
        return cls(**values)


@dataclass(frozen=True)
class Scale:
    """The night to plan: ``target`` customers from a measurement on ``measured``."""

    measured: int
    target: int
    window_s: float
    pod_mib: float
    drift_max_rows: int
    history_dates: int

    @property
    def factor(self) -> float:
        return self.target / self.measured

    @property
    def sample_factor(self) -> float:
        """How much the drift sample grows: it stops at ``drift_max_rows``."""
        return min(self.target, self.drift_max_rows) / min(self.measured, self.drift_max_rows)


def seconds_at(stage: Stage, scale: Scale) -> float:
    """The stage's time on one process at the target: the fixed part as measured, the sampled
    part up to the sample size, the rest linear in customers (and, for the call list, in the
    scored dates kept)."""
    linear = max(stage.seconds - stage.fixed_s - stage.capped_s, 0.0)
    history = stage.per_history_date_s * scale.factor * max(scale.history_dates - 1, 0)
    return stage.fixed_s + stage.capped_s * scale.sample_factor + linear * scale.factor + history


def partition_seconds(stage: Stage, scale: Scale, partitions: int) -> float:
    """One partition of the date on one pod: every pod pays the fixed part again."""
    linear = seconds_at(stage, scale) - stage.fixed_s - stage.capped_s * scale.sample_factor
    return stage.fixed_s + stage.capped_s * scale.sample_factor + linear / partitions


def pods_for_window(stages: list[Stage], scale: Scale, partitions: int, room: float) -> int:
    """Pods a split step runs at once for the split steps to fit ``room``: the fewest that
    do, each pod taking its share of the partitions in turn; all of them when none does."""
    one_each = sum(partition_seconds(s, scale, partitions) for s in stages if KINDS[s.name].split)
    for pods in range(1, partitions + 1):
        if math.ceil(partitions / pods) * one_each <= room:
            return pods
    return partitions


def memory_at(stage: Stage, scale: Scale, partitions: int = 1) -> float:
    """Peak MiB of the stage's pod at the target, the date split in ``partitions``: what the
    stage holds above the loaded code location grows with the rows it holds at once."""
    kind = KINDS[stage.name]
    work = max(stage.peak_mib - stage.base_mib, 0.0)
    if kind.memory == "date":
        return stage.base_mib + work * scale.factor / partitions
    if kind.memory == "sample":
        return stage.base_mib + work * scale.sample_factor
    return stage.peak_mib


def partitions_for_memory(stage: Stage, scale: Scale) -> int | None:
    """Partitions of the date for the stage's pod to fit ``pod_mib``; None when no number of
    partitions does (the loaded code location alone, or a chunk, is over the limit)."""
    if memory_at(stage, scale) <= scale.pod_mib:
        return 1
    if KINDS[stage.name].memory != "date" or scale.pod_mib <= stage.base_mib:
        return None
    work = memory_at(stage, scale) - stage.base_mib
    return math.ceil(work / (scale.pod_mib - stage.base_mib))


def partitions_for_files(file_bytes: int, measured: int, target: int, max_bytes: int) -> int:
    """Landing files per date, each under ``RETENTION_MAX_FILE_BYTES``."""
    return max(math.ceil(file_bytes * target / measured / max_bytes), 1)


def partitions_for_window(stages: list[Stage], scale: Scale) -> tuple[int, float]:
    """Partitions of the date for the night to fit the window, and the seconds the split
    stages may take in it. The stages that are not split take their whole time; the others
    share what is left. When the unsplit ones alone overrun, the split ones get the share of
    the window their time has in the night (the night overruns anyway)."""
    whole = sum(seconds_at(s, scale) for s in stages if not KINDS[s.name].split)
    split = sum(seconds_at(s, scale) for s in stages if KINDS[s.name].split)
    room = scale.window_s - whole
    if room <= 0:
        room = scale.window_s * split / (split + whole)
    return max(math.ceil(split / room), 1), room


@dataclass(frozen=True)
class Step:
    """One stage in the planned night."""

    stage: Stage
    one_process_s: float
    memory_one_mib: float
    pods: int
    memory_mib: float
    seconds: float  # its time in the night
    rows_written: float
    write_bytes: float  # table and WAL
    temp_bytes: float  # Postgres temporary files, the date whole

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.write_bytes / self.seconds / 1e6 if self.seconds else 0.0


def plan_step(stage: Stage, scale: Scale, partitions: int, pods: int) -> Step:
    """The stage at the target with the date in ``partitions``: a split stage runs ``pods``
    pods at once, each taking its share of the partitions in turn; the others one pod for
    the date. Memory follows the partition; time follows the partitions a pod runs."""
    split = KINDS[stage.name].split
    pods = min(pods, partitions) if split else 1
    one = seconds_at(stage, scale)
    per_row = (stage.table_bytes + stage.wal_bytes) / max(stage.rows_written, 1)
    rows_written = stage.rows_written * (scale.factor if stage.rows_written > 1 else 1)
    return Step(
        stage=stage,
        one_process_s=one,
        memory_one_mib=memory_at(stage, scale),
        pods=pods,
        memory_mib=memory_at(stage, scale, partitions if split else 1),
        seconds=(
            math.ceil(partitions / pods) * partition_seconds(stage, scale, partitions)
            if split
            else one
        ),
        rows_written=rows_written,
        write_bytes=per_row * rows_written,
        temp_bytes=stage.temp_bytes * scale.factor,
    )


@dataclass(frozen=True)
class Plan:
    """The night at the target: partitions of the date, why that many, and the steps."""

    partitions: int
    reasons: dict[str, int]
    unfit: tuple[str, ...]  # stages no partitioning brings under the pod limit
    room_s: float  # what the split stages share of the window
    steps: list[Step]


def plan_night(stages: list[Stage], scale: Scale, file_bytes: int, max_file_bytes: int) -> Plan:
    """Partitions per date: enough for every landing file to stay under its limit, for a
    whole-date stage's pod to fit its memory, and for the split stages to fit what the window
    leaves them; the split stages run as many pods at once as the window needs."""
    for_window, room = partitions_for_window(stages, scale)
    for_memory = {s.name: partitions_for_memory(s, scale) for s in stages}
    reasons = {
        "landing files under the size limit": partitions_for_files(
            file_bytes, scale.measured, scale.target, max_file_bytes
        ),
        f"the {scale.window_s / 3600:g} h window": for_window,
        **{f"{name} within the pod memory": p for name, p in for_memory.items() if p and p > 1},
    }
    partitions = max(reasons.values())
    pods = pods_for_window(stages, scale, partitions, room)
    return Plan(
        partitions=partitions,
        reasons=reasons,
        unfit=tuple(name for name, p in for_memory.items() if p is None),
        room_s=room,
        steps=[plan_step(s, scale, partitions, pods) for s in stages],
    )


def customers_at_limit(fixed: float, per_customer: float, limit: float) -> float:
    """Customers at which ``fixed + per_customer * n`` reaches ``limit`` (inf: never)."""
    if per_customer <= 0:
        return math.inf
    return max((limit - fixed) / per_customer, 0.0)


@dataclass(frozen=True)
class Limit:
    customers: float
    what: str


def limits(stages: list[Stage], scale: Scale, file_bytes: int, max_file_bytes: int) -> list[Limit]:
    """Where the night stops working on one partition per date, as the customers grow."""
    n = scale.measured
    found = [
        Limit(
            customers_at_limit(0, file_bytes / n, max_file_bytes),
            f"the landing file passes RETENTION_MAX_FILE_BYTES ({max_file_bytes / GIB:g} GiB)",
        )
    ]
    for stage in stages:
        fixed = stage.fixed_s + stage.capped_s * scale.sample_factor
        linear = max(stage.seconds - stage.fixed_s - stage.capped_s, 0.0)
        history = stage.per_history_date_s * max(scale.history_dates - 1, 0)
        found.append(
            Limit(
                customers_at_limit(fixed, (linear + history) / n, scale.window_s),
                f"{stage.name} alone on one process passes the {scale.window_s / 3600:g} h window",
            )
        )
        if KINDS[stage.name].memory == "date":
            work = max(stage.peak_mib - stage.base_mib, 1e-9) / n
            found.append(
                Limit(
                    customers_at_limit(stage.base_mib, work, scale.pod_mib),
                    f"{stage.name} passes the {scale.pod_mib / 1024:g} GiB pod "
                    f"({KINDS[stage.name].why})",
                )
            )
    night_fixed = sum(s.fixed_s + s.capped_s * scale.sample_factor for s in stages)
    night_linear = sum(
        max(s.seconds - s.fixed_s - s.capped_s, 0.0)
        + s.per_history_date_s * (max(scale.history_dates - 1, 0))
        for s in stages
    )
    found.append(
        Limit(
            customers_at_limit(night_fixed, night_linear / n, scale.window_s),
            "the whole night on one process per step passes the window",
        )
    )
    return sorted(found, key=lambda limit: limit.customers)


# --- Running the night. ---


@dataclass
class Context:
    server: str
    database: str
    url: str
    folder: Path
    tracking_uri: str
    # Holds a temporary replication slot keeping the WAL until each stage's records are read.
    wal_slot: psycopg.Connection[Any] | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--target", type=int, default=100_000_000)
    parser.add_argument("--window-hours", type=float, default=4.0)
    parser.add_argument("--pod-memory-gib", type=float, default=4.0)
    parser.add_argument(
        "--history-dates", type=int, default=30,
        help="scored dates kept in ml.churn_risk_scores, which the call list's rebuild reads",
    )  # fmt: skip
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--save", type=Path, help="write the measurements to this JSON file")
    parser.add_argument(
        "--replan", type=Path, help="plan from a --save file instead of measuring"
    )  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    night = Night.from_json(args.replan.read_text()) if args.replan else _measure_night(args)
    if args.save:
        args.save.write_text(night.to_json())
    _print_measured(night)
    _print_plan(
        night,
        Scale(
            measured=night.customers,
            target=args.target,
            window_s=args.window_hours * 3600,
            pod_mib=args.pod_memory_gib * 1024,
            drift_max_rows=night.drift_max_rows,
            history_dates=args.history_dates,
        ),
    )
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s", flush=True)


def _measure_night(args: argparse.Namespace) -> Night:
    """The night on ``--customers`` in throwaway databases, dropped whatever happens."""
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    suffix = uuid.uuid4().hex[:8]
    warehouse_db, mlflow_db = f"retention_bench_{suffix}", f"retention_bench_mlflow_{suffix}"
    database.ensure_database(server, warehouse_db)
    try:
        with tempfile.TemporaryDirectory(prefix="retention-night-") as folder:
            ctx = Context(
                server=server,
                database=warehouse_db,
                url=database.with_database(server, warehouse_db),
                folder=Path(folder),
                tracking_uri=registry.mlflow_tracking_uri(server, mlflow_db),
            )
            _print_header(ctx)
            landing = _prepare(ctx, mlflow_db, args)
            stages, file_bytes = _night(ctx, landing)
    finally:
        database.drop_database(server, warehouse_db)
        database.drop_database(server, mlflow_db)
    return Night(
        customers=args.customers,
        stages=stages,
        file_bytes=file_bytes,
        max_file_bytes=settings.max_file_bytes,
        drift_max_rows=settings.drift_max_rows,
    )


def _print_header(ctx: Context) -> None:
    settings = get_settings()
    with psycopg.connect(ctx.server) as conn:
        version = _scalar(conn, "show server_version")
        wal = _scalar(conn, "show max_wal_size")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    print("=== RetentionAI: one night, measured and scaled ===")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} CPUs, {memory:.1f} GiB, {platform.platform()}; "
        f"Postgres {version} (max_wal_size {wal}), {'on this machine' if _local(ctx) else 'remote'}"
    )
    print(
        f"settings: ingest chunk {settings.ingest_chunk_rows:,} rows, scoring chunk "
        f"{settings.scoring_chunk_rows:,} rows, drift sample {settings.drift_max_rows:,} rows, "
        f"landing file limit {settings.max_file_bytes / GIB:g} GiB",
        flush=True,
    )


def _prepare(ctx: Context, mlflow_db: str, args: argparse.Namespace) -> Path:
    """The champion, trained on a labelled snapshot with a small budget, and the night's
    landing file. Nothing here is measured."""
    import dagster as dg  # noqa: PLC0415

    from retention_pipelines.assets.features import retention_dbt_models  # noqa: PLC0415
    from retention_pipelines.assets.ingestion import raw_customer_snapshot  # noqa: PLC0415
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    started = time.perf_counter()
    landing = ctx.folder / "landing"
    _write_landing(landing / f"customers_{TRAIN_DAY}.csv", args.train_customers, labelled=True)
    night = _write_landing(landing / f"customers_{NIGHT}.csv", args.customers, labelled=False)
    resources = _resources(ctx, mlflow_db)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [raw_customer_snapshot, retention_dbt_models],
        partition_key=TRAIN_DAY.isoformat(),
        resources=resources,
        instance=instance,
    )
    config = {"config": {**SMALL_BUDGET, "baseline_tolerance": 1.0}}
    load_definitions().resolve_job_def("retrain_job").execute_in_process(
        resources=resources,
        instance=instance,
        run_config={"ops": {"training_set": config, "churn_model_candidates": config}},
    )
    print(
        f"prepared in {time.perf_counter() - started:.0f} s (not measured): champion trained "
        f"on {args.train_customers:,} labelled customers of {TRAIN_DAY}; "
        f"{args.customers:,} customers landed for {NIGHT}",
        flush=True,
    )
    return night


def _write_landing(path: Path, customers: int, *, labelled: bool) -> Path:
    """In a process of its own, so that generating does not weigh on anything measured."""
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from retention_pipelines.datagen import "
         "write_landing_csv; write_landing_csv(Path(sys.argv[1]), int(sys.argv[2]), seed=7, "
         "labelled=sys.argv[3] == '1')",
         str(path), str(customers), "1" if labelled else "0"],
        check=True,
    )  # fmt: skip
    return path


def _resources(ctx: Context, mlflow_db: str) -> dict[str, object]:
    from dagster_dbt import DbtCliResource  # noqa: PLC0415

    from retention_pipelines.assets.features import retention_dbt_project  # noqa: PLC0415
    from retention_pipelines.resources import (  # noqa: PLC0415
        LandingResource,
        MlflowResource,
        WarehouseResource,
        dbt_executable,
    )

    warehouse = WarehouseResource(database_url=ctx.url)
    return {
        "warehouse": warehouse,
        "landing": LandingResource(landing_dir=str(ctx.folder / "landing")),
        "dbt": DbtCliResource(project_dir=retention_dbt_project, dbt_executable=dbt_executable()),
        "mlflow_registry": MlflowResource(
            warehouse=warehouse,
            tracking_uri=registry.mlflow_tracking_uri(ctx.server, mlflow_db),
            artifact_root=str(ctx.folder / "mlartifacts"),
        ),
    }


def _night(ctx: Context, landing: Path) -> tuple[list[Stage], int]:
    """The stages in the nightly job's order, each measured; the landing file's bytes."""
    day = {"day": NIGHT.isoformat()}
    empty = {"day": EMPTY_DAY.isoformat()}
    with _wal_kept(ctx):
        features_fixed = _run(ctx, "features", empty).seconds
        analytics_fixed = _run(ctx, "analytics", empty).seconds
        stages = [
            _run(ctx, "ingestion", {**day, "path": str(landing)}),
            replace(_run(ctx, "features", day), fixed_s=features_fixed),
            _run(ctx, "quality", day),
            _run(ctx, "scoring", day),
            _run(ctx, "drift", day),
        ]
        analytics = replace(_run(ctx, "analytics", day), fixed_s=analytics_fixed)
        stages.append(replace(analytics, per_history_date_s=_history_cost(ctx, day)))
    return stages, landing.stat().st_size


def _history_cost(ctx: Context, day: dict[str, str]) -> float:
    """Seconds each scored date kept adds to the call list's rebuild: the rebuild with the
    night's scores alone, then with ``HISTORY_COPIES`` copies of them as earlier dates, the
    scores vacuumed before each so that both read settled pages."""
    _vacuum_scores(ctx)
    alone = _run(ctx, "analytics", day).seconds
    with psycopg.connect(ctx.url) as conn:
        conn.execute(
            "create temp table night as select * from ml.churn_risk_scores"
            " where snapshot_date = %s",
            (NIGHT,),
        )
        for back in range(1, HISTORY_COPIES + 1):
            conn.execute("update night set snapshot_date = %s", (NIGHT - timedelta(days=back),))
            conn.execute("insert into ml.churn_risk_scores select * from night")
    _vacuum_scores(ctx)
    kept = _run(ctx, "analytics", day).seconds
    per_date = max(kept - alone, 0.0) / HISTORY_COPIES
    print(
        f"  the call list's rebuild: {alone:.1f} s with one scored date, {kept:.1f} s with "
        f"{HISTORY_COPIES + 1}: {per_date:.1f} s per scored date kept",
        flush=True,
    )
    return per_date


def _vacuum_scores(ctx: Context) -> None:
    with psycopg.connect(ctx.url, autocommit=True) as conn:
        conn.execute("vacuum (analyze) ml.churn_risk_scores")


# --- One measured stage: a child process, and the server's figures around it. ---


@dataclass(frozen=True)
class ServerState:
    lsn: str
    temp_bytes: int
    tables: dict[str, int]


def _server_state(ctx: Context) -> ServerState:
    with psycopg.connect(ctx.url) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        lsn = str(_scalar(conn, "select pg_current_wal_flush_lsn()"))  # what walinspect reads
        temp = int(
            _scalar(
                conn, "select temp_bytes from pg_stat_database where datname = current_database()"
            )
            or 0
        )
        rows = conn.execute(
            "select n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where c.relkind in ('r', 'm') and n.nspname = any(%s)",
            (list(WRITTEN_SCHEMAS),),
        ).fetchall()
    return ServerState(lsn=lsn, temp_bytes=temp, tables={name: int(size) for name, size in rows})


@contextmanager
def _wal_kept(ctx: Context) -> Iterator[None]:
    """pg_walinspect in the warehouse database, and a temporary physical replication slot
    that keeps the WAL from here on: the server removes old segments at every checkpoint
    (each CREATE DATABASE on it forces one), often before a stage ends. The slot belongs to
    this connection's session and goes with it, whatever happens. Without them, a stage's WAL
    is the whole server's."""
    with psycopg.connect(ctx.url, autocommit=True) as conn:
        try:
            conn.execute("create extension if not exists pg_walinspect")
            conn.execute(
                "select pg_create_physical_replication_slot(%s, true, true)", (_slot(ctx),)
            )
        except psycopg.Error as error:
            print(f"  WAL is the server's, other sessions' included: {error}".strip())
        else:
            ctx.wal_slot = conn
        try:
            yield
        finally:
            ctx.wal_slot = None


def _slot(ctx: Context) -> str:
    return f"{ctx.database}_wal"


def _wal_between(ctx: Context, before: str, after: str) -> tuple[int, bool]:
    """WAL bytes from ``before`` to ``after``, and whether they are this database's alone:
    the records touching its relations, read with pg_walinspect, after which the slot lets
    the server recycle them; else the whole server's."""
    if ctx.wal_slot is not None:
        try:
            mine = _scalar(
                ctx.wal_slot,
                "select coalesce(sum(record_length), 0) from pg_get_wal_records_info(%s, %s)"
                " where block_ref like '%%/' || (select oid from pg_database"
                "  where datname = current_database()) || '/%%'",
                (before, after),
            )
            ctx.wal_slot.execute("select pg_replication_slot_advance(%s, %s)", (_slot(ctx), after))
        except psycopg.Error as error:
            print(f"  WAL records unreadable, the server's counted: {error}".strip(), flush=True)
        else:
            return int(mine), True
    with psycopg.connect(ctx.url) as conn:
        return int(_scalar(conn, "select pg_wal_lsn_diff(%s, %s)", (after, before))), False


def _run(ctx: Context, name: str, params: dict[str, str]) -> Stage:
    """The stage in a child process; the server's WAL, temp files and table sizes around it,
    and its Postgres backends' CPU while it runs."""
    params = {**params, "url": ctx.url, "tracking_uri": ctx.tracking_uri, "folder": str(ctx.folder)}
    before = _server_state(ctx)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with _backend_cpu(ctx) as backend_cpu:
        result = _child(name, params)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.5)  # a backend flushes its statistics as it exits
    after = _server_state(ctx)
    growth = {
        table: size - before.tables.get(table, 0)
        for table, size in after.tables.items()
        if size != before.tables.get(table, 0)
    }
    cpu = (used.ru_utime + used.ru_stime) - (usage.ru_utime + usage.ru_stime)
    wal, exact = _wal_between(ctx, before.lsn, after.lsn)
    stage = Stage(
        name=name,
        rows=int(result["rows"]),
        seconds=result["seconds"],
        fixed_s=result.get("fixed_s", 0.0),
        capped_s=result.get("capped_s", 0.0),
        rows_written=int(result["rows_written"]),
        peak_mib=result["peak_mib"],
        base_mib=result.get("base_mib", result["location_mib"]),
        client_cpu_s=max(cpu - result["location_cpu_s"], 0.0),
        postgres_cpu_s=backend_cpu(),
        table_bytes=sum(max(size, 0) for size in growth.values()),
        wal_bytes=wal,
        wal_exact=exact,
        temp_bytes=after.temp_bytes - before.temp_bytes,
        growth=growth,
    )
    label = f"{name} ({params['day']})"
    print(
        f"  {label:<24} {stage.seconds:>7.1f} s, {stage.rows:>11,} rows, peak RSS "
        f"{stage.peak_mib:>6,.0f} MiB{'  ' + result['note'] if result.get('note') else ''}",
        flush=True,
    )
    return stage


def _child(stage: str, params: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(  # this very script
        [sys.executable, __file__, "--child", stage, json.dumps(params)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{completed.stderr[-4000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


@contextmanager
def _backend_cpu(ctx: Context) -> Iterator[Callable[[], float | None]]:
    """CPU seconds of the database's backends (parallel workers included) while the block
    runs, sampled from ``/proc`` every 0.2 s; None when the server is not on this machine."""
    seen: dict[int, float] = {}
    stop = threading.Event()
    local = _local(ctx)

    def poll() -> None:
        with psycopg.connect(ctx.server, autocommit=True) as conn:
            while not stop.wait(0.2):
                rows = conn.execute(
                    "select pid from pg_stat_activity where datname = %s", (ctx.database,)
                ).fetchall()
                for (pid,) in rows:
                    cpu = _process_cpu_s(int(pid))
                    if cpu is not None:
                        seen[int(pid)] = cpu

    thread = threading.Thread(target=poll, daemon=True)
    if local:
        thread.start()
    try:
        yield lambda: sum(seen.values()) if local else None
    finally:
        stop.set()
        if local:
            thread.join()


def _process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _local(ctx: Context) -> bool:
    host = database.connection_parts(ctx.server).host
    return host in {"127.0.0.1", "localhost", "::1", ""} or host.startswith("/")


def _scalar(conn: psycopg.Connection[Any], query: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


# --- Printing. ---


def _print_measured(night: Night) -> None:
    stages, customers, file_bytes = night.stages, night.customers, night.file_bytes
    print(f"\n--- The night measured: {customers:,} customers ---")
    print(
        "stage        seconds   rows/s  peak RSS  rows written  written/s  tables MB   WAL MB"
        "  temp MB  CPU s: pod / Postgres"
    )
    for s in stages:
        pg_cpu = f"{s.postgres_cpu_s:.1f}" if s.postgres_cpu_s is not None else "n/a"
        print(
            f"{s.name:<11}{s.seconds:>9.1f}{s.rows / s.seconds:>9,.0f}{s.peak_mib:>7,.0f} MiB"
            f"{s.rows_written:>14,}{s.rows_written / s.seconds:>11,.0f}"
            f"{s.table_bytes / 1e6:>11,.1f}{s.wal_bytes / 1e6:>9,.1f}{' ' if s.wal_exact else '*'}"
            f"{s.temp_bytes / 1e6:>8,.1f}"
            f"{s.client_cpu_s:>13.1f} / {pg_cpu}"
        )
    total = sum(s.seconds for s in stages)
    print(f"{'night':<11}{total:>9.1f}")
    print(
        "tables MB: what the stage added to its tables, indexes included; WAL MB: the WAL "
        "records of the database's relations (pg_walinspect; * the whole server's); temp MB: "
        "the database's temporary files; CPU: the stage's processes (the code location's load "
        "left out) and its Postgres backends"
    )
    fixed = ", ".join(
        f"{s.name} {s.fixed_s:.1f}" + (f" (+{s.capped_s:.1f} sampled)" if s.capped_s else "")
        for s in stages
        if s.fixed_s or s.capped_s
    )
    print(f"not growing with the customers, in those seconds: {fixed}")
    for s in stages:
        if KINDS[s.name].memory != "sample" and s.seconds - s.fixed_s < 0.2 * s.seconds:
            print(
                f"  {s.name}: what grows with the customers is within the noise of the fixed "
                f"part at {customers:,} customers; measure more customers to scale it"
            )
    analytics = next(s for s in stages if s.name == "analytics")
    print(
        f"each further scored date kept adds {analytics.per_history_date_s:.1f} s to the call "
        f"list's rebuild at {customers:,} customers"
    )
    sizes = [
        f"{table} {stage.growth[table] / max(stage.rows_written, 1):,.0f} MB"
        for stage in stages
        for table in SIZED_TABLES
        if table in stage.growth
    ]
    print(f"table size per million rows of a date (indexes included): {', '.join(sizes)}")
    print(
        f"landing file: {file_bytes / 1e6:,.1f} MB, {file_bytes / customers:.0f} bytes a customer"
    )


def _print_plan(night: Night, scale: Scale) -> None:
    stages, file_bytes, max_file_bytes = night.stages, night.file_bytes, night.max_file_bytes
    plan = plan_night(stages, scale, file_bytes, max_file_bytes)
    print(
        f"\n--- The same night at {scale.target:,} customers (x{scale.factor:g}, scaled from "
        f"the measurements); window {scale.window_s / 3600:g} h, pods of "
        f"{scale.pod_mib / 1024:g} GiB, {scale.history_dates} scored dates kept ---"
    )
    print(
        "stage       one process  memory/pod, date whole  pods  memory/pod  time in the night"
        "  Postgres writes needed (tables + WAL)"
    )
    for step in plan.steps:
        print(
            f"{step.stage.name:<11}{_hours(step.one_process_s):>12}"
            f"{step.memory_one_mib / 1024:>18,.1f} GiB{step.pods:>10}"
            f"{step.memory_mib / 1024:>8,.1f} GiB{'!' if step.stage.name in plan.unfit else ' '}"
            f"{_hours(step.seconds):>19}"
            f"  {_writes(step)}"
        )
    night = sum(step.seconds for step in plan.steps)
    one = sum(step.one_process_s for step in plan.steps)
    print(f"{'night':<11}{_hours(one):>12}{'':>49}{_hours(night):>19}")
    print("what bounds each step: " + "; ".join(f"{n}: {k.why}" for n, k in KINDS.items()))
    _print_partitions(plan, scale)
    _print_throughput(plan.steps, plan.partitions)
    _print_limits(stages, scale, file_bytes, max_file_bytes, plan.unfit)


def _print_partitions(plan: Plan, scale: Scale) -> None:
    wanted = ", ".join(f"{p} for {why}" for why, p in plan.reasons.items())
    print(f"partitions per date: {plan.partitions} ({wanted})")
    split = [step for step in plan.steps if KINDS[step.stage.name].split]
    whole = ", ".join(step.stage.name for step in plan.steps if not KINDS[step.stage.name].split)
    print(
        f"pods per step: {split[0].pods} at once for {', '.join(s.stage.name for s in split)} "
        f"(a partition per pod at a time; they share {_hours(plan.room_s)} of the window); "
        f"one for the date for {whole}"
    )
    night = sum(step.seconds for step in plan.steps)
    unsplit = [step for step in plan.steps if not KINDS[step.stage.name].split]
    if night > scale.window_s:
        print(
            f"the night takes {_hours(night)}, over the {_hours(scale.window_s)} window: "
            f"the steps that run once per date take {_hours(sum(s.seconds for s in unsplit))} "
            "(on one process each: "
            + ", ".join(f"{s.stage.name} {_hours(s.seconds)}" for s in unsplit)
            + ")"
        )


def _print_throughput(steps: list[Step], partitions: int) -> None:
    busiest = max(steps, key=lambda step: step.rows_per_s)
    heaviest = max(steps, key=lambda step: step.mb_per_s)
    total = sum(step.write_bytes for step in steps)
    print(
        f"Postgres writes: {total / 1e9:,.0f} GB of tables and WAL in the night; at most "
        f"{busiest.rows_per_s:,.0f} rows/s ({busiest.stage.name}) and {heaviest.mb_per_s:,.1f} "
        f"MB/s ({heaviest.stage.name}); measured here: "
        + ", ".join(
            f"{step.stage.name} {step.stage.rows_written / step.stage.seconds:,.0f} rows/s"
            for step in steps
            if step.stage.rows_written > 1
        )
    )
    for name in ("ingestion", "scoring"):
        step = next(step for step in steps if step.stage.name == name)
        print(
            f"{name} replaces a date in one transaction: {step.rows_written:,.0f} rows and "
            f"{step.write_bytes / 1e9:,.1f} GB of table and WAL committed after "
            f"{_hours(step.one_process_s)} on one partition per date; "
            f"{step.rows_written / partitions:,.0f} rows and "
            f"{step.write_bytes / partitions / 1e9:,.2f} GB per transaction in {partitions}"
        )
    print(
        "Postgres temporary files (sorts, ingestion's copy of the file): "
        + ", ".join(
            f"{step.stage.name} {step.temp_bytes / 1e9:,.1f} GB"
            for step in steps
            if step.temp_bytes > 0
        )
        + f" at the target on one partition per date; divided by {partitions} for the split steps"
    )
    ingestion = next(step for step in steps if step.stage.name == "ingestion").stage
    print(
        f"ingestion's temporary table of the file passes temp_buffers (512 MB) and spills to "
        f"disk from {_temp_rows(ingestion):,.0f} rows per transaction"
    )


def _temp_rows(stage: Stage) -> float:
    heap = stage.growth.get("raw.customer_snapshots", stage.table_bytes)
    return INGEST_TEMP_BUFFERS / max(heap / max(stage.rows_written, 1), 1)


def _print_limits(
    stages: list[Stage],
    scale: Scale,
    file_bytes: int,
    max_file_bytes: int,
    unfit: tuple[str, ...],
) -> None:
    print("where one partition per date breaks, in order:")
    for limit in limits(stages, scale, file_bytes, max_file_bytes):
        at = "never" if math.isinf(limit.customers) else f"{limit.customers:>14,.0f} customers"
        print(f"  {at:>24}: {limit.what}")
    for name in unfit:
        print(f"  {name}: over the pod limit at any size; a smaller chunk setting is needed")


def _writes(step: Step) -> str:
    if step.rows_written <= 1:
        return "one row"
    return f"{step.rows_per_s:>9,.0f} rows/s, {step.mb_per_s:>6,.1f} MB/s"


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# --- Child processes: one stage each, after loading the code location; one JSON line. ---


def _child_main(stage: str, params: dict[str, str]) -> None:
    started = time.perf_counter()
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    load_definitions()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    location = {
        "location_mib": _rss_mib("VmRSS"),
        "location_s": time.perf_counter() - started,
        "location_cpu_s": usage.ru_utime + usage.ru_stime,
    }
    result = CHILD_STAGES[stage](params)
    result["peak_mib"] = _rss_mib("VmHWM") + result.pop("subprocess_peak_mib", 0.0)
    print(json.dumps(result | location))


def _rss_mib(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in MiB. ``getrusage`` would count
    the parent's peak, which a child inherits across fork and exec on Linux."""
    return _status_mib(Path("/proc/self/status"), field) or 0.0


def _status_mib(path: Path, field: str) -> float | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def _stage_ingestion(params: dict[str, str]) -> dict[str, Any]:
    from retention_pipelines.core.ingestion import (  # noqa: PLC0415
        check_landing_file,
        read_validated_chunks,
    )
    from retention_pipelines.core.warehouse import raw  # noqa: PLC0415

    settings = get_settings()
    path, day = Path(params["path"]), date.fromisoformat(params["day"])
    started = time.perf_counter()
    # The limit is the platform's, unless this file is over it: its cost is measured anyway.
    facts = check_landing_file(path, max_bytes=max(settings.max_file_bytes, path.stat().st_size))
    summary = raw.replace_snapshot_partition(
        params["url"],
        snapshot_date=day,
        facts=facts,
        chunks=read_validated_chunks(path, chunk_rows=settings.ingest_chunk_rows),
    )
    raw.partition_counts(params["url"], day)
    raw.partition_profile(params["url"], day)
    return {
        "rows": summary.rows_read,
        "rows_written": summary.rows_valid + summary.rows_rejected,
        "seconds": time.perf_counter() - started,
        "note": f"{summary.rows_rejected:,} rejected",
    }


def _stage_dbt(selection: list[str], count: str) -> Callable[[dict[str, str]], dict[str, Any]]:
    def measure(params: dict[str, str]) -> dict[str, Any]:
        from retention_pipelines.resources import (  # noqa: PLC0415
            WarehouseResource,
            dbt_executable,
        )

        project, target = get_settings().dbt_project_dir, Path(params["folder"]) / "dbt"
        command = [
            dbt_executable(), "build", "--quiet", *selection,
            "--vars", json.dumps({"snapshot_date": params["day"]}),
            "--project-dir", str(project), "--profiles-dir", str(project),
            "--target-path", str(target), "--log-path", str(target / "logs"),
        ]  # fmt: skip
        with WarehouseResource(database_url=params["url"]).dbt_environment():
            started = time.perf_counter()
            peak = _run_watched(command)
            seconds = time.perf_counter() - started
        with psycopg.connect(params["url"]) as conn:
            rows = int(_scalar(conn, count, (date.fromisoformat(params["day"]),)) or 0)
        return {"rows": rows, "rows_written": rows, "seconds": seconds, "subprocess_peak_mib": peak}

    return measure


def _run_watched(command: list[str]) -> float:
    """Run ``command``; its peak RSS in MiB, read from ``/proc`` until it ends."""
    process = subprocess.Popen(command)
    peak = 0.0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        peak = max(peak, _status_mib(status, "VmHWM") or 0.0)
        time.sleep(0.1)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return peak


def _stage_quality(params: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    import great_expectations  # noqa: F401, PLC0415  (seconds to import, once per pod)

    from retention_pipelines.core.quality import validate_customer_features  # noqa: PLC0415

    imported = time.perf_counter()
    base = _rss_mib("VmRSS")
    report = validate_customer_features(
        params["url"], date.fromisoformat(params["day"]), Path(params["folder"]) / "docs"
    )
    return {
        "rows": report.rows,
        "rows_written": 1,
        "seconds": time.perf_counter() - started,
        "fixed_s": imported - started,
        "base_mib": base,
        "note": f"{report.expectations} expectations, {'passed' if report.success else 'FAILED'}",
    }


def _pseudonym_key() -> bytes:
    """The platform's key, or, on a server without one (the benchmark's databases are its
    own and dropped), a key of this run's: the summary's pseudonyms are computed the same."""
    from retention_pipelines.core.pseudonyms import PseudonymKeyError, pseudonym_key  # noqa: PLC0415

    try:
        return pseudonym_key(get_settings())
    except PseudonymKeyError:
        return uuid.uuid4().hex.encode()


def _stage_scoring(params: dict[str, str]) -> dict[str, Any]:
    from mlflow import MlflowClient  # noqa: PLC0415

    from retention_pipelines.core import scoring  # noqa: PLC0415
    from retention_pipelines.resources import ScoringResource  # noqa: PLC0415

    settings = ScoringResource.from_settings(get_settings())
    day = date.fromisoformat(params["day"])
    started = time.perf_counter()
    champion, version = registry.load_champion(MlflowClient(params["tracking_uri"]))
    loaded = time.perf_counter()
    outcome = scoring.score_partition(
        params["url"],
        day,
        scoring.ModelRef(champion, registry.MODEL_NAME, version),
        bands=settings.bands(),
        chunk_rows=settings.chunk_rows,
        scored_at=datetime.now(UTC),
        reuse_unchanged=settings.reuse_unchanged,
        exact_gap=settings.exact_gap,
    )
    scoring.summarize_scores(params["url"], day, key=_pseudonym_key())
    checks = scoring.check_scores(params["url"], day, version)
    return {
        "rows": outcome.rows,
        "rows_written": outcome.rows,
        "seconds": time.perf_counter() - started,
        "fixed_s": loaded - started,
        "note": f"{champion.kind} v{version}, checks "
        + ("passed" if all(c.passed for c in checks) else "FAILED"),
    }


def _stage_drift(params: dict[str, str]) -> dict[str, Any]:
    from mlflow import MlflowClient  # noqa: PLC0415

    from retention_pipelines.core import drift  # noqa: PLC0415
    from retention_pipelines.core.features import feature_frame  # noqa: PLC0415
    from retention_pipelines.resources import MonitoringResource  # noqa: PLC0415

    monitoring = MonitoringResource.from_settings(get_settings())
    url, day = params["url"], date.fromisoformat(params["day"])
    started = time.perf_counter()
    client = MlflowClient(params["tracking_uri"])
    model, version = registry.load_champion(client)
    tags = client.get_model_version(registry.MODEL_NAME, version).tags
    reference = drift.read_reference(
        url,
        version,
        drift.snapshot_dates_of(tags.get("data_snapshots")),
        max_rows=monitoring.drift_max_rows,
    )
    probabilities = model.predict_proba(feature_frame(reference.frame))
    read_started = time.perf_counter()
    current, rows = drift.read_current(url, day, max_rows=monitoring.drift_max_rows)
    measure_started = time.perf_counter()
    report = drift.measure_drift(
        day,
        reference,
        current,
        rows,
        reference_probabilities=probabilities,
        config=monitoring.drift_config(),
        report_path=Path(params["folder"]) / "drift.html",
    )
    measured = time.perf_counter()
    drift.save_report(url, report)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "rows_written": 1,
        "seconds": seconds,
        "capped_s": measured - measure_started,
        "fixed_s": seconds - (measured - read_started),
        "note": f"{len(current):,} rows compared, drift share {report.drift_share:.0%}",
    }


CHILD_STAGES: Final[dict[str, Callable[[dict[str, str]], dict[str, Any]]]] = {
    "ingestion": _stage_ingestion,
    "features": _stage_dbt(
        FEATURE_MODELS,
        "select count(*) from features.customer_features where snapshot_date = %s",
    ),
    "quality": _stage_quality,
    "scoring": _stage_scoring,
    "drift": _stage_drift,
    "analytics": _stage_dbt(
        ANALYTICS_MODELS,
        "select count(*) from analytics.customer_risk_latest where snapshot_date <= %s",
    ),
}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
