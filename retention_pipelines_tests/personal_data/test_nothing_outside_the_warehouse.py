"""After a full run on the real Telco data (ingest, features, train, score, drift, realised
performance) no customer id is anywhere outside the warehouse: in no file the platform wrote
(reports, Data Docs, MLflow's artefacts, the Dagster home with its compute logs and stored
step outputs), in no Dagster event, and in nothing MLflow holds. The highest-risk customers
are named by pseudonyms that ``retention lookup`` maps back.

The Telco file is landed on two dates, the second with a few broken rows (rejects with their
reasons) so that the realised performance judges the first date's scores. The runs go through
the local Dagster instance the command line uses (Postgres storage, compute logs as files),
with the code location's IO manager: step outputs as files under the instance's storage.
"""

import csv
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core import registry
from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.core.pseudonyms import DISPLAY_CHARS, display, pseudonym_key
from retention_pipelines.definitions import load_definitions
from retention_pipelines.local_runs import local_instance
from retention_pipelines.settings import RetentionSettings, get_settings
from retention_pipelines_tests.helpers import TINY_TRAINING, platform_settings
from retention_pipelines_tests.personal_data.search import (
    ids_in_dagster,
    ids_in_files,
    ids_in_mlflow,
)

pytestmark = pytest.mark.slow
FIRST, SECOND = date(2026, 3, 2), date(2026, 3, 3)
# Rows of the second date's file broken on purpose (customer positions in the file).
BAD_TENURE, BAD_CONTRACT, CONFLICTING = 10, 20, 30


@dataclass(frozen=True)
class FullRun:
    home: Path
    settings: RetentionSettings
    instance: dg.DagsterInstance
    mlflow: MlflowClient
    url: str

    def excluded(self) -> list[Path]:
        """What holds ids by purpose: the embedded server's data, the landing files (the
        input) and the CRM folder (the hand-off to the retention team)."""
        return [
            self.settings.embedded_pgdata,
            self.settings.resolved_landing_dir,
            self.settings.crm_dir,
        ]


@pytest.fixture(scope="module")
def customer_ids(telco_csv: Path) -> set[str]:
    """Every customer id of the input."""
    return set(pd.read_csv(telco_csv, usecols=["customerID"], dtype=str)["customerID"])


def _land(telco_csv: Path, landing: Path) -> None:
    """The Telco file as the first date's landing file, and again, with a value that is not a
    number, a contract that does not exist and a conflicting duplicate, as the second's."""
    landing.mkdir(parents=True, exist_ok=True)
    (landing / landing_file_name(FIRST)).write_bytes(telco_csv.read_bytes())
    with telco_csv.open(newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    rows[BAD_TENURE]["tenure"] = "about a year"
    rows[BAD_CONTRACT]["Contract"] = "Weekly"
    rows.append({**rows[CONFLICTING], "MonthlyCharges": "1.00"})
    with (landing / landing_file_name(SECOND)).open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, **kwargs: object) -> None:
    """A job run in this process on the local instance, with the code location's resources:
    its step outputs stored as files under the instance's storage folder, as in production."""
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )
    assert result.success, [event.message for event in result.all_events if event.is_failure]


@pytest.fixture(scope="module")
def full_run(
    module_database_url: str,
    server_url: str,
    telco_csv: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FullRun]:
    home = tmp_path_factory.mktemp("home")
    with platform_settings(module_database_url, server_url, home):
        settings = get_settings()
        _land(telco_csv, settings.resolved_landing_dir)
        instance = local_instance(settings)
        try:
            defs = load_definitions()
            _run(defs, instance, "daily_snapshot_job", partition_key=FIRST.isoformat())
            _run(defs, instance, "retrain_job", run_config=TINY_TRAINING)
            # The first night's snapshot is built already: its scores and what follows them.
            after_features = dg.AssetSelection.assets("churn_risk_scores").downstream()
            _run(
                defs,
                instance,
                "nightly_scoring_job",
                partition_key=FIRST.isoformat(),
                asset_selection=list(after_features.resolve(defs.resolve_asset_graph())),
            )
            _run(defs, instance, "nightly_scoring_job", partition_key=SECOND.isoformat())
            tracking = registry.mlflow_tracking_uri(module_database_url, settings.mlflow_database)
            yield FullRun(home, settings, instance, MlflowClient(tracking), module_database_url)
        finally:
            instance.dispose()


def test_the_run_left_what_is_searched(full_run: FullRun) -> None:
    """The searches below look at something: every stage ran and wrote its files."""
    with psycopg.connect(full_run.url) as conn:
        scored = dict(
            conn.execute(
                "select snapshot_date, count(*) from ml.churn_risk_scores group by 1"
            ).fetchall()
        )
        rejected = conn.execute(
            "select count(*) from raw.customer_rejects where snapshot_date = %s", (SECOND,)
        ).fetchone()
        judged = conn.execute("select count(*) from monitoring.model_performance").fetchone()
    assert set(scored) == {FIRST, SECOND}
    assert rejected is not None and rejected[0] == 4  # two broken rows, both conflicting ones
    assert judged is not None and judged[0] >= 1
    reports = full_run.settings.resolved_reports_dir
    assert list(reports.rglob("*.html"))  # drift reports and Data Docs
    assert list((full_run.home / "mlartifacts").rglob("model_card.md"))
    storage = Path(full_run.instance.storage_directory())
    assert list(storage.rglob("compute_logs/*")) or list(storage.rglob("*.out"))
    # The step outputs, stored as files: the training split as a reference to its rows.
    assert (storage / "training_set").read_text(encoding="utf-8").startswith('{"kind"')


