"""Drift report cost at scale, and how well the default settings catch a simulated drift.

    RETENTION_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        uv run python benchmarks/drift.py [--customers 100000 1000000] [--days 30] \\
        [--sim-customers 5000] [--drift-from 16] [--max-rows 200000] [--no-sampling-check]

Every database it uses is a throwaway one on the platform's Postgres (RETENTION_DATABASE_URL or
the embedded server), migrated like production and dropped at the end, whatever happens. Landing
files, dbt's target folder and the HTML reports live in a temporary folder. Snapshots are
ingested with the ingestion core and built with the real dbt project (``stg_customers`` and
``customer_features``), as the nightly job does; nothing here goes through Dagster.

1. **Report time.** The reference is the real IBM Telco file (5,634 labelled customers, read
   from ``/work/shared/data``, never copied) built as one snapshot date; each ``--customers``
   size is an unlabelled, undrifted synthetic partition (``write_landing_csv(labelled=False)``)
   built as a date of its own. For every size it times the four stages of one report, in this
   process: ``read_reference`` and ``read_current`` (COPY, sampled in Postgres past
   ``--max-rows``), ``measure_drift`` (guards, Evidently, the HTML report) and ``save_report``;
   once without probabilities (the partition has no scores) and once with them (a fixed-seed
   Beta(2, 5) sample for the reference and another for the current rows, standing in for the
   champion's probabilities and the date's scores: same distribution, so no prediction drift).
   With sampling the largest size is also measured unsampled (``--max-rows`` = its row count),
   unless ``--no-sampling-check``. Peak RSS is this process's ``VmHWM``, reset before each
   measurement through ``/proc/self/clear_refs`` so it is the measurement's own peak.

2. **Detection and false alarms.** Two :class:`~retention_pipelines.datagen.Simulation` runs of
   ``--days`` days and ``--sim-customers`` customers, each in its own database: a drifted one
   (step to the default drift strength on day ``--drift-from``, seed 11) and a quiet one (never
   drifts, seed 12: another customer base, so the quiet figures do not just replay the drifted
   run's first days). Every day is ingested as its snapshot date, then one dbt build without
   the ``snapshot_date`` var builds all dates at once (``customer_features`` is incremental:
   on a fresh database that is its first build, which selects every snapshot). Day 1's
   labelled rows are the reference; days 2 to ``--days`` are each compared with it using the
   production settings (``MonitoringResource.drift_config()`` of the settings), without
   probabilities. It prints the per-day drift share of both runs, the detection rate (share of
   days from ``--drift-from`` on with dataset drift), the false-alarm rate (share of earlier
   days with it, and of all quiet days) and the first day detected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from retention_pipelines.core import database, drift
from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.warehouse.raw import replace_snapshot_partition
from retention_pipelines.datagen import Simulation, write_landing_csv, write_simulation
from retention_pipelines.resources import MonitoringResource, WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings

TELCO_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco_customer_churn.csv"
REFERENCE_DAY = date(2026, 1, 15)
FIRST_PARTITION_DAY = date(2026, 4, 1)
SIMULATION_START = date(2026, 2, 1)
DRIFTED_SEED, QUIET_SEED = 11, 12
PARTITION_SEED = 100
PROBABILITY_SEED = 7
DBT_MODELS = "stg_customers customer_features"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sim-customers", type=int, default=5_000)
    parser.add_argument("--drift-from", type=int, default=16)
    parser.add_argument("--max-rows", type=int, default=drift.DriftConfig().max_rows)
    parser.add_argument("--no-sampling-check", action="store_true")
    parser.add_argument("--telco-csv", type=Path, default=TELCO_CSV)
    args = parser.parse_args()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    started = time.perf_counter()
    _print_header(server, args)
    with tempfile.TemporaryDirectory(prefix="retention-drift-bench-") as folder:
        _report_timings(server, Path(folder), args)
        _detection(server, Path(folder), args)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s", flush=True)


def _print_header(server: str, args: argparse.Namespace) -> None:
    import evidently  # noqa: PLC0415

    with psycopg.connect(server) as conn:
        row = conn.execute("show server_version").fetchone()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    print("=== RetentionAI drift benchmark ===")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} CPUs, {memory:.1f} GiB, {platform.platform()}; "
        f"Postgres {row[0] if row else '?'}; Evidently {evidently.__version__}; "
        f"pandas {pd.__version__}"
    )
    print(
        f"sizes {', '.join(f'{n:,}' for n in args.customers)}; max_rows {args.max_rows:,}; "
        f"simulation {args.sim_customers:,} customers x {args.days} days, "
        f"drift from day {args.drift_from}",
        flush=True,
    )


# --- Building snapshots. ---


@contextmanager
def _throwaway(server: str, label: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards whatever happens."""
    name = f"retention_bench_{label}_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server, name)
    try:
        url = database.with_database(server, name)
        database.upgrade(url)
        yield url
    finally:
        database.drop_database(server, name)


