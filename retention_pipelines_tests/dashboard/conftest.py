"""Fixtures of the dashboard's tests: one scored warehouse for the whole folder (two dbt
feature builds and the analytics build make it the slow part, so it is built once), an empty
one, and the platform's settings pointed at either, as the app reads them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from retention_pipelines.core import database
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.dashboard.warehouse import ScoredWarehouse, build_scored_warehouse
from retention_pipelines_tests.helpers import throwaway_database


@contextmanager
def _throwaway_database(server_url: str) -> Iterator[str]:
    with throwaway_database(server_url) as url:
        try:
            yield url
        finally:
            _close_app_pools()


def _close_app_pools() -> None:
    """The app's pools reconnect in the background: closed before their database goes."""
    from retention_pipelines.dashboard import data  # noqa: PLC0415

    data.close_pools()


@pytest.fixture(scope="package")
def scored_warehouse(
    server_url: str, telco_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoredWarehouse]:
    """A warehouse with scores, monitoring and model versions, its analytics models built by
    dbt and the reader role granted (see ``warehouse.py``)."""
    with _throwaway_database(server_url) as url:
        yield build_scored_warehouse(url, telco_csv, tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="package")
def empty_warehouse(server_url: str) -> Iterator[str]:
    """A migrated warehouse with its reader role and nothing else: before the first night."""
    with _throwaway_database(server_url) as url:
        database.ensure_reader_role(url, database.reader_role_of(get_settings()))
        yield url


@contextmanager
def dashboard_settings(url: str) -> Iterator[None]:
    """The platform's settings pointed at the warehouse ``url`` (the owner's: the app swaps
    in the reader login itself), as the app and the export route read them."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RETENTION_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        yield
    finally:
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture
def on_scored(scored_warehouse: ScoredWarehouse) -> Iterator[ScoredWarehouse]:
    with dashboard_settings(scored_warehouse.url):
        yield scored_warehouse


@pytest.fixture
def on_empty(empty_warehouse: str) -> Iterator[str]:
    with dashboard_settings(empty_warehouse):
        yield empty_warehouse
