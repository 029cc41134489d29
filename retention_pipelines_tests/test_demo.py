"""What ``make demo`` does before serving the UI, on a throwaway database and folder."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from rich.console import Console

from retention_pipelines.core import database
from retention_pipelines.demo import run_demo
from retention_pipelines.settings import get_settings

pytestmark = [pytest.mark.slow, pytest.mark.embedded]


@pytest.fixture
def demo_settings(
    database_url: str, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    dagster_database = f"retention_test_dagster_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RETENTION_DATABASE_URL", database_url)
    monkeypatch.setenv("RETENTION_HOME_DIR", str(tmp_path))
    monkeypatch.setenv("RETENTION_DAGSTER_DATABASE", dagster_database)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()
        database.drop_database(server_url, dagster_database)


@pytest.mark.usefixtures("demo_settings")
def test_the_demo_builds_today_once_and_reuses_it_the_second_time(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    first = run_demo(get_settings(), customers=300, console=console)
    assert first.generated and first.built_now
    assert (first.rows_read, first.rows_valid, first.feature_rows) == (300, 300, 300)
    assert first.landing_file.parent == tmp_path / "landing"

    instance = dg.DagsterInstance.from_config(str(first.dagster_home))
    run = instance.get_run_by_id(first.run_id or "")
    assert run is not None and run.is_success
    assert run.tags["dagster/partition"] == first.snapshot_date.isoformat()

    second = run_demo(get_settings(), customers=300, console=console)
    assert not second.generated and not second.built_now
    assert second.feature_rows == 300
