"""Data quality suite cost at scale: one date of ``features.customer_features`` read and judged.

    RETENTION_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        uv run python benchmarks/quality.py [--customers 1000000] [--repeats 2]

In a throwaway database on the platform's Postgres (dropped at the end) it ingests a synthetic
snapshot of ``--customers`` customers with the ingestion core and builds its features with the
real dbt project, then runs the Great Expectations suite on that date as the blocking asset
check does (``validate_customer_features``), ``--repeats`` times, and prints per run the
seconds to read the date (COPY, Arrow) and the whole check (read, suite, Data Docs, the
verdict's row), with this process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from retention_pipelines.core import database
from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.quality import validate_customer_features
from retention_pipelines.core.warehouse.features import read_partition
from retention_pipelines.core.warehouse.raw import replace_snapshot_partition
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings

DAY = date(2026, 6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    name = f"retention_bench_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server, name)
    url = database.with_database(server, name)
    try:
        database.upgrade(url)
        with tempfile.TemporaryDirectory() as folder:
            _build(url, Path(folder), args.customers)
            for run in range(1, args.repeats + 1):
                started = time.perf_counter()
                frame, _ = read_partition(url, DAY)
                read_s = time.perf_counter() - started
                del frame
                started = time.perf_counter()
                report = validate_customer_features(url, DAY, Path(folder) / "docs")
                check_s = time.perf_counter() - started
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"run {run}: {report.rows:,} rows, read {read_s:.1f} s, whole check "
                    f"{check_s:.1f} s ({report.expectations} expectations, "
                    f"{'passed' if report.success else 'failed'}), peak RSS {peak:,.0f} MiB",
                    flush=True,
                )
    finally:
        database.drop_database(server, name)


def _build(url: str, folder: Path, customers: int) -> None:
    csv = folder / f"customers_{DAY}.csv"
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from retention_pipelines.datagen import "
         "write_landing_csv; write_landing_csv(Path(sys.argv[1]), int(sys.argv[2]), seed=9)",
         str(csv), str(customers)],
        check=True,
    )  # fmt: skip
    replace_snapshot_partition(
        url,
        snapshot_date=DAY,
        facts=check_landing_file(csv, max_bytes=10**10),
        chunks=read_validated_chunks(csv, chunk_rows=get_settings().ingest_chunk_rows),
    )
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(
            [dbt_executable(), "run", "--quiet", "--select", "stg_customers customer_features",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--target-path", str(folder / "target"),
             "--vars", json.dumps({"snapshot_date": DAY.isoformat()})],
            check=True,
        )  # fmt: skip
    print(f"built {DAY}: {customers:,} customers", flush=True)


if __name__ == "__main__":
    main()
