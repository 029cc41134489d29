"""The prediction API in process (TestClient) on real Postgres and a real MLflow registry:
what a client is answered, refused and charged, what the service logs and exposes, and how it
follows the registry's aliases."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from typer.testing import CliRunner

from retention_pipelines import cli
from retention_pipelines.core import api_keys, audit, erasure, registry
from retention_pipelines.core.explain import feature_of
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.churn_models import constant_churn_model
from retention_pipelines_tests.serving import api
from retention_pipelines_tests.serving.conftest import NightlyScore

CHAMPION_PROBABILITY = 0.7  # a high-band answer
CHALLENGER_PROBABILITY = 0.1  # a low-band one: which model answered shows in the number
MAX_BATCH = 10
MAX_BODY_BYTES = 20_000
# What an error body must never hold: a trace, the database driver's words, SQL.
INTERNALS = ("traceback", 'file "', "psycopg", "select ", "sqlalchemy")


@pytest.fixture(scope="module")
def versions(platform: api.ServingPlatform) -> dict[str, str]:
    """A champion and a challenger that predict different constants."""
    champion = api.register_model(platform, constant_churn_model(CHAMPION_PROBABILITY))
    api.promote(platform, champion)
    challenger = api.register_model(platform, constant_churn_model(CHALLENGER_PROBABILITY))
    return {"champion": champion, "challenger": challenger}


@pytest.fixture(scope="module")
def predict_key(platform: api.ServingPlatform) -> api.IssuedKey:
    return api.create_key(platform, ("predict",))


@pytest.fixture(scope="module")
def read_key(platform: api.ServingPlatform) -> api.IssuedKey:
    return api.create_key(platform, ("read",))


@pytest.fixture(scope="module")
def client(
    platform: api.ServingPlatform,
    versions: dict[str, str],
    predict_key: api.IssuedKey,
    read_key: api.IssuedKey,
) -> Iterator[TestClient]:
    """The API over the module's champion, started after its keys were made."""
    settings = platform.api_settings(api_max_batch=MAX_BATCH, api_max_body_bytes=MAX_BODY_BYTES)
    with api.api_client(settings) as test_client:
        yield test_client


def _predict(client: TestClient, key: api.IssuedKey, body: Any, **kwargs: Any) -> Any:
    return client.post("/v1/predict", json=body, headers=key.headers, **kwargs)


def _assert_no_internals(response: Any) -> None:
    body = response.text.lower()
    assert not [marker for marker in INTERNALS if marker in body], response.text


def _csp(response: Any) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    directives = [part.split() for part in policy.split(";") if part.strip()]
    return {name: values for name, *values in directives}


# --- answers ----------------------------------------------------------------------------------


def test_a_prediction_answers_probability_band_three_reasons_and_the_model_that_made_them(
    client: TestClient, predict_key: api.IssuedKey, versions: dict[str, str]
) -> None:
    response = _predict(client, predict_key, api.customer("7590-VHVEG"))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["customer_id"] == "7590-VHVEG"
    assert answer["churn_probability"] == pytest.approx(CHAMPION_PROBABILITY)
    assert answer["risk_band"] == "high"
    assert len(answer["reasons"]) == 3
    for reason in answer["reasons"]:
        assert set(reason) == {"feature", "reason", "contribution"}
        assert feature_of(reason["reason"]) == reason["feature"]
        assert isinstance(reason["contribution"], float)
    contributions = [reason["contribution"] for reason in answer["reasons"]]
    assert contributions == sorted(contributions, reverse=True)
    assert answer["model_name"] == "churn-model"
    assert answer["model_version"] == versions["champion"]
    assert answer["variant"] == "champion"
    assert uuid.UUID(answer["request_id"])
    assert response.headers["X-Model-Version"] == versions["champion"]
    assert response.headers["X-Request-ID"] == answer["request_id"]


def test_api_answers_are_never_stored_by_caches_and_carry_security_headers(
    client: TestClient, predict_key: api.IssuedKey
) -> None:
    for response in (
        _predict(client, predict_key, api.customer("7590-VHVEG")),
        client.post("/v1/predict", json=api.customer("7590-VHVEG")),  # a refusal too
    ):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert _csp(response)["default-src"] == ["'none'"]
        assert _csp(response)["frame-ancestors"] == ["'none'"]


