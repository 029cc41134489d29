"""Reading ``features.customer_features`` through the I/O layer, on the real Telco snapshot:
the two typings, the sample, and the labelled rows training reads."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from retention_pipelines.core.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from retention_pipelines.core.warehouse import features
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = pytest.mark.slow
DAY = date.fromisoformat(TELCO_DAY)
ROWS = 5_634


def test_the_table_typing_is_the_tables_and_the_model_typing_is_floats(
    telco_warehouse: str,
) -> None:
    table, raw_rows = features.read_partition(telco_warehouse, DAY)
    assert (len(table), raw_rows) == (ROWS, ROWS)
    assert table["tenure_months"].dtype == np.int64
    assert table["monthly_charges"].dtype == np.float64
    assert all(isinstance(table[c].dtype, pd.CategoricalDtype) for c in CATEGORICAL_FEATURES)
    with psycopg.connect(telco_warehouse) as conn:
        chunks = list(features.read_features(conn, features.on_date(DAY), chunk_rows=2_000))
    assert [len(chunk) for chunk in chunks] == [2_000, 2_000, 1_634]
    model = pd.concat(chunks, ignore_index=True)
    assert list(model.columns) == ["customer_id", *FEATURE_COLUMNS]
    assert model["tenure_months"].dtype == np.float64
    merged = model.merge(table, on="customer_id", suffixes=("", "_table"))
    assert (merged["tenure_months"] == merged["tenure_months_table"]).all()


def test_a_sample_is_bounded_and_counts_what_it_left_out(telco_warehouse: str) -> None:
    sample, rows = features.read_sample(telco_warehouse, features.on_date(DAY), max_rows=1_000)
    assert rows == ROWS
    assert 800 <= len(sample) <= 1_200
    again, _ = features.read_sample(telco_warehouse, features.on_date(DAY), max_rows=1_000)
    pd.testing.assert_frame_equal(sample, again)
    whole, _ = features.read_sample(telco_warehouse, features.on_date(DAY), max_rows=ROWS)
    assert len(whole) == ROWS


def test_training_reads_each_customer_once_from_their_latest_labelled_date(
    telco_warehouse: str,
) -> None:
    later = DAY + timedelta(days=7)
    with psycopg.connect(telco_warehouse) as conn:  # a later labelled date for 100 customers
        conn.execute(
            "create temp table later as select * from features.customer_features"
            " where snapshot_date = %s order by customer_id limit 100",
            (DAY,),
        )
        conn.execute(
            "update later set snapshot_date = %s, tenure_months = tenure_months + 1", (later,)
        )
        conn.execute("insert into features.customer_features select * from later")
    try:
        latest_only, dates = features.read_labelled(telco_warehouse, snapshots=1)
        both, both_dates = features.read_labelled(telco_warehouse, snapshots=2)
    finally:
        with psycopg.connect(telco_warehouse) as conn:
            conn.execute(
                "delete from features.customer_features where snapshot_date = %s", (later,)
            )
    assert (dates, len(latest_only)) == ([later], 100)
    assert both_dates == [DAY, later] and len(both) == ROWS and both["customer_id"].is_unique
    assert (both["snapshot_date"] == later).sum() == 100
    assert both["customer_id"].is_monotonic_increasing


def test_a_date_s_features_are_found_through_the_key_not_by_reading_every_date(
    telco_warehouse: str,
) -> None:
    with psycopg.connect(telco_warehouse) as conn:
        (definition,) = conn.execute(
            "select indexdef from pg_indexes"
            " where schemaname = 'features' and tablename = 'customer_features'"
        ).fetchone() or ("",)
        conn.execute("set local enable_seqscan = off")  # a small table: make the planner show
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "explain select * from features.customer_features where snapshot_date = %s",
                (DAY,),
            )
        )
    assert "UNIQUE INDEX" in definition and "(snapshot_date, customer_id)" in definition
    assert "customer_features_snapshot_customer" in plan
