"""The pages' data: the queries of ``queries.py`` on pooled reader connections, their answers
cached for ``RETENTION_DASHBOARD_CACHE_TTL_S`` seconds.

A rerun (every click) asks again and gets the cached answer, so a person paging back and forth
costs Postgres one query per distinct page per TTL. The cache key holds the reader URL: two
warehouses served by one process (the tests do this) never share answers. The TTL is read
when this module is first imported, as Streamlit's cache takes it when a function is wrapped.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import streamlit as st
from psycopg_pool import ConnectionPool

from retention_pipelines.dashboard import queries
from retention_pipelines.dashboard.connection import reader_pool, reader_url
from retention_pipelines.dashboard.queries import (
    CallListFilter,
    CallListTotals,
    CustomerRisk,
    LatestScores,
)
from retention_pipelines.settings import get_settings

# How many past dates the model health page shows.
HEALTH_DAYS = 60


@st.cache_resource(show_spinner=False)
def _reader_url(database_url: str | None, pgdata: str, login: str, password: str) -> str:
    """The reader URL, once per configuration (keyed on every setting it depends on): the
    embedded server's lookup reads its pid file under a file lock, not a thing to repeat on
    every click."""
    return reader_url(get_settings())


def current_reader_url() -> str:
    settings = get_settings()
    return _reader_url(
        settings.database_url,
        str(settings.embedded_pgdata),
        settings.reader_login,
        settings.reader_password.get_secret_value(),
    )


def _close(pool: ConnectionPool) -> None:
    pool.close()


@st.cache_resource(show_spinner=False, on_release=_close)
def _pool(url: str) -> ConnectionPool:
    """One pool per warehouse for the process's sessions; closed when the cache drops it."""
    return reader_pool(url)


def close_pools() -> None:
    """Close every pool this process holds (and forget the cached answers)."""
    _pool.clear()
    _answer.clear()


@st.cache_data(ttl=get_settings().dashboard_cache_ttl_s, show_spinner=False)
def _answer(query_name: str, url: str, *args: Any) -> Any:
    """One query's answer, cached per query, warehouse and arguments."""
    query = getattr(queries, query_name)
    with _pool(url).connection() as conn:
        return query(conn, *args)


def _ask(query_name: str, *args: Any) -> Any:
    return _answer(query_name, current_reader_url(), *args)


def page_size() -> int:
    return get_settings().dashboard_page_size


# --- the call list


def latest_scores() -> LatestScores | None:
    return _ask("latest_scores")


def call_list_totals(filters: CallListFilter) -> CallListTotals:
    return _ask("call_list_totals", filters)


def call_list_page(filters: CallListFilter, page: int) -> pd.DataFrame:
    return _ask("call_list_page", filters, page, page_size())


# --- one customer


def customer_risk(customer_id: str) -> CustomerRisk | None:
    return _ask("customer_risk", customer_id)


def customer_history(customer_id: str) -> pd.DataFrame:
    return _ask("customer_history", customer_id)


# --- trends


def scored_date_range() -> tuple[date, date] | None:
    return _ask("scored_date_range")


def band_counts_by_date(start: date, end: date) -> pd.DataFrame:
    return _ask("band_counts_by_date", start, end)


def mean_probability_by_date(start: date, end: date) -> pd.DataFrame:
    return _ask("mean_probability_by_date", start, end)


def top_first_reasons(start: date, end: date) -> pd.DataFrame:
    return _ask("top_first_reasons", start, end)


# --- model health


def champion() -> dict[str, Any] | None:
    return _ask("champion")


def realised_performance() -> pd.DataFrame:
    return _ask("realised_performance", HEALTH_DAYS)


def latest_performance() -> dict[str, Any] | None:
    return _ask("latest_performance")


def drift_by_date() -> pd.DataFrame:
    return _ask("drift_by_date", HEALTH_DAYS)


def drift_on(snapshot_date: date) -> dict[str, Any] | None:
    return _ask("drift_on", snapshot_date)


def quality_by_date() -> pd.DataFrame:
    return _ask("quality_by_date", HEALTH_DAYS)


def performance_auc_drop() -> float:
    return get_settings().performance_auc_drop