def test_the_docs_page_and_the_openapi_document_are_served_under_a_policy_without_inline_scripts(
    client: TestClient,
) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    scripts = _csp(docs)["script-src"]
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    # The page's one inline script is allowed by its hash, so the page works under the policy.
    assert any(source.startswith("'sha256-") for source in scripts)
    assert _csp(docs)["default-src"] == ["'none'"]

    document = client.get("/openapi.json")
    assert document.status_code == 200
    assert {"/v1/predict", "/v1/predict/batch", "/v1/customers/{customer_id}/risk"} <= set(
        document.json()["paths"]
    )
    assert _csp(document)["default-src"] == ["'none'"]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"tenure": "abc"}, "tenure", "tenure: 'abc' is not an integer"),
        ({"Contract": "Weekly"}, "Contract", "Contract: 'Weekly' is not one of"),
        ({"TotalCharges": "", "tenure": 5}, "TotalCharges", "TotalCharges: blank but tenure is 5"),
        ({"customerID": "A-1"}, "customerID", "is not a customer id like 1234-ABCDE"),
    ],
)
def test_a_value_breaking_an_ingestion_rule_is_a_422_in_the_ingestions_words_naming_the_field(
    client: TestClient, predict_key: api.IssuedKey, changes: dict, field: str, words: str
) -> None:
    response = _predict(client, predict_key, api.customer("7590-VHVEG", **changes))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert words in error["msg"]
    _assert_no_internals(response)


def test_a_rule_across_columns_is_a_422_that_names_the_rule(
    client: TestClient, predict_key: api.IssuedKey
) -> None:
    broken = api.customer("7590-VHVEG", PhoneService="No", MultipleLines="Yes")

    response = _predict(client, predict_key, broken)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert "MultipleLines" in error["msg"] and "PhoneService" in error["msg"]


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({**api.EXAMPLE_CUSTOMER, "Churn": "No"}, ["body", "Churn"], "extra_forbidden"),
        ({k: v for k, v in api.EXAMPLE_CUSTOMER.items() if k != "tenure"}, ["body", "tenure"],
         "missing"),
        ({**api.EXAMPLE_CUSTOMER, "SeniorCitizen": True}, ["body", "SeniorCitizen"], None),
    ],
    ids=["unknown field", "missing field", "JSON boolean"],
)  # fmt: skip
def test_an_unknown_or_missing_field_or_a_json_boolean_is_a_422(
    client: TestClient, predict_key: api.IssuedKey, body: dict, loc: list, kind: str | None
) -> None:
    response = _predict(client, predict_key, body)

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors and all(error["loc"][:2] == loc for error in errors)
    if kind is not None:
        assert [error["type"] for error in errors] == [kind]
    _assert_no_internals(response)


def test_a_batch_answers_the_valid_customers_and_reports_the_others_by_position(
    client: TestClient, predict_key: api.IssuedKey, versions: dict[str, str]
) -> None:
    customers = [
        api.customer("0001-BATCH"),
        api.customer("0002-BATCH", tenure="abc"),
        {"customerID": "0003-BATCH"},
        api.customer("0004-BATCH", Contract="Weekly"),
        api.customer("0005-BATCH"),
    ]

    response = client.post(
        "/v1/predict/batch", json={"customers": customers}, headers=predict_key.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    answered = {p["index"]: p for p in body["predictions"]}
    assert sorted(answered) == [0, 4]
    assert answered[4]["customer_id"] == "0005-BATCH"
    assert answered[4]["churn_probability"] == pytest.approx(CHAMPION_PROBABILITY)
    assert all(len(p["reasons"]) == 3 for p in body["predictions"])
    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3]
    assert errors[1]["customer_id"] == "0002-BATCH"
    assert errors[1]["errors"][0]["loc"] == ["body", "customers", 1, "tenure"]
    assert errors[1]["errors"][0]["msg"] == "tenure: 'abc' is not an integer"
    assert len(errors[2]["errors"]) == 19  # every landing column but the id is missing
    assert errors[3]["errors"][0]["loc"] == ["body", "customers", 3, "Contract"]
    assert response.headers["X-Model-Version"] == versions["champion"]
    assert uuid.UUID(body["request_id"])