def _ingest(url: str, csv: Path, day: date) -> int:
    """Load ``csv`` as the raw snapshot of ``day``, as the ingestion asset does."""
    settings = get_settings()
    summary = replace_snapshot_partition(
        url,
        snapshot_date=day,
        facts=check_landing_file(csv, max_bytes=settings.max_file_bytes),
        chunks=read_validated_chunks(csv, chunk_rows=settings.ingest_chunk_rows),
    )
    if summary.rows_rejected:
        print(f"  {csv.name}: {summary.rows_rejected:,} rows rejected", flush=True)
    return summary.rows_valid


def _dbt_build(url: str, target: Path, day: date | None) -> None:
    """Build the staging view and the feature mart: one date with the var, all without it."""
    project = get_settings().dbt_project_dir
    command = [
        dbt_executable(), "build", "--quiet", "--select", DBT_MODELS,
        "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(target), "--log-path", str(target / "logs"),
    ]  # fmt: skip
    if day is not None:
        command += ["--vars", json.dumps({"snapshot_date": day.isoformat()})]
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(command, check=True)


def _build_snapshot(url: str, csv: Path, day: date, target: Path) -> None:
    started = time.perf_counter()
    rows = _ingest(url, csv, day)
    ingested = time.perf_counter()
    _dbt_build(url, target, day)
    print(
        f"  built {day}: {rows:,} rows, ingest {ingested - started:.1f} s, "
        f"dbt {time.perf_counter() - ingested:.1f} s",
        flush=True,
    )