def test_no_file_outside_the_warehouse_holds_a_customer_id(
    full_run: FullRun, customer_ids: set[str]
) -> None:
    search = ids_in_files(full_run.home, customer_ids, excluded=full_run.excluded())
    assert search.found == {}
    searched = "\n".join(search.searched)
    for written in ("reports/drift/", "reports/data_docs/", "mlartifacts/", "/compute_logs/"):
        assert written in searched, written


def test_no_dagster_event_holds_a_customer_id(full_run: FullRun, customer_ids: set[str]) -> None:
    assert len(full_run.instance.get_runs()) == 4
    search = ids_in_dagster(full_run.instance, customer_ids)
    assert search.found == {}
    assert len(search.searched) > 100  # the runs' events, one by one


def test_nothing_mlflow_holds_has_a_customer_id(full_run: FullRun, customer_ids: set[str]) -> None:
    assert full_run.mlflow.search_model_versions(f"name = '{registry.MODEL_NAME}'")
    search = ids_in_mlflow(full_run.mlflow, customer_ids)
    assert search.found == {}
    searched = "\n".join(search.searched)
    for artefact in ("report/model_card.md", "input_example.json", "optuna/", "MLmodel"):
        assert artefact in searched, artefact
    assert f"{registry.MODEL_NAME} v1: " in searched  # the registered version's own files


def _highest_risk(instance: dg.DagsterInstance, day: date) -> list[dict[str, object]]:
    event = instance.get_latest_materialization_event(dg.AssetKey("churn_risk_scores"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.partition == day.isoformat()
    table = event.asset_materialization.metadata["highest_risk_customers"]
    return [dict(record.data) for record in table.value.records]


def test_the_highest_risk_customers_are_named_by_pseudonyms_that_lookup_maps_back(
    full_run: FullRun,
) -> None:
    preview = _highest_risk(full_run.instance, SECOND)
    with psycopg.connect(full_run.url) as conn:
        top = conn.execute(
            "select customer_id from ml.churn_risk_scores where snapshot_date = %s"
            " order by churn_probability desc, customer_id limit 1",
            (SECOND,),
        ).fetchone()
    assert top is not None
    first = preview[0]
    assert set(first) == {
        "pseudonym", "churn_probability", "risk_band", "top_reason_1", "top_reason_2",
        "top_reason_3",
    }  # fmt: skip
    key = pseudonym_key(full_run.settings)
    assert first["pseudonym"] == display(top[0], key)
    assert len(str(first["pseudonym"])) == DISPLAY_CHARS
    looked_up = CliRunner().invoke(app, ["lookup", str(first["pseudonym"])])
    assert looked_up.exit_code == 0, looked_up.output
    assert looked_up.output.split() == [top[0]]


def test_the_search_finds_an_id_planted_in_each_place(
    full_run: FullRun, customer_ids: set[str], tmp_path: Path
) -> None:
    """The searches can fail: an id put in a file, in an event's metadata and log line, and in
    an MLflow run's params and artefacts is found in each (and removed again)."""
    planted = min(customer_ids)
    note = full_run.home / "reports" / "planted.txt"
    note.write_text(f"a report naming {planted}\n", encoding="utf-8")

    @dg.asset(name=f"planted_{uuid.uuid4().hex[:8]}")
    def planted_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        context.log.info(f"scored {planted}")
        return dg.MaterializeResult(metadata={"customer": planted})

    run = dg.materialize([planted_asset], instance=full_run.instance)
    client = full_run.mlflow
    experiment = client.create_experiment(
        f"planted-{uuid.uuid4().hex[:8]}", artifact_location=tmp_path.as_uri()
    )
    mlflow_run = client.create_run(experiment)
    client.log_param(mlflow_run.info.run_id, "example", planted)
    client.log_text(mlflow_run.info.run_id, f"customer,{planted}\n", "example.csv")
    try:
        files = ids_in_files(full_run.home, customer_ids, excluded=full_run.excluded()).found
        events = ids_in_dagster(full_run.instance, customer_ids).found
        tracked = ids_in_mlflow(client, customer_ids).found
    finally:
        note.unlink()
        full_run.instance.delete_run(run.run_id)
        shutil.rmtree(Path(full_run.instance.storage_directory()) / run.run_id)
        client.delete_run(mlflow_run.info.run_id)
        client.delete_experiment(experiment)
    assert files.pop("reports/planted.txt") == {planted}
    # The asset's log line, in the run's compute log.
    assert files and all(f"/{run.run_id}/compute_logs/" in path for path in files)
    assert set().union(*files.values()) == {planted}
    assert events == {f"run {run.run_id} (__ephemeral_asset_job__)": {planted}}
    where = f"run {mlflow_run.info.run_id}"
    assert tracked == {where: {planted}, f"{where}: example.csv": {planted}}
