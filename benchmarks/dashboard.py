"""Speed of the retention team's dashboard on a million scored customers.

    uv run python benchmarks/dashboard.py [--customers 1000000] [--history-customers 10000]
                                          [--history-days 30] [--repeat 5]
                                          [--keep | --reuse DATABASE]

In a throwaway database on the platform's Postgres (RETENTION_DATABASE_URL or the embedded
server) it lands ``--customers`` generated customers as one snapshot and builds their features
through the real ingestion and dbt models. Scores are then written inside Postgres from the
features (a fixed formula, the nightly scorer's columns and reason wording), plus
``--history-days`` earlier score dates for ``--history-customers`` of them, and the analytics
models are built with dbt, as the nightly run does. No model is trained: the dashboard reads
scores, and how they were made plays no part in its speed.

It then prints, each over ``--repeat`` runs (median and slowest):

- every query each page runs, through the dashboard's own query module, as the reader login,
  with no cache;
- in Debian's Chromium (Playwright), ``retention dashboard`` on loopback with its cache off:
  the time from navigation (a page loaded by its address) to each page's last element, and
  from a click on a page's link in the app's sidebar to its last element;
- the call list's CSV export of a filter that selects about 100,000 customers: the time to
  the first byte and to the last, and the row count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from playwright.sync_api import Page, sync_playwright

from retention_pipelines.core import database
from retention_pipelines.core.ingestion import check_landing_file, read_validated_chunks
from retention_pipelines.core.warehouse.raw import replace_snapshot_partition
from retention_pipelines.dashboard import queries
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings

LATEST = date(2026, 3, 31)
CHUNK_ROWS = 100_000

# Scores from features, in SQL: a fixed logistic formula and the scorer's reason wording.
SCORES_SQL = """
insert into ml.churn_risk_scores
with scored as (
    select
        snapshot_date,
        customer_id,
        contract,
        tenure_months,
        monthly_charges,
        payment_method,
        internet_service,
        1 / (1 + exp(-(
            -1.2
            + case contract when 'Month-to-month' then 1.4 when 'One year' then -0.2 else -1.3 end
            - 0.035 * tenure_months
            + 0.012 * (monthly_charges - 65)
            + case when payment_method = 'Electronic check' then 0.5 else 0 end
            + case when internet_service = 'Fiber optic' then 0.4 else 0 end
            + (hashtext(customer_id) %% 1000) / 1000.0
        ))) as churn_probability
    from features.customer_features
    where snapshot_date = %(day)s
)
select
    snapshot_date,
    customer_id,
    churn_probability,
    case when churn_probability >= %(high)s then 'high'
         when churn_probability >= %(medium)s then 'medium' else 'low' end,
    'Contract: ' || contract, 1.4,
    'Tenure: ' || tenure_months || ' months', 0.035 * (40 - tenure_months),
    'Payment method: ' || payment_method, case when payment_method = 'Electronic check'
        then 0.5 else -0.1 end,
    'churn-model', '1', now()
from scored
"""

# Earlier score dates of the first customers: the same customers, their probability moved.
HISTORY_SQL = """
insert into ml.churn_risk_scores
select
    %(day)s, customer_id,
    least(1, greatest(0, churn_probability * (0.8 + (hashtext(customer_id || %(day)s::text)
        %% 400 + 400) / 2000.0))),
    risk_band, top_reason_1, top_reason_1_contribution, top_reason_2,
    top_reason_2_contribution, top_reason_3, top_reason_3_contribution,
    model_name, case when %(day)s < %(switch)s then '0' else '1' end, now()
from ml.churn_risk_scores
where snapshot_date = %(latest)s
  and customer_id in (
      select customer_id from ml.churn_risk_scores where snapshot_date = %(latest)s
      order by customer_id limit %(customers)s
  )
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--history-customers", type=int, default=10_000)
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="a database a --keep run seeded: only its analytics models are rebuilt",
    )
    args = parser.parse_args()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    name = args.reuse or f"retention_bench_dashboard_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server, name)
    url = database.with_database(server, name)
    try:
        with tempfile.TemporaryDirectory(prefix="retention-bench-dashboard-") as folder:
            work = Path(folder)
            if args.reuse:
                _stage("analytics", lambda: _build_analytics(url, work))
            else:
                _stage("seeding", lambda: _seed(url, settings, args, work))
            reader = database.with_login(
                url, settings.reader_login, settings.reader_password.get_secret_value()
            )
            _report_queries(reader, args.repeat)
            _report_browser(url, args.repeat, work)
    finally:
        if args.keep or args.reuse:
            print(f"kept {database.masked_url(url)}")
        else:
            database.drop_database(server, name)


