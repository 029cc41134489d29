"""How fast synthetic customers are generated and written as a landing CSV.

Why: demo and scale runs write millions of customers a day, and the goal is 1,000,000 customers
generated and written in under 15 seconds on a two-core machine. The file goes to a temporary
folder that is removed afterwards.

    python benchmarks/generate_customers.py --customers 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from retention_pipelines.datagen import landing_file_name, write_landing_csv


def main() -> None:
    parser = argparse.ArgumentParser(description="Time write_landing_csv.")
    parser.add_argument("--customers", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift", type=float, default=0.0)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="retention-datagen-") as folder:
        path = Path(folder) / landing_file_name(dt.datetime.now(tz=dt.UTC).date())
        started = time.perf_counter()
        write_landing_csv(path, arguments.customers, seed=arguments.seed, drift=arguments.drift)
        seconds = time.perf_counter() - started
        megabytes = path.stat().st_size / 1e6

    print(f"rows: {arguments.customers:,}")
    print(f"seconds: {seconds:.2f}")
    print(f"rows/s: {arguments.customers / seconds:,.0f}")
    print(f"file MB: {megabytes:.1f}")


if __name__ == "__main__":
    main()
