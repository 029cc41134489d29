"""Ingestion throughput and peak memory for a large landing file.

    uv run python benchmarks/ingest_snapshot.py --customers 1000000

Generates the file in a child process (so its memory is not counted), then checks, validates
and loads it into a throwaway database on the platform's Postgres (RETENTION_DATABASE_URL or
the embedded server) and prints rows/s and this process's peak RSS.
"""

from __future__ import annotations

import argparse
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
from retention_pipelines.core.warehouse.raw import replace_snapshot_partition
from retention_pipelines.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=get_settings().ingest_chunk_rows)
    args = parser.parse_args()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    name = f"retention_bench_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server, name)
    url = database.with_database(server, name)
    database.upgrade(url)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "customers_2026-01-15.csv"
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from retention_pipelines.datagen import "
             "write_landing_csv; write_landing_csv(Path(sys.argv[1]), int(sys.argv[2]), seed=7)",
             str(path), str(args.customers)],
            check=True,
        )  # fmt: skip
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        facts = check_landing_file(path, max_bytes=settings.max_file_bytes)
        summary = replace_snapshot_partition(
            url,
            snapshot_date=date(2026, 1, 15),
            facts=facts,
            chunks=read_validated_chunks(path, chunk_rows=args.chunk_rows),
        )
        seconds = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    database.drop_database(server, name)
    print(f"file: {facts.size_bytes / 1e6:.1f} MB, {summary.rows_read:,} rows")
    print(f"valid {summary.rows_valid:,}, rejected {summary.rows_rejected:,}")
    print(f"ingestion: {seconds:.1f} s, {summary.rows_read / seconds:,.0f} rows/s")
    print(f"peak RSS: {peak_rss:.0f} MiB (before ingesting: {rss_before:.0f} MiB)")
    print(f"chunk rows: {args.chunk_rows:,}")


if __name__ == "__main__":
    main()
