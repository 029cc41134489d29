"""Dependencies of the routes: the app's state, and the caller's key checked for a scope and
counted against its rate limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from retention_pipelines.core.api_keys import ApiKey
from retention_pipelines.serving.state import ServingState

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key, instead of the bearer header."
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


State = Annotated[ServingState, Depends(serving_state)]


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that lets a request through with a live key holding ``scope`` and under
    its rate limit: 401 without a key or with an unknown or revoked one, 403 with a key of
    other scopes, 429 over the limit (with Retry-After)."""

    async def authorised(
        state: State,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_header)],
    ) -> ApiKey:
        raw_key = bearer.credentials if bearer is not None else header_key
        if not raw_key:
            raise HTTPException(401, "an API key is required", headers=_CHALLENGE)
        key = state.keys.lookup(raw_key)
        if key is None:
            raise HTTPException(401, "unknown or revoked API key", headers=_CHALLENGE)
        if scope not in key.scopes:
            raise HTTPException(403, f"this API key may not {_VERBS[scope]}")
        decision = state.limiter.hit(f"key:{key.key_id}")
        if not decision.allowed:
            state.metrics.rate_limited.inc()
            raise HTTPException(
                429,
                f"rate limit of {state.settings.api_rate_limit} exceeded for this API key",
                headers={"Retry-After": str(decision.retry_after_s)},
            )
        return key

    return authorised


_VERBS = {"predict": "request predictions", "read": "read stored scores"}
PredictKey = Annotated[ApiKey, Depends(require_scope("predict"))]
ReadKey = Annotated[ApiKey, Depends(require_scope("read"))]