# --- Peak memory of one measurement. ---


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_mib(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- 1. Report time. ---


@dataclass(frozen=True)
class Timing:
    label: str
    rows: int
    reference_rows: int
    compared_rows: int
    seconds: dict[str, float]
    peak_rss_mib: float
    start_rss_mib: float
    peak_is_own: bool
    report: drift.DriftReport

    def line(self) -> str:
        stages = ", ".join(f"{name} {s:.2f}" for name, s in self.seconds.items())
        total = sum(self.seconds.values())
        prediction = self.report.prediction
        drifted = ", ".join(c.column for c in self.report.drifted_columns)
        verdict = (
            f"{len(self.report.drifted_columns)}/{len(self.report.columns)} columns drifted"
            + (f" ({drifted})" if drifted else "")
            + (f", prediction {prediction.method} {prediction.score:.3f}" if prediction else "")
        )
        html = self.report.report_path.stat().st_size / 1e6
        return (
            f"{self.label}: {self.compared_rows:,} of {self.rows:,} rows vs "
            f"{self.reference_rows:,} reference rows | {stages} | total {total:.2f} s | "
            f"peak RSS {self.peak_rss_mib:,.0f} MiB "
            f"({'from' if self.peak_is_own else 'whole process; now'} {self.start_rss_mib:,.0f}) | "
            f"{verdict}; HTML {html:.1f} MB"
        )


def _report_timings(server: str, folder: Path, args: argparse.Namespace) -> None:
    print("\n--- 1. Drift report time (real Telco reference vs synthetic partitions) ---")
    with _throwaway(server, "drift") as url:
        target = folder / "dbt-partitions"
        print(f"building the reference from {args.telco_csv.name} and the partitions", flush=True)
        _build_snapshot(url, args.telco_csv, REFERENCE_DAY, target)
        days = {}
        for index, n in enumerate(sorted(args.customers)):
            day = FIRST_PARTITION_DAY + timedelta(days=index)
            started = time.perf_counter()
            csv = write_landing_csv(
                folder / "landing" / f"customers_{day}.csv",
                n,
                seed=PARTITION_SEED + index,
                labelled=False,
                drift=0.0,
            )
            print(f"  wrote {n:,} customers in {time.perf_counter() - started:.1f} s", flush=True)
            _build_snapshot(url, csv, day, target)
            csv.unlink()
            days[n] = day
        config = drift.DriftConfig(max_rows=args.max_rows)
        print(
            "stages in seconds: reference = read_reference, current = read_current, "
            "measure = measure_drift (guards, Evidently, HTML), save = save_report; "
            "peak RSS of each report (VmHWM reset first), from the RSS it started at",
            flush=True,
        )
        for n, day in days.items():
            for scored in (False, True):
                label = f"{n:>9,} customers, {'with' if scored else 'no':>4} probabilities"
                print(_time_report(url, day, config, folder, label, scored=scored).line())
        if not args.no_sampling_check and max(days) > args.max_rows:
            n = max(days)
            config = drift.DriftConfig(max_rows=n)
            label = f"{n:>9,} customers, with probabilities, no sampling"
            print(_time_report(url, days[n], config, folder, label, scored=True).line())


def _time_report(
    url: str, day: date, config: drift.DriftConfig, folder: Path, label: str, *, scored: bool
) -> Timing:
    """One whole report of ``day``, stage by stage, as the monitoring asset makes it."""
    own_peak = _reset_peak_rss()
    start_rss = _rss_mib("VmRSS")
    seconds = {}
    started = time.perf_counter()
    reference = drift.read_reference(url, "telco", [REFERENCE_DAY], max_rows=config.max_rows)
    seconds["reference"] = time.perf_counter() - started
    started = time.perf_counter()
    current, rows = drift.read_current(url, day, max_rows=config.max_rows)
    seconds["current"] = time.perf_counter() - started
    probabilities = None
    if scored:  # stand-ins for the champion's probabilities and the date's scores
        rng = np.random.default_rng(PROBABILITY_SEED)
        probabilities = rng.beta(2.0, 5.0, size=len(reference.frame))
        if current[drift.PROBABILITY].notna().sum() == 0:
            current[drift.PROBABILITY] = rng.beta(2.0, 5.0, size=len(current))
    started = time.perf_counter()
    report = drift.measure_drift(
        day,
        reference,
        current,
        rows,
        reference_probabilities=probabilities,
        config=config,
        report_path=folder / "reports" / f"{day}-{config.max_rows}-{int(scored)}.html",
    )
    seconds["measure"] = time.perf_counter() - started
    started = time.perf_counter()
    drift.save_report(url, report)
    seconds["save"] = time.perf_counter() - started
    return Timing(
        label=label,
        rows=rows,
        reference_rows=reference.rows,
        compared_rows=len(current),
        seconds=seconds,
        peak_rss_mib=_rss_mib(),
        start_rss_mib=start_rss,
        peak_is_own=own_peak,
        report=report,
    )


# --- 2. Detection and false alarms. ---


@dataclass(frozen=True)
class SimulatedReport:
    day: int
    snapshot_date: date
    strength: float
    drift_share: float
    flagged: bool
    drifted_columns: tuple[str, ...]


def _detection(server: str, folder: Path, args: argparse.Namespace) -> None:
    config = MonitoringResource.from_settings(get_settings()).drift_config()
    print(
        f"\n--- 2. Detection over {args.days} simulated days "
        f"({args.sim_customers:,} customers a day; reference: day 1's labelled rows) ---"
    )
    print(
        f"settings: {config.numerical_method} > {config.numerical_threshold:g} (numbers), "
        f"{config.categorical_method} > {config.categorical_threshold:g} (categories), "
        f"dataset drift from {config.drift_share:.0%} of columns; max_rows {config.max_rows:,}",
        flush=True,
    )
    runs = {}
    for name, drift_from, seed in (
        ("drifted", args.drift_from, DRIFTED_SEED),
        ("quiet", 0, QUIET_SEED),
    ):
        simulation = Simulation(
            customers=args.sim_customers,
            days=args.days,
            start=SIMULATION_START,
            drift_from=drift_from,
            seed=seed,
        )
        runs[name] = _simulate(server, folder / name, simulation, config)
    _print_days(runs["drifted"], runs["quiet"])
    _print_rates(runs["drifted"], runs["quiet"], args.drift_from)


def _simulate(
    server: str, folder: Path, simulation: Simulation, config: drift.DriftConfig
) -> list[SimulatedReport]:
    label = f"drift from day {simulation.drift_from}" if simulation.drift_from else "no drift"
    with _throwaway(server, "sim") as url:
        started = time.perf_counter()
        for written in write_simulation(simulation, folder / "landing"):
            _ingest(url, written.path, written.snapshot_date)
            written.path.unlink()
        ingested = time.perf_counter()
        _dbt_build(url, folder / "dbt", None)
        built = time.perf_counter()
        first = simulation.snapshot_date(1)
        reference = drift.read_reference(url, "sim", [first], max_rows=config.max_rows)
        reports = []
        for day in range(2, simulation.days + 1):
            snapshot = simulation.snapshot_date(day)
            current, rows = drift.read_current(url, snapshot, max_rows=config.max_rows)
            report = drift.measure_drift(
                snapshot,
                reference,
                current,
                rows,
                reference_probabilities=None,
                config=config,
                report_path=folder / "reports" / f"feature_drift_{snapshot}.html",
            )
            reports.append(
                SimulatedReport(
                    day=day,
                    snapshot_date=snapshot,
                    strength=simulation.drift_on(day),
                    drift_share=report.drift_share,
                    flagged=report.dataset_drift,
                    drifted_columns=tuple(c.column for c in report.drifted_columns),
                )
            )
    measured = time.perf_counter()
    print(
        f"{label} (seed {simulation.seed}): {simulation.days} days written and ingested in "
        f"{ingested - started:.1f} s, one dbt build of all dates {built - ingested:.1f} s, "
        f"{len(reports)} reports against {reference.rows:,} reference rows "
        f"{measured - built:.1f} s ({(measured - built) / len(reports):.2f} s each)",
        flush=True,
    )
    return reports


def _print_days(drifted: list[SimulatedReport], quiet: list[SimulatedReport]) -> None:
    print("\nday  date        | drifted run: strength  share  flag | quiet run: share  flag")
    for d, q in zip(drifted, quiet, strict=True):
        print(
            f"{d.day:>3}  {d.snapshot_date} | {d.strength:>21.2f}  {d.drift_share:>5.0%}  "
            f"{_flag(d)}  | {q.drift_share:>16.0%}  {_flag(q)}"
        )


def _flag(report: SimulatedReport) -> str:
    return "YES" if report.flagged else " - "


def _print_rates(
    drifted: list[SimulatedReport], quiet: list[SimulatedReport], drift_from: int
) -> None:
    after = [r for r in drifted if r.day >= drift_from]
    before = [r for r in drifted if r.day < drift_from]
    detected = [r.day for r in after if r.flagged]
    print(
        f"\ndrifted run: detection rate {_rate(after)} (days {drift_from}-{drifted[-1].day}), "
        f"false-alarm rate {_rate(before)} (days 2-{drift_from - 1}), first day detected: "
        + (
            f"{detected[0]} ({detected[0] - drift_from} days after the change)"
            if detected
            else "none"
        )
    )
    print(f"quiet run: false-alarm rate {_rate(quiet)} (days 2-{quiet[-1].day})")
    if after:
        share = {r.drift_share for r in after}
        columns = ", ".join(after[0].drifted_columns) or "none"
        print(
            f"drift share from day {drift_from} on: {min(share):.0%} to {max(share):.0%}; "
            f"columns drifted on day {after[0].day}: {columns}"
        )
    for name, reports in (("drifted run before the change", before), ("quiet run", quiet)):
        columns = sorted({c for r in reports for c in r.drifted_columns})
        most = max((r.drift_share for r in reports), default=0.0)
        print(
            f"{name}: highest drift share {most:.0%}; "
            f"columns ever drifted: {', '.join(columns) or 'none'}"
        )


def _rate(reports: list[SimulatedReport]) -> str:
    if not reports:
        return "n/a"
    flagged = sum(r.flagged for r in reports)
    return f"{flagged / len(reports):.0%} ({flagged}/{len(reports)})"


if __name__ == "__main__":
    main()
