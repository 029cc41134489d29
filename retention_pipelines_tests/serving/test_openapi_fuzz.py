"""Every operation of the OpenAPI document, fuzzed by schemathesis against the app in process
with a key of both scopes: no request, however odd, is a server error, and every response
matches what the document promises for its status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from retention_pipelines.serving.app import create_app
from retention_pipelines.settings import RetentionSettings
from retention_pipelines_tests.churn_models import constant_churn_model
from retention_pipelines_tests.serving import api
from retention_pipelines_tests.serving.conftest import NightlyScore

pytestmark = pytest.mark.slow


class StartedApp:
    """The ASGI app schemathesis calls: requests go to the app a fixture started (with its
    lifespan, under a TestClient); schemathesis' own lifespan events are answered here, so
    the app starts once, on the module's warehouse. Until then, an app that was never
    started answers, enough to read the OpenAPI document, which needs no warehouse."""

    def __init__(self) -> None:
        self.app: Any = create_app(RetentionSettings())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


# A customer's body takes any text or number per column: which values are valid is decided by
# the ingestion's rules, as for a landing file, so a body valid by the schema may still be
# refused with the documented 422 that names the rule. schemathesis' default, and 422:
ACCEPTED_OR_RULE_BROKEN = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
_CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {
                "include-path": "/v1/predict",
                "include-method": "POST",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_RULE_BROKEN}
                },
            }
        ]
    }
)
started_app = StartedApp()
schema = schemathesis.openapi.from_asgi("/openapi.json", started_app, config=_CONFIG)


@pytest.fixture(scope="module")
def fuzz_key(platform: api.ServingPlatform) -> api.IssuedKey:
    return api.create_key(platform, ("predict", "read"))


@pytest.fixture(scope="module")
def fuzz_client(
    platform: api.ServingPlatform,
    fuzz_key: api.IssuedKey,
    nightly_scores: tuple[NightlyScore, ...],
) -> Iterator[TestClient]:
    """The API with a champion and stored scores to read; a rate limit no fuzzing run
    reaches (the limit itself is tested in test_api)."""
    api.promote(platform, api.register_model(platform, constant_churn_model(0.6)))
    with api.api_client(platform.api_settings(api_rate_limit="1000000/minute")) as client:
        started_app.app = client.app
        yield client


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error_and_every_response_matches_the_document(
    case: Any, fuzz_client: TestClient, fuzz_key: api.IssuedKey
) -> None:
    # Both ways of presenting the key, so schemathesis takes every declared scheme as given
    # (and probes each without a key and with a wrong one).
    key_headers = {**fuzz_key.headers, "X-API-Key": fuzz_key.raw}

    response = case.call_and_validate(headers=key_headers)

    assert response.status_code < 500, (response.status_code, response.text)
