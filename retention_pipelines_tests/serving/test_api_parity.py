"""The API and the nightly scorer agree: a Telco customer sent as its landing-file record gets
the probability the nightly job wrote for it (features from dbt, scored in chunks), and where
the nightly job explained a customer exactly, the same three reasons."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from retention_pipelines.core import registry, scoring
from retention_pipelines.core import training as tr
from retention_pipelines.core.explain import feature_of
from retention_pipelines_tests.churn_models import blended_xgboost
from retention_pipelines_tests.helpers import TELCO_DAY
from retention_pipelines_tests.serving import api

pytestmark = pytest.mark.slow
DAY = date.fromisoformat(TELCO_DAY)
SEED = 5
BATCH, SINGLES = 200, 20
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def telco_platform(
    telco_warehouse: str, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[api.ServingPlatform]:
    home = tmp_path_factory.mktemp("parity-home")
    with api.serving_platform(telco_warehouse, server_url, home) as platform:
        yield platform


@pytest.fixture(scope="module")
def champion(telco_platform: api.ServingPlatform, telco_features: pd.DataFrame) -> str:
    """A blended, calibrated XGBoost model trained on the Telco features, promoted."""
    split = tr.split_training_set(telco_features, seed=SEED)
    version = api.register_model(telco_platform, blended_xgboost(split, seed=SEED, max_depth=4))
    api.promote(telco_platform, version)
    return version


@pytest.fixture(scope="module")
def nightly(telco_platform: api.ServingPlatform, champion: str) -> dict[str, dict[str, Any]]:
    """The nightly scores of the Telco snapshot by the champion, as loaded from the registry,
    every high-band customer explained exactly; by customer id."""
    settings = telco_platform.settings
    model, version = registry.load_champion(telco_platform.client)
    scoring.score_partition(
        telco_platform.url,
        DAY,
        scoring.ModelRef(model=model, name=registry.MODEL_NAME, version=version),
        bands=scoring.RiskBands(settings.risk_high_threshold, settings.risk_medium_threshold),
        chunk_rows=2_000,
        scored_at=datetime(2026, 1, 16, 2, 0, tzinfo=UTC),
        exact_gap=float("inf"),
    )
    with psycopg.connect(telco_platform.url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select * from ml.churn_risk_scores where snapshot_date = %s", (DAY,)
        ).fetchall()
    return {row["customer_id"]: row for row in rows}


def _landing_records(csv_path: Path, count: int) -> list[dict[str, str]]:
    """The first ``count`` customers of the landing file, as a client would send them."""
    with csv_path.open(newline="") as handle:
        rows = itertools.islice(csv.DictReader(handle), count)
        return [{name: value for name, value in row.items() if name != "Churn"} for row in rows]


def test_the_api_answers_telco_customers_with_the_nightly_scorers_probability_and_reasons(
    telco_platform: api.ServingPlatform,
    telco_csv: Path,
    champion: str,
    nightly: dict[str, dict[str, Any]],
) -> None:
    records = _landing_records(telco_csv, BATCH + SINGLES)
    key = api.create_key(telco_platform)
    # Batches are explained as the night explains a chunk: here, every high-band row exactly.
    settings = telco_platform.api_settings(scoring_exact_gap=float("inf"))
    with api.api_client(settings) as client:
        batch = client.post(
            "/v1/predict/batch", json={"customers": records[:BATCH]}, headers=key.headers
        )
        singles = [
            client.post("/v1/predict", json=record, headers=key.headers)
            for record in records[BATCH:]
        ]

    assert batch.status_code == 200 and batch.json()["errors"] == []
    assert all(single.status_code == 200 for single in singles)
    answers = batch.json()["predictions"] + [single.json() for single in singles]
    assert [a["customer_id"] for a in answers] == [r["customerID"] for r in records]
    exact = 0
    for answer in answers:
        stored = nightly[answer["customer_id"]]
        assert answer["model_version"] == stored["model_version"] == champion
        assert abs(answer["churn_probability"] - stored["churn_probability"]) <= TOLERANCE
        assert answer["risk_band"] == stored["risk_band"]
        if stored["risk_band"] != "high":  # explained exactly by the nightly scorer only here
            continue
        exact += 1
        assert [r["reason"] for r in answer["reasons"]] == [
            stored[f"top_reason_{rank}"] for rank in (1, 2, 3)
        ]
        assert [r["feature"] for r in answer["reasons"]] == [
            feature_of(stored[f"top_reason_{rank}"]) for rank in (1, 2, 3)
        ]
        for rank, reason in enumerate(answer["reasons"], start=1):
            assert abs(reason["contribution"] - stored[f"top_reason_{rank}_contribution"]) <= (
                TOLERANCE
            )
    assert exact >= 20  # enough high-risk customers for the reasons to have been compared
