"""The call list's CSV export: ``GET /export/call-list.csv?<filters>``, a route served beside
the Streamlit app (``server.py``).

A plain HTTP route rather than a Streamlit download button: a button would build the whole
file in the server's memory on every rerun. Here one ``COPY ... TO STDOUT`` streams the
filtered call list straight into the response, a chunk at a time, however many rows it has.
The filters come from the query string through the same validation as the page's widgets
(``CallListFilter``); a bad one is answered 400 with the reason, and 404 says so before the
first scores.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import psycopg
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from retention_pipelines.dashboard.connection import reader_connection
from retention_pipelines.dashboard.presentation import EXPORT_PATH, NO_SCORES
from retention_pipelines.dashboard.queries import CallListFilter, stream_call_list_csv
from retention_pipelines.settings import get_settings


def export_call_list(request: Request) -> Response:
    """The filtered call list as CSV with a header, streamed. A plain function: Starlette
    runs it, and the stream's reads, in its thread pool, off the event loop."""
    try:
        filters = CallListFilter.from_query_params(request.query_params.multi_items())
    except ValueError as error:
        return PlainTextResponse(f"bad filter: {error}\n", status_code=400)
    conn = reader_connection(get_settings())
    chunks = stream_call_list_csv(conn, filters)
    try:
        # The COPY starts here: a failure is an error answer, not a truncated file.
        first = next(chunks, b"")
    except psycopg.errors.UndefinedTable:
        conn.close()  # before the first nightly build: no call list yet
        return PlainTextResponse(f"{NO_SCORES}\n", status_code=404)
    except BaseException:
        conn.close()
        raise
    return StreamingResponse(
        _then_close(first, chunks, conn),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="call-list.csv"',
            "Cache-Control": "no-store",
        },
    )


def _then_close(
    first: bytes, chunks: Generator[bytes, None, None], conn: psycopg.Connection
) -> Iterator[bytes]:
    """The stream's chunks; its connection is closed at the end or when the client leaves
    (the COPY still running is cancelled with it)."""
    try:
        yield first
        yield from chunks
    finally:
        chunks.close()
        conn.close()


ROUTES = [Route(EXPORT_PATH, export_call_list, methods=["GET"])]
