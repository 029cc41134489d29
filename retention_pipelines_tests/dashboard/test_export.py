"""The call list's CSV export route, in process (Starlette's test client over the route the
server mounts) on the scored warehouse: every filtered row, streamed, and a 400 that says why
for a bad filter."""

import csv
import io
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from retention_pipelines.dashboard import export, queries
from retention_pipelines.dashboard.connection import reader_connection
from retention_pipelines.dashboard.presentation import NO_SCORES, export_href
from retention_pipelines.dashboard.queries import CallListFilter
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.dashboard.warehouse import LATEST_DAY, ScoredWarehouse

pytestmark = pytest.mark.slow


@pytest.fixture
def client(on_scored: ScoredWarehouse) -> Iterator[TestClient]:
    with TestClient(Starlette(routes=export.ROUTES)) as test_client:
        yield test_client


def _count(filters: CallListFilter) -> int:
    with reader_connection(get_settings()) as conn:
        return queries.call_list_totals(conn, filters).customers


@pytest.mark.parametrize(
    "filters",
    [
        CallListFilter(),
        CallListFilter(bands=("high",), reason_contains="tenure"),
        CallListFilter(probability_min=0.3, probability_max=0.6, contracts=("One year",)),
        CallListFilter(reason_contains="%"),
    ],
    ids=["everyone", "high-tenure", "mid-one-year", "none"],
)
def test_the_csv_holds_exactly_the_filtered_rows(
    client: TestClient, filters: CallListFilter
) -> None:
    response = client.get(export_href(filters))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.split("\n", 1)[0] == ",".join(queries.EXPORT_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == _count(filters)
    assert all(row["snapshot_date"] == str(LATEST_DAY) for row in rows)
    assert [int(row["risk_rank"]) for row in rows] == sorted(int(row["risk_rank"]) for row in rows)


def test_an_empty_selection_still_has_its_header(client: TestClient) -> None:
    response = client.get(export_href(CallListFilter(reason_contains="no reason says this")))
    assert response.text.splitlines() == [",".join(queries.EXPORT_COLUMNS)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"band": "purple"}, "unknown risk band 'purple'"),
        ({"p_min": "lots"}, "p_min must be a number"),
        ({"tenure_min": "9", "tenure_max": "3"}, "lowest first"),
        ({"sort": "customer_id"}, "unknown filter 'sort'"),
    ],
)
def test_a_bad_filter_is_answered_400_with_the_reason(
    client: TestClient, query: dict[str, str], message: str
) -> None:
    response = client.get(f"/export/call-list.csv?{urlencode(query)}")
    assert response.status_code == 400
    assert message in response.text


def test_the_export_streams_in_bounded_chunks(on_scored: ScoredWarehouse) -> None:
    with reader_connection(get_settings()) as conn:
        chunks = list(queries.stream_call_list_csv(conn, CallListFilter(), chunk_bytes=16_384))
    assert len(chunks) > 10
    # A chunk is cut after the row that fills it: never much more than the chunk size.
    assert max(len(chunk) for chunk in chunks) < 16_384 + 1_024


def test_before_the_first_scores_the_export_says_what_to_run(on_empty: str) -> None:
    with TestClient(Starlette(routes=export.ROUTES)) as test_client:
        response = test_client.get("/export/call-list.csv")
    assert (response.status_code, response.text.strip()) == (404, NO_SCORES)
