"""Personal data at scale: the CRM selection, an erasure, a pseudonym lookup and the retention
purge on a warehouse of ``--customers`` customers and ``--dates`` scored dates.

    RETENTION_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        uv run python benchmarks/personal_data.py [--customers 1000000] [--dates 30] \\
        [--log-rows 1000000] [--outbox-per-date 200] [--purge-dates 10] \\
        [--index-check auto|always|never] [--keep]

In a throwaway database on the platform's Postgres (RETENTION_DATABASE_URL or the embedded
server; dropped at the end, whatever happens, unless ``--keep``), migrated as the platform
migrates its warehouse, it fills every table that holds customers directly in SQL, without
ingestion, scoring or a night of dbt (not measured):

- ``raw.customer_snapshots``: the latest date generated in SQL (``generate_series``, values
  within the tables' checks and the landing schema's categories), every earlier date a copy
  of it; ``raw.customer_rejects`` (a thousandth of the customers per date, the record naming
  the customer) and ``raw.ingestion_runs``, one row per date;
- ``features.customer_features``: built by the real dbt model (``dbt run``) for the latest
  date, which creates the table with its contract, then copied to the earlier dates;
- ``ml.churn_risk_scores``: every date from the latest features with a fixed logistic formula,
  moved per date by noise (a few hundredths of probability) and, for 2% of the customers of
  each date, a jump that makes some of them rise by ``RETENTION_CRM_MIN_RISE`` or enter the
  high band; ``analytics.customer_risk_latest`` built by the real dbt model from the latest
  scores;
- ``ml.prediction_log``: ``--log-rows`` answers spread over the dates; ``ml.crm_outbox``:
  ``--outbox-per-date`` sent tasks on every date but the latest.

The primary keys and indexes of the raw table, the scores and the log are dropped while they
are filled and built again after, with their own definitions; then everything is vacuumed and
analysed, as a settled warehouse is. Then it times, through the platform's own functions:

1. ``crm.select_tasks`` of the latest date, with the settings' rise, cooldown and capacity;
2. ``erasure.forget_customer`` of three customers, one after the other, and how long an API
   answer written to ``ml.prediction_log`` meanwhile waits for it; then each table's delete
   alone (``EXPLAIN ANALYZE`` in a transaction rolled back), with the plan of the slow ones;
3. ``pseudonyms.lookup`` of one customer's displayed pseudonym;
4. with ``--index-check`` (``auto``: when an erasure took over 20 s), an index on
   ``(customer_id)`` of ``raw.customer_snapshots`` and ``features.customer_features``: its
   build, one date of ``--customers`` rows loaded into both tables without and with it (from a
   temporary table, as ingestion does), and three more erasures with it; then dropped again;
5. ``data_retention.plan_purge`` and ``purge`` with every table keeping ``--dates`` minus
   ``--purge-dates`` minus one days, so that the oldest ``--purge-dates`` dates go: seconds per
   date and rows per second per table, timed from the audit entries each date's transaction
   writes (their ``recorded_at`` is the transaction's start).

Measured on 2 CPUs (idle), 23.5 GiB, PostgreSQL 15.20 on the same machine with its defaults
(shared_buffers 128MB, max_wal_size 1GB, work_mem 4MB); the defaults (1,000,000 customers x
30 dates, nearly all of it in the page cache), ``--index-check never``; the whole run 688 s:

    crm.select_tasks                7.1 s   200 selected of 19,184 entering high and
                                            13,706 rising by 0.15 (112,029 high)
    erasure.forget_customer         2.7 s, 1.6 s, 1.7 s   96 to 98 rows in 7 tables; an
                                            API log write meanwhile waited 2.5, 1.4, 1.5 s
      of which one customer's delete from raw.customer_snapshots 0.82 s and from
      features.customer_features 0.74 s (sequential scans of 30,000,000 rows each); the
      others 0.00 s
    pseudonyms.lookup              29.7 s   (the union of every id, sorted on disk)
    data_retention.plan_purge       2.5 s   30,345,267 rows of 10 dates
    data_retention.purge           39.5 s   768,000 rows/s, 3.9 s per date: raw (three
                                            tables) 0.96 s/date, features 1.45 s/date,
                                            scores 1.28 s/date, log 0.08 s/date

An earlier run, before features.customer_features had its index on (snapshot_date,
customer_id) and with another session's test suite on the same cores (load 1.1 to 2.7), with
``--index-check always``: selection 8.2 s, erasures 4.6, 3.1, 3.1 s, lookup 34.3 s, purge
76.8 s (features 3.08 s/date, every date's delete a scan of all 30 dates). An index on
(customer_id) of raw and features took 29.0 s and 26.2 s to build (0.23 GiB each), made one
date of 1,000,000 rows load in 10.6 s instead of 4.5 s (raw) and 7.6 s instead of 1.5 s
(features), and erasures 0.1 to 0.2 s with no wait for a log write: not added, erasures being
rare and nights daily.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql

from retention_pipelines.core import crm, data_retention, database, erasure, pseudonyms
from retention_pipelines.core.warehouse.streams import scalar
from retention_pipelines.core.warehouse.tables import (
    CHURN_RISK_SCORES,
    CRM_OUTBOX,
    CUSTOMER_FEATURES,
    CUSTOMER_RISK_LATEST,
    PREDICTION_LOG,
    RAW_REJECTS,
    RAW_SNAPSHOTS,
)
from retention_pipelines.resources import WarehouseResource, dbt_executable
from retention_pipelines.settings import get_settings

LATEST: Final = date(2026, 3, 31)
GIB: Final = 1024**3
SLOW_ERASURE_S: Final = 20.0
WRITER_DELAY_S: Final = 0.2  # the API's log writer comes this long after the erasure starts
ACTOR: Final = "benchmark"
# Filled with their indexes dropped, built again after: one sort instead of random inserts.
REBUILT: Final = (RAW_SNAPSHOTS, CHURN_RISK_SCORES, PREDICTION_LOG)
# Where an erasure scans the whole table: no index leads with customer_id.
UNINDEXED: Final = (RAW_SNAPSHOTS, CUSTOMER_FEATURES)

# The customer of position i (from 1) in the platform's id form, \d{4}-[A-Z]{5}: unique up
# to 10,000 x 26^5 customers.
CUSTOMER_ID: Final = """(
    lpad((({i}) %% 10000)::text, 4, '0') || '-'
    || chr((65 + ({i}) / 10000 %% 26)::integer)
    || chr((65 + ({i}) / 260000 %% 26)::integer)
    || chr((65 + ({i}) / 6760000 %% 26)::integer)
    || chr((65 + ({i}) / 175760000 %% 26)::integer)
    || chr((65 + ({i}) / 4569760000 %% 26)::integer)
)"""

RAW_SQL: Final = f"""
insert into raw.customer_snapshots (
    snapshot_date, customer_id, gender, senior_citizen, partner, dependents, tenure,
    phone_service, multiple_lines, internet_service, online_security, online_backup,
    device_protection, tech_support, streaming_tv, streaming_movies, contract,
    paperless_billing, payment_method, monthly_charges, total_charges, churn, source,
    source_row_number
)
select
    %(day)s, {CUSTOMER_ID.format(i="i")},
    (array['Female', 'Male'])[1 + r[1]], r[2], yes_no[1 + r[3]], yes_no[1 + r[4]], tenure,
    phone, case when phone = 'No' then 'No phone service' else yes_no[1 + r[5]] end,
    internet,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[6]] end,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[7]] end,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[8]] end,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[9]] end,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[10]] end,
    case when internet = 'No' then 'No internet service' else yes_no[1 + r[11]] end,
    (array['Month-to-month', 'Month-to-month', 'One year', 'Two year'])[1 + r[12] * 2 + r[13]],
    yes_no[1 + r[14]],
    (array['Electronic check', 'Mailed check', 'Bank transfer (automatic)',
           'Credit card (automatic)'])[1 + r[15] * 2 + r[16]],
    monthly, round(monthly * tenure * (0.95 + random()::numeric * 0.1), 2), null,
    %(source)s, i
