"""What the API's tests share: the platform's settings pointed at a throwaway warehouse and
MLflow store, churn models registered and promoted there as training would, API keys, and the
app itself behind a TestClient, with settings that make its pollers quick enough to wait for."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.core import api_keys, database, registry
from retention_pipelines.serving.app import create_app
from retention_pipelines.serving.schemas import _EXAMPLE
from retention_pipelines.settings import RetentionSettings, get_settings
from retention_pipelines_tests.churn_models import log_churn_model
from retention_pipelines_tests.helpers import platform_settings

T = TypeVar("T")

# Pollers quick enough that a test waits a second for a promotion, a revocation or the log,
# never a production interval.
FAST_SERVING = {"api_model_poll_s": 0.3, "api_key_refresh_s": 0.3, "api_log_flush_s": 0.2}
EXAMPLE_CUSTOMER: Mapping[str, Any] = _EXAMPLE


@dataclass(frozen=True)
class ServingPlatform:
    """The settings, warehouse and MLflow store one module's API answers from."""

    settings: RetentionSettings
    url: str  # the warehouse, as the platform's own login
    tracking_uri: str
    artifacts: Path  # where registered models' files go: a tmp folder, never the project

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def api_settings(self, **overrides: Any) -> RetentionSettings:
        """The platform's settings with quick pollers and ``overrides`` (``api_*`` fields)."""
        return self.settings.model_copy(update={**FAST_SERVING, **overrides})


@contextmanager
def serving_platform(
    database_url: str, server_url: str, home: Path, env: dict[str, str] | None = None
) -> Iterator[ServingPlatform]:
    """The platform's settings on ``database_url`` with a throwaway MLflow store (dropped on
    exit), the warehouse migrated and its reader login ready, as ``retention serve`` finds
    them."""
    with platform_settings(database_url, server_url, home, env):
        settings = get_settings()
        url = database.settings_database_url(settings)
        tracking_uri = registry.mlflow_tracking_uri(url, settings.mlflow_database)
        artifacts = home / "mlflow-artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        yield ServingPlatform(settings, url, tracking_uri, artifacts)


@contextmanager
def store_of_its_own(platform: ServingPlatform) -> Iterator[ServingPlatform]:
    """``platform`` with a fresh, empty MLflow store (dropped on exit): for tests that need a
    registry without a champion, or that break its champion."""
    name = f"retention_test_mlflow_{uuid.uuid4().hex[:8]}"
    tracking_uri = registry.mlflow_tracking_uri(platform.url, name)
    artifacts = platform.artifacts.parent / name
    artifacts.mkdir()
    try:
        yield ServingPlatform(
            platform.settings.model_copy(update={"mlflow_database": name}),
            platform.url,
            tracking_uri,
            artifacts,
        )
    finally:
        database.drop_database(platform.url, name)


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """The process-wide tracking URI set to ``uri`` (logging a model goes through it)."""
    import mlflow  # noqa: PLC0415

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _experiment_id(platform: ServingPlatform) -> str:
    """An experiment of the tests' own whose artefacts land in the platform's tmp folder."""
    name = "serving-tests"
    client = platform.client
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=platform.artifacts.as_uri()))


def register_model(platform: ServingPlatform, model: ChurnModel) -> str:
    """Log ``model`` in a run and register it as a new version (``@challenger``), as a
    training run does; return the version."""
    import mlflow  # noqa: PLC0415

    with _tracking(platform.tracking_uri):
        with mlflow.start_run(experiment_id=_experiment_id(platform)) as run:
            model_uri = log_churn_model(model)
        return registry.register_challenger(
            platform.client, model_uri=model_uri, run_id=run.info.run_id, tags={}
        )


def register_unloadable_version(platform: ServingPlatform) -> str:
    """A registered version whose source holds no model: loading it fails."""
    client = platform.client
    run = client.create_run(_experiment_id(platform), run_name="no-model-logged")
    client.set_terminated(run.info.run_id)
    created = client.create_model_version(
        registry.MODEL_NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return str(created.version)


def promote(platform: ServingPlatform, version: str) -> None:
    registry.promote(platform.client, version, reason="promoted by a serving test", actor="pytest")


@dataclass(frozen=True)
class IssuedKey:
    """A key as its holder has it (``raw``) and as ``ops.api_keys`` knows it."""

    raw: str
    key_id: int
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw}"}


def create_key(platform: ServingPlatform, scopes: tuple[str, ...] = ("predict",)) -> IssuedKey:
    """A new API key with ``scopes``, under a name of its own."""
    name = f"test-{'-'.join(scopes)}-{uuid.uuid4().hex[:8]}"
    raw_key, key = api_keys.create_key(platform.url, name, scopes, actor="pytest")
    return IssuedKey(raw_key, key.key_id, name)


def refresh_keys(client: TestClient) -> None:
    """Have the app re-read the API keys now, as its poller does every
    ``api_key_refresh_s``: a key created a moment ago is then known."""
    client.app.state.serving.keys.refresh()  # type: ignore[attr-defined]


@contextmanager
def api_client(settings: RetentionSettings) -> Iterator[TestClient]:
    """The app of ``settings`` with its lifespan running (champion loaded, pollers and the
    prediction-log writer started), stopped on exit."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def build_score_history(url: str, target_path: Path) -> None:
    """``analytics.customer_score_history`` built over ``ml.churn_risk_scores`` by the real
    dbt project and granted to the reader role, as the nightly job leaves it."""
    import subprocess  # noqa: PLC0415

    from retention_pipelines.resources import WarehouseResource, dbt_executable  # noqa: PLC0415

    project = get_settings().dbt_project_dir
    with WarehouseResource(database_url=url).dbt_environment():
        subprocess.run(
            [dbt_executable(), "run", "--quiet", "--select", "customer_score_history",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--target-path", str(target_path)],
            check=True,
        )  # fmt: skip


def customer(customer_id: str, **changes: Any) -> dict[str, Any]:
    """The example customer under another id, with ``changes``."""
    return {**EXAMPLE_CUSTOMER, "customerID": customer_id, **changes}


def wait_for(
    probe: Callable[[], T | None], *, timeout_s: float = 5.0, interval_s: float = 0.05
) -> T:
    """``probe``'s first truthy answer, polling for ``timeout_s`` at most."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"still {answer!r} after {timeout_s:g} s")
        time.sleep(interval_s)


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The exposition text's samples by sample name (``*_bucket``, ``*_total``, ...), with
    their labels and values."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        value
        for found, value in metric_samples(text).get(name, [])
        if labels.items() <= found.items()
    )