def _stage(label: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    print(f"{label} ...", flush=True)
    result = action()
    print(f"{label}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


# --- the data -------------------------------------------------------------------------------


def _seed(url: str, settings: Any, args: argparse.Namespace, work: Path) -> None:
    database.upgrade(url)
    database.ensure_reader_role(url, database.reader_role_of(settings))
    landing = write_landing_csv(work / "landing.csv", args.customers, seed=7, labelled=False)
    replace_snapshot_partition(
        url,
        snapshot_date=LATEST,
        facts=check_landing_file(landing, max_bytes=10**10),
        chunks=read_validated_chunks(landing, chunk_rows=CHUNK_ROWS),
    )
    landing.unlink()
    _dbt(url, ["build", "--select", "stg_customers customer_features"], LATEST, work)
    bands = {"high": settings.risk_high_threshold, "medium": settings.risk_medium_threshold}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCORES_SQL, {"day": LATEST, **bands})
        for back in range(1, args.history_days):
            conn.execute(
                HISTORY_SQL,
                {
                    "day": LATEST - timedelta(days=back),
                    "switch": LATEST - timedelta(days=args.history_days // 2),
                    "latest": LATEST,
                    "customers": args.history_customers,
                },
            )
        conn.execute("analyze ml.churn_risk_scores")
    _build_analytics(url, work)
    with psycopg.connect(url) as conn:
        rows = conn.execute("select count(*) from ml.churn_risk_scores").fetchone()
    print(f"  {args.customers:,} customers on {LATEST}, {rows[0] if rows else 0:,} scores in all")


def _build_analytics(url: str, work: Path) -> None:
    """The analytics models as the nightly run builds them (the first build of each)."""
    _dbt(url, ["run", "--full-refresh", "--select", "path:models/analytics"], LATEST, work)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("analyze analytics.customer_risk_latest")


def _dbt(url: str, command: list[str], day: date, work: Path) -> None:
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(
            [dbt_executable(), *command, "--quiet", "--project-dir", str(project),
             "--profiles-dir", str(project), "--target-path", str(work / "dbt-target"),
             "--vars", json.dumps({"snapshot_date": day.isoformat()})],
            check=True,
        )  # fmt: skip


# --- the figures ----------------------------------------------------------------------------


def _timed(action: Callable[[], Any], repeat: int) -> tuple[float, float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), max(seconds)


def _print_row(label: str, median: float, slowest: float) -> None:
    print(f"  {label:<58} median {median * 1000:8.0f} ms   slowest {slowest * 1000:8.0f} ms")


def _page_queries(conn: psycopg.Connection) -> list[tuple[str, Callable[[], Any]]]:
    """What each page asks Postgres, through the dashboard's own query functions."""
    latest = queries.latest_scores(conn)
    if latest is None:
        raise RuntimeError("no scores: the seeding did not build analytics.customer_risk_latest")
    everyone = queries.CallListFilter()
    narrow = queries.CallListFilter(
        bands=("high",), contracts=("Month-to-month",), reason_contains="electronic"
    )
    customer = str(
        conn.execute(
            "select customer_id from analytics.customer_score_history"
            " group by customer_id order by count(*) desc, customer_id limit 1"
        ).fetchone()[0]  # type: ignore[index]
    )
    first, last = queries.scored_date_range(conn) or (LATEST, LATEST)
    days = 60
    return [
        ("call list: latest date and filter choices", lambda: queries.latest_scores(conn)),
        ("call list: totals, no filter", lambda: queries.call_list_totals(conn, everyone)),
        ("call list: page 1, no filter", lambda: queries.call_list_page(conn, everyone, 1, 50)),
        ("call list: page 200, no filter",
         lambda: queries.call_list_page(conn, everyone, 200, 50)),
        ("call list: totals, band+contract+reason",
         lambda: queries.call_list_totals(conn, narrow)),
        ("call list: page 1, band+contract+reason",
         lambda: queries.call_list_page(conn, narrow, 1, 50)),
        ("customer: latest score and profile", lambda: queries.customer_risk(conn, customer)),
        ("customer: score history (30 dates)",
         lambda: queries.customer_history(conn, customer)),
        ("trends: date range", lambda: queries.scored_date_range(conn)),
        ("trends: customers per band per date (30 dates)",
         lambda: queries.band_counts_by_date(conn, first, last)),
        ("trends: mean probability per date",
         lambda: queries.mean_probability_by_date(conn, first, last)),
        ("trends: most frequent first reasons",
         lambda: queries.top_first_reasons(conn, first, last)),
        ("model health: champion", lambda: queries.champion(conn)),
        ("model health: realised performance", lambda: queries.realised_performance(conn, days)),
        ("model health: drift per date", lambda: queries.drift_by_date(conn, days)),
        ("model health: data quality per date", lambda: queries.quality_by_date(conn, days)),
    ]  # fmt: skip


def _report_queries(reader_url: str, repeat: int) -> None:
    print(f"queries as the reader, {repeat} runs each, no cache:")
    with psycopg.connect(reader_url, autocommit=True) as conn:
        for label, action in _page_queries(conn):
            _print_row(label, *_timed(action, repeat))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _dashboard(url: str, work: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "RETENTION_DATABASE_URL": url, "RETENTION_DASHBOARD_CACHE_TTL_S": "0"}
    retention = shutil.which("retention") or str(Path(sys.executable).parent / "retention")
    log = (work / "dashboard.log").open("w")
    process = subprocess.Popen(
        [retention, "dashboard", "--port", str(port)], env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/_stcore/health", process, work / "dashboard.log")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _wait_for(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dashboard stopped: {log.read_text()[-2000:]}")
        try:
            if httpx.get(address, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the dashboard did not answer within 120 s: {log.read_text()[-2000:]}")


# Each page by its path, and what shows last on it: a text, then this many charts drawn.
PAGES = (
    ("call list", "", "customers a page", 0),
    ("customer", "customer?customer_id={customer}", "Score history", 2),
    ("trends", "trends", "Most frequent first reasons", 3),
    ("model health", "model_health", "Data quality", 0),
)
# A filter that selects about a tenth of a million generated customers.
EXPORT_QUERY = "contract=Month-to-month&p_min=0.7"


def _report_browser(url: str, repeat: int, work: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("browser: skipped, Debian's chromium is not installed (apt-get install chromium)")
        return
    with psycopg.connect(url) as conn:
        customer = conn.execute(
            "select customer_id from ml.churn_risk_scores"
            " group by customer_id order by count(*) desc, customer_id limit 1"
        ).fetchone()[0]  # type: ignore[index]
    with _dashboard(url, work) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        print(f"pages in the browser (navigation to the last element), {repeat} runs each:")
        for label, path, last, charts in PAGES:

            def render(path: str = path, last: str = last, charts: int = charts) -> None:
                page.goto(f"{base}/{path.format(customer=customer)}")
                _wait_drawn(page, last, charts)

            render()  # the first visit of a page starts its session; not counted
            _print_row(label, *_timed(render, repeat))
        print(f"switching pages in the app (a click in the sidebar), {repeat} runs each:")
        page.goto(f"{base}/")
        page.get_by_text(PAGES[0][2]).first.wait_for(timeout=60_000)
        # From model health to the others, and to model health from the trends page.
        for label, _, last, charts in (PAGES[0], PAGES[2], PAGES[3]):
            back = PAGES[2] if label == "model health" else PAGES[3]
            timings = [_switch_to(page, back, (label, last, charts)) for _ in range(repeat)]
            _print_row(label, statistics.median(timings), max(timings))
        browser.close()
        _report_csv(base, EXPORT_QUERY)


def _wait_drawn(page: Page, last: str, charts: int) -> None:
    page.get_by_text(last).first.wait_for(timeout=60_000)
    if charts:
        drawn = page.locator(".vega-embed canvas, .vega-embed svg.marks")
        drawn.nth(charts - 1).wait_for(timeout=60_000)


def _switch_to(
    page: Page, origin: tuple[str, str, str, int], target: tuple[str, str, int]
) -> float:
    """Seconds from a click on the target's link in the sidebar to its last element, made
    on the origin page once that is drawn."""
    label, _, last, charts = origin
    page.get_by_role("link", name=label.capitalize()).first.click()
    _wait_drawn(page, last, charts)
    label, last, charts = target
    started = time.perf_counter()
    page.get_by_role("link", name=label.capitalize()).first.click()
    _wait_drawn(page, last, charts)
    return time.perf_counter() - started


def _report_csv(base: str, query: str) -> None:
    started = time.perf_counter()
    first = None
    lines = 0
    with httpx.stream("GET", f"{base}/export/call-list.csv?{query}", timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            if first is None:
                first = time.perf_counter() - started
            lines += chunk.count(b"\n")
    total = time.perf_counter() - started
    print(
        f"CSV export ({query}): {lines - 1:,} rows, first byte {(first or total) * 1000:.0f} ms, "
        f"last byte {total:.1f} s"
    )


if __name__ == "__main__":
    main()