from (
    select
        i, r, array['Yes', 'No'] as yes_no,
        (array['Yes', 'Yes', 'Yes', 'No'])[1 + r[17] * 2 + r[18]] as phone,
        (array['DSL', 'Fiber optic', 'Fiber optic', 'No'])[1 + r[19] * 2 + r[20]] as internet,
        floor(random() * 73)::integer as tenure,
        round((18.25 + random() * 100)::numeric, 2) as monthly
    from (
        select i, array(select (random() < 0.5)::integer from generate_series(1, 20)
                        where i is not null) as r
        from generate_series(1, %(customers)s) as i
        offset 0
    ) drawn
    offset 0
) customers
"""

COPY_DATE_SQL: Final = "insert into {table} select {columns} from {source} where snapshot_date = %s"

# Each customer's score before the date's movement, from the latest features.
BASE_SQL: Final = """
create table bench_base as
select
    customer_id, contract, tenure_months, payment_method,
    -1.4
    + case contract when 'Month-to-month' then 1.4 when 'One year' then -0.2 else -1.3 end
    - 0.035 * tenure_months
    + 0.012 * (monthly_charges - 65)
    + case when payment_method = 'Electronic check' then 0.5 else 0 end
    + case when internet_service = 'Fiber optic' then 0.4 else 0 end
    + (hashtext(customer_id) %% 1000) / 1000.0 as logit
