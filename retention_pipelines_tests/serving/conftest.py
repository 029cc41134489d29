"""Fixtures of the API's tests: one warehouse for the session (the dbt-built score history is
its slowest part, built once, only when a test reads stored scores) and, per module, the
platform's settings on it with an MLflow store of the module's own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest

from retention_pipelines.core import database
from retention_pipelines.core.explain import describe
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.helpers import throwaway_database
from retention_pipelines_tests.serving import api


@pytest.fixture(scope="session")
def serving_database_url(server_url: str) -> Iterator[str]:
    """A migrated warehouse the API's test modules share (keys and log rows are told apart
    by their own names and request ids)."""
    with throwaway_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def platform(
    serving_database_url: str, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[api.ServingPlatform]:
    """The platform's settings on the shared warehouse, with this module's own (empty) MLflow
    store and artefact folder."""
    home = tmp_path_factory.mktemp("serving-home")
    with api.serving_platform(serving_database_url, server_url, home) as serving:
        yield serving


@dataclass(frozen=True)
class NightlyScore:
    customer_id: str
    snapshot_date: date
    churn_probability: float
    risk_band: str
    reasons: tuple[tuple[str, float], ...]  # text, contribution
    model_version: str


SCORED_AT = datetime(2026, 1, 16, 2, 0, tzinfo=UTC)
NIGHTLY_SCORES = (
    NightlyScore(
        "7590-VHVEG", date(2026, 1, 14), 0.31, "medium",
        ((describe("contract", "Month-to-month"), 0.41), (describe("tenure_months", 3), 0.2),
         (describe("has_partner", False), 0.05)),
        "1",
    ),
    NightlyScore(
        "7590-VHVEG", date(2026, 1, 15), 0.83, "high",
        ((describe("payment_method", "Electronic check"), 0.62),
         (describe("contract", "Month-to-month"), 0.48), (describe("tenure_months", 1), 0.31)),
        "2",
    ),
    NightlyScore(
        "5575-GNVDE", date(2026, 1, 14), 0.04, "low",
        ((describe("has_dependents", True), 0.02), (describe("gender", "Male"), 0.01),
         (describe("monthly_charges", 56.95), -0.1)),
        "1",
    ),
)  # fmt: skip


@pytest.fixture(scope="session")
def nightly_scores(
    serving_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[NightlyScore, ...]:
    """Two nights of scores in ``ml.churn_risk_scores`` and ``analytics.customer_score_history``
    built over them by the real dbt project, granted to the reader role."""
    database.ensure_reader_role(serving_database_url, database.reader_role_of(get_settings()))
    with psycopg.connect(serving_database_url) as conn:
        for score in NIGHTLY_SCORES:
            reasons = [value for reason in score.reasons for value in reason]
            conn.execute(
                "insert into ml.churn_risk_scores values"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'churn-model', %s, %s)",
                (score.snapshot_date, score.customer_id, score.churn_probability,
                 score.risk_band, *reasons, score.model_version, SCORED_AT),
            )  # fmt: skip
    api.build_score_history(serving_database_url, Path(tmp_path_factory.mktemp("dbt")))
    return NIGHTLY_SCORES
