"""What every response goes through: a request id, the body size limit, security headers and
the request metrics. Plain ASGI, so it adds microseconds, not a task per request."""

from __future__ import annotations

import time
import uuid
from typing import Final

from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retention_pipelines.serving.metrics import ApiMetrics

REQUEST_ID_HEADER: Final = "X-Request-ID"
# Answers about customers must not be kept by browsers or proxies.
NO_STORE_PREFIXES: Final = ("/v1/",)
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_SECURITY_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


class ApiMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: ApiMetrics, max_body_bytes: int, docs_csp: str
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.docs_csp = docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in _SECURITY_HEADERS:
                    headers.setdefault(name, value)
                headers["Content-Security-Policy"] = self.docs_csp if path == "/docs" else API_CSP
                if path.startswith(NO_STORE_PREFIXES):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, self._limited(scope, receive), send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that refuses a body over the limit (413): at once when its declared
        length says so, or as soon as the bytes that arrive pass it."""
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = HTTPException(413, f"the request body is over {limit:,} bytes")
        if declared is not None and declared.isdigit() and int(declared) > limit:

            async def refuse() -> Message:
                raise too_large

            return refuse
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        return counted