from features.customer_features
where snapshot_date = %(day)s
"""

# A date's scores: the base moved by noise and, for 2% of the customers, a jump.
SCORES_SQL: Final = """
insert into ml.churn_risk_scores
select
    %(day)s, customer_id, churn_probability,
    case when churn_probability >= %(high)s then 'high'
         when churn_probability >= %(medium)s then 'medium' else 'low' end,
    'Contract: ' || contract, 1.4,
    'Tenure: ' || tenure_months || ' months', 0.035 * (40 - tenure_months),
    'Payment method: ' || payment_method,
    case when payment_method = 'Electronic check' then 0.5 else -0.1 end,
    'churn-model', '1', %(day)s::timestamptz + interval '3 hours'
from (
    select
        customer_id, contract, tenure_months, payment_method,
        1 / (1 + exp(-(
            logit
            + 0.3 * (hashtext(customer_id || %(day_text)s) %% 1000) / 1000.0
            + case when abs(hashtext(%(day_text)s || customer_id) %% 100) < 2 then 1.5 else 0 end
        ))) as churn_probability
    from bench_base
) moved
"""

REJECTS_SQL: Final = f"""
insert into raw.customer_rejects (snapshot_date, source, row_number, customer_id, record, reasons)
select
    %(day)s, %(source)s, %(customers)s + j,
    case when j %% 5 = 0 then null else id end,
    jsonb_build_object('customerID', id, 'tenure', 'n/a', 'MonthlyCharges', '42.00'),
    array['tenure: not a number']
from (
    select j, {CUSTOMER_ID.format(i="(j * 7919 + %(offset)s) %% %(customers)s + 1")} as id
    from generate_series(1, %(rejects)s) as j
) rows
"""

INGESTION_RUN_SQL: Final = """
insert into raw.ingestion_runs (
    snapshot_date, source, file_sha256, file_bytes, rows_read, rows_valid, rows_rejected,
    duplicates_collapsed
)
select %(day)s, %(source)s, md5(%(source)s), %(customers)s * 200::bigint,
       %(customers)s + %(rejects)s, %(customers)s, %(rejects)s, 0
"""

LOG_SQL: Final = f"""
insert into ml.prediction_log (
    request_id, row_index, predicted_at, customer_id, variant, served, model_name,
    model_version, churn_probability, risk_band, latency_ms, api_key_id
)
select
    gen_random_uuid(), 0,
    (%(first)s::date + random() * %(days)s * interval '1 day') at time zone %(timezone)s,
    {CUSTOMER_ID.format(i="floor(random() * %(customers)s)::integer + 1")},
    'champion', true, 'churn-model', '1', p,
    case when p >= %(high)s then 'high' when p >= %(medium)s then 'medium' else 'low' end,
    5 + random() * 20, null
from (select random() as p from generate_series(1, %(rows)s) offset 0) answers
"""

OUTBOX_SQL: Final = f"""
insert into ml.crm_outbox (
    snapshot_date, customer_id, idempotency_key, handoff_reason, churn_probability,
    previous_probability, risk_band, monthly_charges, revenue_at_risk, priority,
    talking_points, model_name, model_version, status, attempts, destination, sent_at
)
select
    %(day)s, id, md5(%(day)s::text || id)::uuid::text, 'risk_rose', 0.7, 0.5, 'high', 80.00,
    56.0, j, '[]'::jsonb, 'churn-model', '1', 'sent', 1, 'https://crm.example/tasks',
    %(day)s::timestamptz + interval '5 hours'
from (
    select j, {CUSTOMER_ID.format(i="(j * 104729 + %(offset)s) %% %(customers)s + 1")} as id
    from generate_series(1, %(tasks)s) as j
) tasks
on conflict do nothing
"""

# What the selection compares: the latest date's scores against each customer's previous.
MOVEMENT_SQL: Final = """
select
    count(*) filter (where t.risk_band = 'high' and p.risk_band <> 'high'),
    count(*) filter (where t.churn_probability - p.churn_probability >= %(rise)s),
    count(*) filter (where t.risk_band = 'high')
