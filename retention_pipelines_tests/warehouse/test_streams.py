"""The warehouse I/O layer's moving parts on real Postgres: the chunked COPY reader, the COPY
writer, the one-transaction partition replacement and the stable sample."""

import threading
import time
from datetime import date

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from retention_pipelines.core.warehouse.streams import (
    copy_in,
    copy_out,
    delete_partition,
    partition_transaction,
    read_frame,
    stable_sample,
)

DAY = date(2026, 5, 1)
TABLE = "public.stream_rows"


@pytest.fixture
def rows(database_url: str) -> str:
    """2,500 rows of (snapshot_date, id, label, amount, flag) in a table of this test's own."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"create table {TABLE} (snapshot_date date, customer_id text, label text,"
            " amount numeric(10,2), flag boolean)"
        )
        conn.execute(
            f"insert into {TABLE} select %s, lpad(n::text, 4, '0') || '-ABCDE',"
            " (array['a', 'b', 'c'])[n %% 3 + 1], n / 4.0, n %% 2 = 0"
            " from generate_series(1, 2500) n",
            (DAY,),
        )
    return database_url


def _select(where: str = "true") -> sql.Composable:
    return sql.SQL(f"select customer_id, label, amount, flag from {TABLE} where {where}")


COLUMNS = ["customer_id", "label", "amount", "flag"]


def test_the_reader_yields_frames_of_the_chunk_size_typed_as_asked(rows: str) -> None:
    types = {"amount": pa.float64(), "label": pa.dictionary(pa.int32(), pa.string())}
    with psycopg.connect(rows) as conn:
        frames = list(copy_out(conn, _select(), COLUMNS, types=types, chunk_rows=1_000))
        whole = read_frame(conn, _select(), COLUMNS, types=types, chunk_rows=1_000)
    assert [len(frame) for frame in frames] == [1_000, 1_000, 500]
    assert str(whole["amount"].dtype) == "float64" and whole["flag"].dtype == bool
    assert isinstance(whole["label"].dtype, pd.CategoricalDtype)  # one set of categories
    assert sorted(whole["label"].cat.categories) == ["a", "b", "c"]
    assert whole["amount"].sum() == pytest.approx(sum(n / 4 for n in range(1, 2_501)))
    assert whole["customer_id"].is_unique and len(whole) == 2_500
    pd.testing.assert_series_equal(pd.concat(frames, ignore_index=True)["amount"], whole["amount"])


def test_the_reader_of_nothing_gives_an_empty_frame_with_the_columns(rows: str) -> None:
    with psycopg.connect(rows) as conn:
        empty = read_frame(conn, _select("false"), COLUMNS, types={}, chunk_rows=100)
        assert list(copy_out(conn, _select("false"), COLUMNS, types={}, chunk_rows=100)) == []
    assert empty.empty and list(empty.columns) == COLUMNS


def test_the_writer_keeps_empty_strings_apart_from_missing_values(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("create table public.texts (n integer, note text)")
        copy_in(conn, "public.texts", pd.DataFrame({"n": [1, 2, 3], "note": ["", None, "x"]}))
        stored = conn.execute("select n, note from public.texts order by n").fetchall()
    assert stored == [(1, ""), (2, None), (3, "x")]


def test_a_partition_is_replaced_whole_or_not_at_all(rows: str) -> None:
    frame = pd.DataFrame(
        {"snapshot_date": [DAY], "customer_id": ["9999-ZZZZZ"], "label": ["z"], "amount": [1.0]}
    )
    with (
        pytest.raises(RuntimeError, match="before the commit"),
        partition_transaction(rows, TABLE, DAY) as conn,
    ):
        delete_partition(conn, TABLE, DAY)
        copy_in(conn, TABLE, frame)
        raise RuntimeError("a failure before the commit")
    with psycopg.connect(rows) as conn:
        assert conn.execute(f"select count(*) from {TABLE}").fetchone() == (2_500,)
    with partition_transaction(rows, TABLE, DAY) as conn:
        delete_partition(conn, TABLE, DAY)
        copy_in(conn, TABLE, frame)
    with psycopg.connect(rows) as conn:
        assert conn.execute(f"select customer_id from {TABLE}").fetchall() == [("9999-ZZZZZ",)]


def test_two_writers_of_one_partition_take_turns(rows: str) -> None:
    order: list[str] = []

    def write(name: str, hold_s: float) -> None:
        with partition_transaction(rows, TABLE, DAY):
            order.append(f"{name} in")
            time.sleep(hold_s)
            order.append(f"{name} out")

    first = threading.Thread(target=write, args=("first", 0.5))
    first.start()
    time.sleep(0.1)
    write("second", 0)
    first.join()
    assert order == ["first in", "first out", "second in", "second out"]


def test_the_sample_keeps_the_same_customers_and_about_the_share_asked(rows: str) -> None:
    keep = stable_sample(sql.Identifier("customer_id"), rows=2_500, max_rows=500)
    query = sql.SQL("select customer_id from {table} where {keep} order by 1").format(
        table=sql.Identifier("public", "stream_rows"), keep=keep
    )
    with psycopg.connect(rows) as conn:
        first = conn.execute(query).fetchall()
        again = conn.execute(query).fetchall()
    assert first == again
    assert 400 <= len(first) <= 600
    no_sampling = stable_sample(sql.Identifier("customer_id"), rows=400, max_rows=500)
    assert no_sampling.as_string(None) == "true"
