"""Shared fixtures: a real Postgres (the configured server or a throwaway embedded one) and a
fresh database per test module, migrated like production."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from retention_pipelines_tests.helpers import (
    TELCO_CSV,
    TELCO_DAY,
    build_snapshot,
    throwaway_database,
)

_TEST_HOME = Path(tempfile.mkdtemp(prefix="retention-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' embedded server and files out of the project's own ``.retention/``."""
    os.environ.setdefault("RETENTION_HOME_DIR", str(_TEST_HOME))
    # Pseudonyms are keyed; a server (RETENTION_DATABASE_URL) requires the key to be set.
    os.environ.setdefault("RETENTION_PSEUDONYM_KEY", "retention-tests-pseudonym-key")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker (CI runs ``-n 2 --dist loadfile``: each module whole on one
    worker, its fixtures built once and its tests in order), the end-to-end modules come first,
    then the others holding slow tests, so the scheduler hands out the longest ones before the
    quick ones."""
    if not hasattr(config, "workerinput"):  # set on xdist's workers only
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def cost(module: list[pytest.Item]) -> tuple[bool, bool]:
        """End-to-end modules (minutes each) first, then the other slow ones."""
        slow = any(item.get_closest_marker("slow") for item in module)
        return (not slow, "/end_to_end/" not in module[0].nodeid)

    items[:] = [item for module in sorted(modules.values(), key=cost) for item in module]


def pytest_unconfigure(config: pytest.Config) -> None:
    from retention_pipelines.core.database import stop_embedded_server  # noqa: PLC0415

    stop_embedded_server(_TEST_HOME / "pgdata")
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The server the suite runs on: RETENTION_DATABASE_URL, or the embedded default."""
    from retention_pipelines.core import database  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    return database.resolve_database_url(settings.database_url, settings.embedded_pgdata)


def _fresh_database(server_url: str) -> Iterator[str]:
    with throwaway_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(server_url: str) -> Iterator[str]:
    """A migrated database shared by the tests of one module."""
    yield from _fresh_database(server_url)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    yield from _fresh_database(server_url)


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    if not TELCO_CSV.exists():
        pytest.fail(f"the Telco data is expected at {TELCO_CSV}")
    return TELCO_CSV


@pytest.fixture(scope="module")
def mlflow_uri(server_url: str) -> Iterator[str]:
    """A throwaway MLflow store on the test server, set as this process's tracking URI."""
    import mlflow  # noqa: PLC0415

    from retention_pipelines.core import database, registry  # noqa: PLC0415

    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    previous = mlflow.get_tracking_uri()
    uri = registry.mlflow_tracking_uri(server_url, name)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)
        database.drop_database(server_url, name)


@pytest.fixture(scope="module")
def telco_warehouse(module_database_url: str, telco_csv: Path, tmp_path_factory) -> str:
    """This module's database holding the Telco snapshot of ``TELCO_DAY``, ingested and turned
    into features by the real dbt project."""
    build_snapshot(module_database_url, telco_csv, TELCO_DAY, tmp_path_factory.mktemp("dbt"))
    return module_database_url


@pytest.fixture(scope="module")
def telco_features(telco_warehouse: str) -> pd.DataFrame:
    """The Telco snapshot's rows of ``features.customer_features``, in customer id order."""
    with psycopg.connect(telco_warehouse) as conn:
        cursor = conn.execute("select * from features.customer_features order by customer_id")
        return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