from ml.churn_risk_scores t
join ml.churn_risk_scores p on p.customer_id = t.customer_id and p.snapshot_date = %(previous)s
where t.snapshot_date = %(day)s
"""


@dataclass
class Figures:
    """What the run measured, printed as a table at the end."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, detail: str = "") -> None:
        self.rows.append((what, value, detail))
        print(f"  {what}: {value}{'  ' + detail if detail else ''}", flush=True)

    def print(self) -> None:
        width = max(len(what) for what, _, _ in self.rows)
        value_width = max(len(value) for _, value, _ in self.rows)
        print("\n=== figures ===")
        for what, value, detail in self.rows:
            print(f"{what:<{width}}  {value:>{value_width}}  {detail}".rstrip())


@dataclass(frozen=True)
class Run:
    """A run's database and its dates."""

    url: str
    folder: Path
    customers: int
    dates: tuple[date, ...]  # oldest first
    key: bytes

    @property
    def previous(self) -> date:
        return self.dates[-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--dates", type=int, default=30, help="scored dates (raw and features too)")
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--outbox-per-date", type=int, default=200)
    parser.add_argument("--purge-dates", type=int, default=10, help="the oldest dates purged")
    parser.add_argument(
        "--index-check", choices=("auto", "always", "never"), default="auto",
        help="time an index on (customer_id) of the raw and feature tables "
        f"(auto: when an erasure took over {SLOW_ERASURE_S:g} s)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.dates < args.purge_dates + 2 or args.customers < 100:
        parser.error("needs --dates of at least --purge-dates + 2 and 100 customers or more")
    started = time.perf_counter()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    name = f"retention_bench_personal_{uuid.uuid4().hex[:8]}"
    database.ensure_database(server, name)
    figures = Figures()
    try:
        with tempfile.TemporaryDirectory(prefix="retention-bench-personal-") as folder:
            run = Run(
                url=database.with_database(server, name),
                folder=Path(folder),
                customers=args.customers,
                dates=tuple(LATEST - timedelta(days=back) for back in reversed(range(args.dates))),
                key=_pseudonym_key(),
            )
            _print_header(run, args)
            _stage("filling", lambda: _fill(run, args))
            _report_sizes(run)
            _measure(run, args, figures)
    finally:
        if args.keep:
            print(f"kept {database.masked_url(database.with_database(server, name))}")
        else:
            database.drop_database(server, name)
    figures.print()
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s", flush=True)


def _measure(run: Run, args: argparse.Namespace, figures: Figures) -> None:
    print("measuring ...", flush=True)
    _measure_selection(run, figures)
    erased = [_customer(run, run.customers // share) for share in (2, 3, 7)]
    slowest = max(_measure_erasure(run, customer, figures, "") for customer in erased)
    _measure_statements(run, _customer(run, run.customers // 13), figures)
    _measure_lookup(run, _customer(run, run.customers // 11), figures)
    if args.index_check == "always" or (args.index_check == "auto" and slowest > SLOW_ERASURE_S):
        _measure_index(run, figures)
    _measure_purge(run, args.purge_dates, figures)


def _stage(label: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    print(f"{label} ...", flush=True)
    result = action()
    print(f"{label}: {time.perf_counter() - started:.0f} s (not measured)", flush=True)
    return result


def _print_header(run: Run, args: argparse.Namespace) -> None:
    with psycopg.connect(run.url) as conn:
        version = scalar(conn, "show server_version")
        shared = scalar(conn, "show shared_buffers")
        wal = scalar(conn, "show max_wal_size")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    print("=== RetentionAI: personal data at scale ===")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} CPUs, {memory:.1f} GiB, {platform.platform()}; "
        f"Postgres {version} (shared_buffers {shared}, max_wal_size {wal}); "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(
        f"warehouse: {args.customers:,} customers x {args.dates} dates "
        f"({run.dates[0]} to {run.dates[-1]}), {args.log_rows:,} logged answers, "
        f"{args.outbox_per_date} sent CRM tasks per date",
        flush=True,
    )


def _pseudonym_key() -> bytes:
    """The platform's key, or, on a server without one (the benchmark's database is its own
    and dropped), a key of this run's."""
    try:
        return pseudonyms.pseudonym_key(get_settings())
    except pseudonyms.PseudonymKeyError:
        return uuid.uuid4().hex.encode()


def _customer(run: Run, position: int) -> str:
    with psycopg.connect(run.url) as conn:
        return _customer_id(conn, position)


def _customer_id(conn: psycopg.Connection[Any], position: int) -> str:
    """The id of the customer of ``position`` (from 1)."""
    return str(scalar(conn, f"select {CUSTOMER_ID.format(i='%(i)s::bigint')}", {"i": position}))


# --- filling the warehouse ------------------------------------------------------------------


def _fill(run: Run, args: argparse.Namespace) -> None:
    settings = get_settings()
    database.upgrade(run.url)
    database.ensure_reader_role(run.url, database.reader_role_of(settings))
    bands = {"high": settings.risk_high_threshold, "medium": settings.risk_medium_threshold}
    with psycopg.connect(run.url, autocommit=True) as conn:
        conn.execute("set maintenance_work_mem = '1GB'")
        rebuild = _drop_indexes(conn, REBUILT)
        conn.execute(
            RAW_SQL, {"day": LATEST, "customers": run.customers, "source": _source(LATEST)}
        )
    _dbt(run, ["run", "--select", "stg_customers customer_features"])
    with psycopg.connect(run.url, autocommit=True) as conn:
        conn.execute(BASE_SQL, {"day": LATEST})
        _scores(conn, LATEST, bands)
    _dbt(run, ["run", "--select", "customer_risk_latest"])
    with psycopg.connect(run.url, autocommit=True) as conn:
        conn.execute("set maintenance_work_mem = '1GB'")
        for number, day in enumerate(reversed(run.dates[:-1]), start=2):
            started = time.perf_counter()
            _copy_date(conn, RAW_SNAPSHOTS, day)
            _copy_date(conn, CUSTOMER_FEATURES, day)
            _scores(conn, day, bands)
            print(f"  {day}: {time.perf_counter() - started:.1f} s ({number}/{len(run.dates)})",
                  flush=True)  # fmt: skip
        conn.execute("drop table bench_base")
        _fill_small_tables(conn, run, args, bands)
        for statement in rebuild:
            conn.execute(statement)
        _erased_customers_everywhere(conn, run)
        conn.execute("vacuum (analyze)")


def _source(day: date) -> str:
    return f"customers_{day.isoformat()}.csv"


def _scores(conn: psycopg.Connection[Any], day: date, bands: dict[str, float]) -> None:
    conn.execute(SCORES_SQL, {"day": day, "day_text": day.isoformat(), **bands})


def _copy_date(conn: psycopg.Connection[Any], table: str, day: date) -> None:
    """The latest date's rows again as ``day``'s."""
    columns = [
        str(row[0])
        for row in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " and not attisdropped order by attnum",
            (table,),
        )
    ]
    values = sql.SQL(", ").join(
        sql.Literal(day) if column == "snapshot_date" else sql.Identifier(column)
        for column in columns
    )
    source = sql.Identifier(*table.split("."))
    conn.execute(
        sql.SQL(COPY_DATE_SQL).format(table=source, columns=values, source=source), (LATEST,)
    )


def _fill_small_tables(
    conn: psycopg.Connection[Any], run: Run, args: argparse.Namespace, bands: dict[str, float]
) -> None:
    rejects = max(run.customers // 1000, 1)
    for number, day in enumerate(run.dates):
        params = {
            "day": day,
            "source": _source(day),
            "customers": run.customers,
            "rejects": rejects,
            "offset": number * 31,
            "tasks": args.outbox_per_date,
        }
        conn.execute(REJECTS_SQL, params)
        conn.execute(INGESTION_RUN_SQL, params)
        if day != LATEST:
            conn.execute(OUTBOX_SQL, params)
    conn.execute(
        LOG_SQL,
        {
            "first": run.dates[0],
            "days": len(run.dates),
            "timezone": get_settings().timezone,
            "customers": run.customers,
            "rows": args.log_rows,
            **bands,
        },
    )


def _erased_customers_everywhere(conn: psycopg.Connection[Any], run: Run) -> None:
    """The customers the run erases hold a CRM task, logged answers and a quarantined row,
    as well as their snapshots, features and scores."""
    for share in (2, 3, 4, 5, 7, 9, 11, 13):
        customer = _customer_id(conn, run.customers // share)
        day = run.dates[len(run.dates) // 2]
        conn.execute(
            "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
            " handoff_reason, churn_probability, previous_probability, risk_band,"
            " monthly_charges, revenue_at_risk, priority, talking_points, model_name,"
            " model_version, status, attempts, destination, sent_at)"
            " values (%s, %s, %s, 'entered_high', 0.6, 0.4, 'high', 70, 42, 999, '[]',"
            " 'churn-model', '1', 'sent', 1, 'https://crm.example/tasks', now())"
            " on conflict do nothing",
            (day, customer, str(uuid.uuid4())),
        )
        conn.execute(
            "insert into ml.prediction_log select gen_random_uuid(), 0, %s::timestamptz"
            " + n * interval '1 hour', %s, 'champion', true, 'churn-model', '1', 0.5, 'high',"
            " 9.0, null from generate_series(1, 3) as n",
            (datetime.combine(day, datetime.min.time(), tzinfo=UTC), customer),
        )
        conn.execute(
            "insert into raw.customer_rejects (snapshot_date, source, row_number, customer_id,"
            " record, reasons) values (%s, 'manual.csv', %s, null, %s, %s)",
            (day, share, json.dumps({"customerID": customer.lower(), "tenure": "-1"}),
             ["tenure: below 0"]),
        )  # fmt: skip


def _drop_indexes(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> list[str]:
    """Drop the tables' indexes and key constraints; the statements that build them again."""
    rows = conn.execute(
        "select i.indrelid::regclass::text, i.indexrelid::regclass::text, c.conname,"
        " pg_get_constraintdef(c.oid), pg_get_indexdef(i.indexrelid)"
        " from pg_index i left join pg_constraint c on c.conindid = i.indexrelid"
        "  and c.conrelid = i.indrelid and c.contype in ('p', 'u')"
        " where i.indrelid = any(%s::regclass[])",
        (list(tables),),
    ).fetchall()
    rebuild = []
    for table, index, constraint, constraint_def, index_def in rows:
        if constraint:
            conn.execute(f"alter table {table} drop constraint {constraint}")
            rebuild.append(f"alter table {table} add constraint {constraint} {constraint_def}")
        else:
            conn.execute(f"drop index {index}")
            rebuild.append(str(index_def))
    return rebuild


def _dbt(run: Run, command: list[str]) -> None:
    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=run.url).dbt_environment():
        subprocess.run(
            [dbt_executable(), *command, "--quiet", "--project-dir", str(project),
             "--profiles-dir", str(project), "--target-path", str(run.folder / "dbt-target"),
             "--log-path", str(run.folder / "dbt-logs"),
             "--vars", json.dumps({"snapshot_date": LATEST.isoformat()})],
            check=True,
        )  # fmt: skip


def _report_sizes(run: Run) -> None:
    tables = (RAW_SNAPSHOTS, RAW_REJECTS, CUSTOMER_FEATURES, CHURN_RISK_SCORES, PREDICTION_LOG,
              CRM_OUTBOX, CUSTOMER_RISK_LATEST)  # fmt: skip
    with psycopg.connect(run.url) as conn:
        print("tables (rows, table + indexes):")
        total = 0
        for table in tables:
            rows = scalar(
                conn, f"select reltuples::bigint from pg_class where oid = '{table}'::regclass"
            )
            size = int(scalar(conn, "select pg_total_relation_size(%s::regclass)", (table,)) or 0)
            total += size
            print(f"  {table:<34} {int(rows or 0):>13,} rows  {size / GIB:6.2f} GiB")
        print(f"  {'all of them':<34} {'':>18}  {total / GIB:6.2f} GiB", flush=True)


# --- the measurements -----------------------------------------------------------------------


def _measure_selection(run: Run, figures: Figures) -> None:
    settings = get_settings()
    selection = crm.Selection(
        min_rise=settings.crm_min_rise,
        cooldown_days=settings.crm_cooldown_days,
        daily_capacity=settings.crm_daily_capacity,
    )
    with psycopg.connect(run.url) as conn:
        entered, rose, high = conn.execute(
            MOVEMENT_SQL, {"day": LATEST, "previous": run.previous, "rise": settings.crm_min_rise}
        ).fetchone()  # type: ignore[misc]
    started = time.perf_counter()
    outcome = crm.select_tasks(run.url, LATEST, selection)
    seconds = time.perf_counter() - started
    figures.add(
        f"crm.select_tasks ({LATEST})",
        f"{seconds:.1f} s",
        f"{outcome.selected:,} tasks selected (capacity {selection.daily_capacity}, cooldown "
        f"{selection.cooldown_days} d) of {entered:,} entering high and {rose:,} rising by "
        f"{selection.min_rise:g} since {run.previous}; {high:,} high",
    )


def _measure_erasure(run: Run, customer: str, figures: Figures, label: str) -> float:
    waited: list[float] = []
    writer = threading.Thread(target=_log_writer, args=(run.url, waited), daemon=True)
    started = time.perf_counter()
    writer.start()
    done = erasure.forget_customer(
        run.url, customer, reason="benchmark: erasure request", actor=ACTOR, key=run.key
    )
    seconds = time.perf_counter() - started
    writer.join()
    rows = ", ".join(f"{table.split('.')[1]} {count}" for table, count in done.rows.items())
    figures.add(
        f"erasure.forget_customer {done.pseudonym}{label}",
        f"{seconds:.1f} s",
        f"{done.total} rows ({rows}); a log write waited {waited[0]:.1f} s",
    )
    return seconds


def _log_writer(url: str, waited: list[float]) -> None:
    """An API answer logged while the erasure runs: how long its insert waits."""
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(WRITER_DELAY_S)
        started = time.perf_counter()
        conn.execute(
            "insert into ml.prediction_log values (gen_random_uuid(), 0, %s, '0000-WRITE',"
            " 'champion', true, 'churn-model', '1', 0.1, 'low', 5.0, null)",
            (datetime.combine(LATEST, datetime.min.time(), tzinfo=UTC),),
        )
        waited.append(time.perf_counter() - started)


def _measure_statements(run: Run, customer: str, figures: Figures) -> None:
    """Each table's delete of one customer alone, rolled back; the plans of the slow ones."""
    plans = []
    with psycopg.connect(run.url) as conn:
        tables = erasure.customer_tables(conn)
        for table in tables:
            if table == RAW_REJECTS:
                continue  # matched by its record too: its own statement, a small table
            statement = sql.SQL(
                "explain (analyze, buffers) delete from {} where customer_id = %s"
            ).format(sql.Identifier(*table.split(".")))
            started = time.perf_counter()
            plan = [str(row[0]) for row in conn.execute(statement, (customer,))]
            seconds = time.perf_counter() - started
            conn.rollback()
            figures.add(f"  delete of one customer from {table}", f"{seconds:.2f} s")
            if seconds > 1.0:
                plans.append((table, plan))
    for table, plan in plans:
        print(f"  plan of the delete from {table}:")
        for line in plan:
            print(f"    {line}")


def _measure_lookup(run: Run, customer: str, figures: Figures) -> None:
    shown = pseudonyms.display(customer, run.key)
    started = time.perf_counter()
    found = pseudonyms.lookup(run.url, shown, run.key)
    seconds = time.perf_counter() - started
    figures.add(
        f"pseudonyms.lookup {shown}",
        f"{seconds:.1f} s",
        f"{len(found)} customer{'s' if len(found) != 1 else ''} found"
        + ("" if customer in found else " (NOT the customer shown)"),
    )


def _measure_index(run: Run, figures: Figures) -> None:
    """An index on (customer_id) of the tables an erasure scans whole: what it costs to
    build, what it adds to loading one date of every customer, what it saves an erasure."""
    next_day = LATEST + timedelta(days=1)
    with psycopg.connect(run.url, autocommit=True) as conn:
        for table in UNINDEXED:
            conn.execute(
                sql.SQL("create temp table {} as select * from {} where snapshot_date = %s").format(
                    _temp(table), sql.Identifier(*table.split("."))
                ),
                (LATEST,),
            )
        without = {table: _load_date(conn, table, next_day) for table in UNINDEXED}
        conn.execute("checkpoint")
        conn.execute("set maintenance_work_mem = '1GB'")
        for table in UNINDEXED:
            started = time.perf_counter()
            conn.execute(
                sql.SQL("create index {} on {} (customer_id)").format(
                    sql.Identifier(_index(table)), sql.Identifier(*table.split("."))
                )
            )
            built = time.perf_counter() - started
            size = int(scalar(conn, "select pg_relation_size(%s::regclass)",
                               (f"{table.split('.')[0]}.{_index(table)}",)) or 0)  # fmt: skip
            figures.add(f"index on {table} (customer_id): build", f"{built:.1f} s",
                        f"{size / GIB:.2f} GiB")  # fmt: skip
        conn.execute("checkpoint")
        for table in UNINDEXED:
            indexed = _load_date(conn, table, next_day + timedelta(days=1))
            figures.add(
                f"one date of {run.customers:,} rows into {table}",
                f"{without[table]:.1f} s -> {indexed:.1f} s",
                f"without -> with the index: +{indexed - without[table]:.1f} s",
            )
    for share in (4, 5, 9):
        _measure_erasure(run, _customer(run, run.customers // share), figures, " (indexed)")
    with psycopg.connect(run.url, autocommit=True) as conn:
        for table in UNINDEXED:
            conn.execute(
                sql.SQL("drop index {}").format(sql.Identifier(table.split(".")[0], _index(table)))
            )


def _temp(table: str) -> sql.Identifier:
    return sql.Identifier(f"load_{table.split('.')[1]}")


def _index(table: str) -> str:
    return f"bench_{table.split('.')[1]}_customer"


def _load_date(conn: psycopg.Connection[Any], table: str, day: date) -> float:
    """Seconds to insert a date of every customer, from the temporary table, as ingestion
    inserts a landing file it copied into one."""
    conn.execute(sql.SQL("update {} set snapshot_date = %s").format(_temp(table)), (day,))
    started = time.perf_counter()
    conn.execute(
        sql.SQL("insert into {} select * from {}").format(
            sql.Identifier(*table.split(".")), _temp(table)
        )
    )
    return time.perf_counter() - started


def _measure_purge(run: Run, purge_dates: int, figures: Figures) -> None:
    keep = len(run.dates) - purge_dates - 1
    settings = get_settings()
    policy = data_retention.retention_policy(
        keep_raw_days=keep,
        keep_features_days=keep,
        keep_scores_days=keep,
        keep_prediction_log_days=keep,
        keep_crm_outbox_days=keep,
        timezone=settings.timezone,
        crm_dir=run.folder / "crm",
    )
    started = time.perf_counter()
    plan = data_retention.plan_purge(run.url, policy, today=LATEST, champion=None)
    planned = time.perf_counter() - started
    to_purge = sum(sum(table.purge.values()) for table in plan.tables)
    dates = {day for table in plan.tables for day in table.purge}
    figures.add("data_retention.plan_purge", f"{planned:.1f} s",
                f"{to_purge:,} rows of {len(dates)} dates to purge")  # fmt: skip
    with psycopg.connect(run.url) as conn:
        first = int(scalar(conn, "select coalesce(max(audit_id), 0) from ops.audit_log") or 0)
        began = scalar(conn, "select clock_timestamp()")
    started = time.perf_counter()
    result = data_retention.purge(run.url, policy, today=LATEST, champion=None, actor=ACTOR)
    seconds = time.perf_counter() - started
    with psycopg.connect(run.url) as conn:
        ended = scalar(conn, "select clock_timestamp()")
        entries = conn.execute(
            "select recorded_at, subject, (details ->> 'rows')::bigint from ops.audit_log"
            " where kind = 'purge' and audit_id > %s order by audit_id",
            (first,),
        ).fetchall()
    deleted = sum(result.rows(table.rule.table) for table in plan.tables)
    figures.add(
        "data_retention.purge",
        f"{seconds:.1f} s",
        f"{deleted:,} rows, {deleted / seconds:,.0f} rows/s; {seconds / len(dates):.1f} s per "
        "date in all",
    )
    replanned, groups = _purge_groups(entries, began, ended)
    figures.add("  the purge's own plan", f"{replanned:.1f} s")
    for group, (group_s, group_dates, rows) in groups.items():
        figures.add(
            f"  purge of {group}",
            f"{group_s / max(group_dates, 1):.2f} s/date",
            f"{group_dates} dates, {rows:,} rows, {rows / max(group_s, 1e-9):,.0f} rows/s",
        )


def _purge_groups(
    entries: list[tuple[datetime, str, int]], began: datetime, ended: datetime
) -> tuple[float, dict[str, tuple[float, int, int]]]:
    """The seconds of the plan the purge makes first, then seconds, dates and rows per group
    of tables purged together, from the audit entries: one transaction per date and group,
    each entry stamped with its transaction's start, which the next transaction's start (or
    the purge's end) ends."""
    transactions: list[tuple[datetime, list[tuple[str, int]]]] = []
    for recorded_at, table, rows in entries:
        if transactions and transactions[-1][0] == recorded_at:
            transactions[-1][1].append((table, rows))
        else:
            transactions.append((recorded_at, [(table, rows)]))
    if not transactions:
        return (ended - began).total_seconds(), {}
    groups: dict[str, tuple[float, int, int]] = {}
    ends = [start for start, _ in transactions[1:]] + [ended]
    for (start, tables), end in zip(transactions, ends, strict=True):
        name = " + ".join(table for table, _ in tables)
        spent, count, rows = groups.get(name, (0.0, 0, 0))
        groups[name] = (
            spent + (end - start).total_seconds(),
            count + 1,
            rows + sum(r for _, r in tables),
        )
    return (transactions[0][0] - began).total_seconds(), groups


if __name__ == "__main__":
    main()