def test_a_batch_over_the_maximum_is_a_422_naming_the_limit(
    client: TestClient, predict_key: api.IssuedKey
) -> None:
    customers = [api.customer(f"{i:04d}-LIMIT") for i in range(MAX_BATCH + 1)]

    response = client.post(
        "/v1/predict/batch", json={"customers": customers}, headers=predict_key.headers
    )

    assert response.status_code == 422
    assert f"at most {MAX_BATCH}" in response.json()["detail"]


def test_a_body_over_the_limit_is_a_413_whether_its_length_is_declared_or_streamed(
    client: TestClient, predict_key: api.IssuedKey
) -> None:
    padding = "x" * MAX_BODY_BYTES
    declared = client.post(
        "/v1/predict/batch",
        json={"customers": [api.customer("0001-LARGE", gender=padding)]},
        headers=predict_key.headers,
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"customers": [{"gender": "'
        for _ in range(MAX_BODY_BYTES // 1000 + 1):
            yield b"x" * 1000
        yield b'"}]}'

    streamed = client.post(
        "/v1/predict/batch",
        content=chunks(),
        headers={**predict_key.headers, "Content-Type": "application/json"},
    )

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert f"{MAX_BODY_BYTES:,} bytes" in response.json()["detail"]
        _assert_no_internals(response)


# --- keys, scopes and limits -----------------------------------------------------------------


def test_a_request_without_a_key_or_with_an_unknown_one_is_a_401_with_a_bearer_challenge(
    client: TestClient,
) -> None:
    unknown = {"Authorization": f"Bearer {api_keys.KEY_PREFIX}not-a-key-anyone-was-given"}
    for headers in ({}, unknown, {"X-API-Key": "rtn_unknown"}):
        response = client.post("/v1/predict", json=api.customer("7590-VHVEG"), headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        _assert_no_internals(response)


def test_a_revoked_key_is_refused_within_the_refresh_interval(
    client: TestClient, platform: api.ServingPlatform
) -> None:
    key = api.create_key(platform, ("predict",))
    api.refresh_keys(client)
    assert _predict(client, key, api.customer("7590-VHVEG")).status_code == 200

    api_keys.revoke_key(platform.url, key.name, actor="pytest")

    refusal = api.wait_for(
        lambda: (r := _predict(client, key, api.customer("7590-VHVEG"))).status_code == 401 and r,
        timeout_s=10 * platform.api_settings().api_key_refresh_s,
    )
    assert refusal.json()["detail"] == "unknown or revoked API key"


def test_a_key_without_the_scope_of_a_route_is_a_403(
    client: TestClient, predict_key: api.IssuedKey, read_key: api.IssuedKey
) -> None:
    refused = [
        _predict(client, read_key, api.customer("7590-VHVEG")),
        client.get("/v1/customers/7590-VHVEG/risk", headers=predict_key.headers),
    ]

    assert [response.status_code for response in refused] == [403, 403]
    assert refused[0].json()["detail"] == "this API key may not request predictions"
    assert refused[1].json()["detail"] == "this API key may not read stored scores"


def test_the_x_api_key_header_works_as_well_as_bearer(
    client: TestClient, predict_key: api.IssuedKey
) -> None:
    response = client.post(
        "/v1/predict", json=api.customer("7590-VHVEG"), headers={"X-API-Key": predict_key.raw}
    )

    assert response.status_code == 200, response.text


def test_probes_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/live").json() == {"status": "live"}
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/metrics").status_code == 200
    assert client.get("/health").json()["status"] == "ok"


def test_over_its_rate_limit_a_key_gets_429_with_retry_after_and_other_keys_go_on(
    platform: api.ServingPlatform, versions: dict[str, str]
) -> None:
    busy, other = api.create_key(platform), api.create_key(platform)
    with api.api_client(platform.api_settings(api_rate_limit="5/minute")) as limited:
        statuses = [
            _predict(limited, busy, api.customer("7590-VHVEG")).status_code for _ in range(5)
        ]
        refused = _predict(limited, busy, api.customer("7590-VHVEG"))
        answered = _predict(limited, other, api.customer("7590-VHVEG"))
        metrics = limited.get("/metrics").text

    assert statuses == [200] * 5
    assert refused.status_code == 429
    assert re.fullmatch(r"[0-9]+", refused.headers["Retry-After"])
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "5/minute" in refused.json()["detail"]
    _assert_no_internals(refused)
    assert answered.status_code == 200
    assert api.metric_value(metrics, "retention_api_rate_limited_total") == 1


def test_error_responses_hold_no_stack_trace_or_sql(
    client: TestClient, predict_key: api.IssuedKey, read_key: api.IssuedKey
) -> None:
    not_utf8 = {**predict_key.headers, "Content-Type": "application/json"}
    errors = [
        client.post("/v1/predict", content=b"{not json", headers=predict_key.headers),
        client.post("/v1/predict", content=b'{"gender": "\xff"}', headers=not_utf8),
        client.post("/v1/predict", json=[1, 2], headers=predict_key.headers),
        client.post("/v1/predict/batch", json={"customers": []}, headers=predict_key.headers),
        client.post("/v1/predict/batch", json={"customers": [7]}, headers=predict_key.headers),
        client.get("/v1/customers/' or 1=1 --/risk", headers=read_key.headers),
        client.get(f"/v1/customers/{'x' * 65}/risk", headers=read_key.headers),
        client.get("/v1/nothing-here"),
        client.delete("/v1/predict", headers=predict_key.headers),
    ]

    # The risk lookup is a 404, or a 503 where the nightly view was not built yet: both
    # without the database's own words.
    assert [response.status_code for response in errors[:2]] == [422, 400]
    assert [response.status_code < 500 for response in errors[:5]] == [True] * 5
    assert all(response.status_code != 500 for response in errors), [
        (response.status_code, response.text) for response in errors
    ]
    for response in errors:
        _assert_no_internals(response)
        # Every error, the router's and the framework's too, in one shape a client can log.
        assert set(response.json()) == {"detail", "request_id"}
        assert response.json()["request_id"] == response.headers["X-Request-ID"]


# --- stored scores ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_customers_stored_risk_is_their_latest_nightly_score_and_an_unknown_one_is_a_404(
    client: TestClient, read_key: api.IssuedKey, nightly_scores: tuple[NightlyScore, ...]
) -> None:
    latest = max(
        (s for s in nightly_scores if s.customer_id == "7590-VHVEG"), key=lambda s: s.snapshot_date
    )

    response = client.get("/v1/customers/7590-VHVEG/risk", headers=read_key.headers)
    unknown = client.get("/v1/customers/9999-NOONE/risk", headers=read_key.headers)

    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["snapshot_date"] == latest.snapshot_date.isoformat()
    assert stored["churn_probability"] == latest.churn_probability
    assert stored["risk_band"] == latest.risk_band
    assert stored["model_version"] == latest.model_version
    assert [(r["reason"], r["contribution"]) for r in stored["reasons"]] == list(latest.reasons)
    assert [r["feature"] for r in stored["reasons"]] == [
        "payment_method", "contract", "tenure_months"
    ]  # fmt: skip
    assert response.headers["Cache-Control"] == "no-store"
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no nightly score for this customer"


# --- the prediction log -----------------------------------------------------------------------


def _logged(url: str, request_ids: list[str]) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "select * from ml.prediction_log where request_id = any(%s::uuid[])"
            " order by request_id, row_index, served desc",
            (request_ids,),
        ).fetchall()


def test_every_answer_is_written_to_the_prediction_log(
    client: TestClient, platform: api.ServingPlatform, versions: dict[str, str]
) -> None:
    key = api.create_key(platform)
    api.refresh_keys(client)
    single = _predict(client, key, api.customer("0001-LOGGD")).json()
    batch = client.post(
        "/v1/predict/batch",
        json={"customers": [api.customer("0002-LOGGD"), {}, api.customer("0003-LOGGD")]},
        headers=key.headers,
    ).json()
    request_ids = [single["request_id"], batch["request_id"]]

    rows = api.wait_for(lambda: (found := _logged(platform.url, request_ids)) and len(found) == 3
                        and found)  # fmt: skip

    assert [(str(r["request_id"]), r["row_index"], r["customer_id"]) for r in rows] == sorted(
        [
            (single["request_id"], 0, "0001-LOGGD"),
            (batch["request_id"], 0, "0002-LOGGD"),
            (batch["request_id"], 2, "0003-LOGGD"),
        ]
    )
    for row in rows:
        assert row["variant"] == "champion" and row["served"] is True
        assert row["model_name"] == "churn-model"
        assert row["model_version"] == versions["champion"]
        assert row["churn_probability"] == pytest.approx(CHAMPION_PROBABILITY)
        assert row["risk_band"] == "high"
        assert row["latency_ms"] > 0
        assert row["api_key_id"] == key.key_id


def test_an_erased_customer_is_answered_but_no_longer_logged(
    client: TestClient, platform: api.ServingPlatform
) -> None:
    key = api.create_key(platform)
    api.refresh_keys(client)
    before = _predict(client, key, api.customer("0004-ERASD")).json()["request_id"]
    api.wait_for(lambda: _logged(platform.url, [before]))
    erased = erasure.forget_customer(
        platform.url,
        "0004-ERASD",
        reason="erasure request",
        actor="cli:test",
        key=pseudonym_key(get_settings()),
    )
    assert erased.rows["ml.prediction_log"] == 1

    after = _predict(client, key, api.customer("0004-ERASD"))
    assert after.status_code == 200  # answered: the application asked with its own data
    kept = _predict(client, key, api.customer("0005-KEEPS")).json()["request_id"]
    assert api.wait_for(lambda: _logged(platform.url, [kept]))
    assert _logged(platform.url, [before, after.json()["request_id"]]) == []
    text = client.get("/metrics").text
    dropped = "retention_api_prediction_log_rows_dropped_total"
    assert api.metric_value(text, dropped, reason="erased customer") >= 1


# --- A/B tests and the shadow ----------------------------------------------------------------


def test_in_an_ab_test_a_customer_keeps_one_variant_and_about_half_go_to_the_challenger(
    platform: api.ServingPlatform, predict_key: api.IssuedKey, versions: dict[str, str]
) -> None:
    expected = {"champion": CHAMPION_PROBABILITY, "challenger": CHALLENGER_PROBABILITY}
    customers = [api.customer(f"{i:04d}-ABTST") for i in range(200)]
    with api.api_client(platform.api_settings(api_challenger_share=0.5)) as ab:
        batch = ab.post(
            "/v1/predict/batch", json={"customers": customers}, headers=predict_key.headers
        )
        repeated = {
            customer["customerID"]: [_predict(ab, predict_key, customer).json() for _ in range(3)]
            for customer in customers[:6]
        }

    answers = batch.json()["predictions"]
    assert len(answers) == 200
    for answer in answers:
        assert answer["model_version"] == versions[answer["variant"]]
        assert answer["churn_probability"] == pytest.approx(expected[answer["variant"]])
    to_challenger = sum(answer["variant"] == "challenger" for answer in answers)
    assert 70 <= to_challenger <= 130
    assert batch.headers["X-Model-Version"] == ",".join(sorted(versions.values()))
    variant_of = {answer["customer_id"]: answer["variant"] for answer in answers}
    for customer_id, singles in repeated.items():
        assert {single["variant"] for single in singles} == {variant_of[customer_id]}
        assert {single["model_version"] for single in singles} == {
            versions[variant_of[customer_id]]
        }
    assert set(variant_of.values()) == {"champion", "challenger"}


def test_in_the_shadow_the_champion_answers_and_the_challenger_is_only_logged(
    platform: api.ServingPlatform, predict_key: api.IssuedKey, versions: dict[str, str]
) -> None:
    with api.api_client(platform.api_settings(api_shadow=True)) as shadowed:
        answer = _predict(shadowed, predict_key, api.customer("0001-SHADW")).json()
        metrics = api.wait_for(
            lambda: (
                (text := shadowed.get("/metrics").text)
                and api.metric_value(text, "retention_api_prediction_log_rows_written_total") >= 2
                and text
            )
        )

    assert answer["variant"] == "champion"
    assert answer["churn_probability"] == pytest.approx(CHAMPION_PROBABILITY)
    rows = _logged(platform.url, [answer["request_id"]])
    assert [(r["variant"], r["served"], r["model_version"]) for r in rows] == [
        ("champion", True, versions["champion"]),
        ("challenger", False, versions["challenger"]),
    ]
    assert rows[1]["churn_probability"] == pytest.approx(CHALLENGER_PROBABILITY)
    assert rows[1]["risk_band"] == "low"
    shadow_count = api.metric_value(
        metrics, "retention_api_predictions_total", variant="challenger", served="false"
    )
    assert shadow_count == 1


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_expose_requests_latency_predictions_models_and_the_prediction_log(
    client: TestClient, predict_key: api.IssuedKey, versions: dict[str, str]
) -> None:
    assert _predict(client, predict_key, api.customer("0001-METRC")).status_code == 200
    assert client.post("/v1/predict", json=api.customer("0001-METRC")).status_code == 401
    text = api.wait_for(
        lambda: (
            (found := client.get("/metrics").text)
            and api.metric_value(found, "retention_api_prediction_log_rows_written_total") > 0
            and found
        )
    )
    samples = api.metric_samples(text)

    def labelled(name: str, **labels: str) -> list[dict[str, str]]:
        return [found for found, _ in samples[name] if labels.items() <= found.items()]

    assert labelled("retention_api_requests_total", route="/v1/predict", method="POST",
                    status="200")  # fmt: skip
    assert labelled("retention_api_requests_total", route="/v1/predict", status="401")
    assert {"le", "route", "method"} == set(
        labelled("retention_api_request_duration_seconds_bucket", route="/v1/predict")[0]
    )
    assert labelled("retention_api_predictions_total", model_version=versions["champion"],
                    variant="champion", band="high", served="true")  # fmt: skip
    assert api.metric_value(text, "retention_api_model_reloads_total", variant="champion") >= 1
    info = labelled("retention_api_model_info", variant="champion", model_name="churn-model")
    assert [found["model_version"] for found in info] == [versions["champion"]]
    assert api.metric_value(text, "retention_api_model_info", variant="champion") == 1
    # Counted from zero before the first failure or drop, so an increase() sees the first one.
    assert labelled("retention_api_model_load_failures_total", variant="champion")
    assert "# TYPE retention_api_prediction_log_rows_dropped_total counter" in text
    [(no_labels, written)] = samples["retention_api_prediction_log_rows_written_total"]
    assert no_labels == {} and written >= 1


# --- the command line -------------------------------------------------------------------------


def test_the_cli_prints_a_new_key_once_lists_keys_without_them_and_revokes_one(
    platform: api.ServingPlatform, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    name = f"crm-{uuid.uuid4().hex[:6]}"
    wide = {"COLUMNS": "250"}
    # A wide table whatever width the console took from the environment when it was made.
    monkeypatch.setattr(cli.console, "_width", 250)

    created = runner.invoke(cli.app, ["api-key", "create", name, "--scope", "read"], env=wide)
    listed = runner.invoke(cli.app, ["api-key", "list"], env=wide)

    assert created.exit_code == 0, created.output
    [raw_key] = re.findall(rf"{api_keys.KEY_PREFIX}\S+", created.output)
    assert "shown once" in created.output and "scopes read" in created.output
    api.refresh_keys(client)
    assert client.get("/v1/customers/9999-NOONE/risk", headers={"X-API-Key": raw_key}
                      ).status_code not in (401, 403)  # fmt: skip
    assert listed.exit_code == 0, listed.output
    assert name in listed.output and raw_key[:12] in listed.output
    assert raw_key not in listed.output

    revoked = runner.invoke(cli.app, ["api-key", "revoke", name], env=wide)
    live = runner.invoke(cli.app, ["api-key", "list"], env=wide)
    every = runner.invoke(cli.app, ["api-key", "list", "--revoked"], env=wide)

    assert revoked.exit_code == 0, revoked.output
    assert f"key {name!r}" in revoked.output and "revoked" in revoked.output
    assert name not in live.output
    [row] = [line for line in every.output.splitlines() if name in line]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d\s*\S?\s*$", row), row  # its revoked column
    assert raw_key not in every.output
    again = runner.invoke(cli.app, ["api-key", "revoke", name], env=wide)
    assert again.exit_code == 1 and "no live key" in again.output
    # The audit log has the creation and the revocation, by this user, and not the refusal.
    logged = [(e.kind, e.actor) for e in audit.entries(platform.url) if e.subject == name]
    assert logged == [
        ("api_key_created", audit.cli_actor()),
        ("api_key_revoked", audit.cli_actor()),
    ]


# --- following the registry -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_platform(platform: api.ServingPlatform) -> Iterator[api.ServingPlatform]:
    """The platform with a registry of its own, for tests that take its champion away or
    break it."""
    with api.store_of_its_own(platform) as bare:
        yield bare


def test_ready_is_503_with_a_reason_until_a_champion_is_promoted_then_200_within_a_poll(
    bare_platform: api.ServingPlatform, predict_key: api.IssuedKey
) -> None:
    if registry.champion_version(bare_platform.client) is not None:
        bare_platform.client.delete_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION)
    settings = bare_platform.api_settings()
    with api.api_client(settings) as fresh:
        not_ready = fresh.get("/ready")
        no_model = _predict(fresh, predict_key, api.customer("7590-VHVEG"))
        version = api.register_model(bare_platform, constant_churn_model(0.2))
        api.promote(bare_platform, version)
        ready = api.wait_for(
            lambda: (r := fresh.get("/ready")).status_code == 200 and r,
            timeout_s=settings.api_model_poll_s + 3,
        )
        answer = _predict(fresh, predict_key, api.customer("7590-VHVEG"))

    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "not ready"
    assert not_ready.json()["reasons"] == ["no champion model is loaded"]
    assert no_model.status_code == 503
    assert "no champion model is loaded yet" in no_model.json()["detail"]
    _assert_no_internals(no_model)
    assert ready.json() == {"status": "ready"}
    assert answer.json()["model_version"] == version
    assert answer.json()["churn_probability"] == pytest.approx(0.2)


def test_a_version_that_fails_to_load_keeps_the_last_good_champion_answering(
    bare_platform: api.ServingPlatform, predict_key: api.IssuedKey
) -> None:
    good = api.register_model(bare_platform, constant_churn_model(0.4))
    api.promote(bare_platform, good)
    with api.api_client(bare_platform.api_settings()) as serving:
        assert _predict(serving, predict_key, api.customer("7590-VHVEG")).status_code == 200
        broken = api.register_unloadable_version(bare_platform)
        api.promote(bare_platform, broken)
        metrics = api.wait_for(
            lambda: (
                (text := serving.get("/metrics").text)
                and api.metric_value(
                    text, "retention_api_model_load_failures_total", variant="champion"
                )
                >= 1
                and text
            )
        )
        answer = _predict(serving, predict_key, api.customer("7590-VHVEG"))
        ready = serving.get("/ready")
        health = serving.get("/health").json()

    assert answer.status_code == 200
    assert answer.json()["model_version"] == good
    assert answer.headers["X-Model-Version"] == good
    assert answer.json()["churn_probability"] == pytest.approx(0.4)
    assert ready.status_code == 200  # the last good champion still answers
    assert health["models"]["champion"]["model_version"] == good
    assert api.metric_value(metrics, "retention_api_model_info", model_version=good) == 1
    assert api.metric_value(metrics, "retention_api_model_reloads_total", variant="champion") == 1
