"""What ``make demo`` does before serving the UI, on a throwaway database and folder."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.demo import run_demo
from retention_pipelines.local_runs import RunProgress
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import platform_settings

pytestmark = [pytest.mark.slow, pytest.mark.embedded]


@pytest.fixture
def demo_home(database_url: str, server_url: str, tmp_path: Path) -> Iterator[Path]:
    with platform_settings(database_url, server_url, tmp_path):
        yield tmp_path


def test_the_demo_builds_today_once_and_reuses_it_the_second_time(demo_home: Path) -> None:
    seen: list[RunProgress] = []
    log = demo_home / "logs" / "demo.log"
    first = run_demo(get_settings(), customers=300, on_progress=seen.append, log_path=log)
    assert first.generated and first.run_id is not None
    assert (first.counts.rows_read, first.counts.rows_valid, first.feature_rows) == (300, 300, 300)
    assert first.landing_file.parent == demo_home / "landing"
    assert seen[-1].steps_done == seen[-1].steps_total  # progress came from the run's events
    assert "STEP_SUCCESS" in log.read_text()  # the Dagster log went to the file

    instance = dg.DagsterInstance.from_config(str(first.dagster_home))
    run = instance.get_run_by_id(first.run_id)
    assert run is not None and run.is_success
    assert run.tags["dagster/partition"] == first.snapshot_date.isoformat()

    second = run_demo(get_settings(), customers=300)
    assert not second.generated and second.run_id is None
    assert second.feature_rows == 300
