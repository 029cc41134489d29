"""Whether each service of the stack serves, asked the way its own clients would ask it.

A service is *ready*; *degraded* when it serves but lacks something that waiting will not
bring (the API without a champion model, a webserver whose code location failed to load);
*starting* when it answers in part (a webserver still loading the code location, a daemon
that has not yet written a heartbeat); or *down*. ``stack up`` waits until every service is
ready or degraded; ``stack status`` fails while any is starting or down.

The questions: HTTP 200 on the service's health URL; gRPC's standard health service for the
code server (``DagsterApi`` SERVING); the API's ``/ready``, whose 503 says why; the
webserver's ``/server_info``, then its GraphQL workspace (the code location loaded, or its
error); and the daemon's heartbeats in the Dagster database since it started (Dagster's own
liveness record, which ``dagster-daemon liveness-check`` reads too).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import psycopg

from retention_pipelines.stack.services import HealthCheck

TIMEOUT_S: Final = 3.0
# Dagster's daemon beats every 30 s; one beat late is still alive.
HEARTBEAT_FRESH_S: Final = 90.0
# Clocks of this process and of Postgres, which stamps nothing here but is read back.
CLOCK_SLACK_S: Final = 5.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_WORKSPACE_QUERY: Final = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


class Level(StrEnum):
    READY = "ready"
    DEGRADED = "degraded"
    STARTING = "starting"
    DOWN = "down"


@dataclass(frozen=True)
class Health:
    level: Level
    detail: str = ""

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: ready, or serving without what waiting cannot bring."""
        return self.level in (Level.READY, Level.DEGRADED)


@dataclass(frozen=True)
class Context:
    """What some checks need besides the service's address: the Dagster database (None when
    Postgres cannot be reached) and when the service started (Unix time)."""

    dagster_database_url: str | None = None
    started_at: float = 0.0


def check(health: HealthCheck, context: Context) -> Health:
    checks: dict[str, Callable[[str, Context], Health]] = {
        "http": _http,
        "grpc": _grpc,
        "api": _api,
        "dagster-webserver": _webserver,
        "dagster-daemon": _daemon,
    }
    asking = checks.get(health.kind)
    if asking is None:
        return Health(Level.DOWN, f"no health check named {health.kind!r}")
    return asking(health.target, context)


def check_postgres(url: str | None, why_not: str = "") -> Health:
    """The server answers a query."""
    if url is None:
        return Health(Level.DOWN, why_not or "not running")
    try:
        with psycopg.connect(url, connect_timeout=int(TIMEOUT_S)) as conn:
            conn.execute("select 1")
    except psycopg.Error as error:
        return Health(Level.DOWN, _first_line(str(error)))
    return Health(Level.READY, "accepts connections")


def _get(url: str, body: bytes | None = None) -> tuple[int, bytes] | None:
    """The status and body of a GET (a POST of JSON with ``body``); None when nothing answers."""
    request = urllib.request.Request(  # noqa: S310  # our own http:// URLs
        url, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with _DIRECT.open(request, timeout=TIMEOUT_S) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _http(url: str, _: Context) -> Health:
    answer = _get(url)
    if answer is None:
        return Health(Level.DOWN, "does not answer")
    if answer[0] != 200:
        return Health(Level.STARTING, f"answers {answer[0]}")
    return Health(Level.READY)


def _grpc(target: str, _: Context) -> Health:
    import grpc  # noqa: PLC0415  # only the checks of the code server need gRPC
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    options = [("grpc.enable_http_proxy", 0)]  # a local server, whatever the environment says
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return Health(Level.DOWN, "does not answer")
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return Health(Level.STARTING, "not serving yet")
    return Health(Level.READY)


def _api(url: str, _: Context) -> Health:
    answer = _get(f"{url}/ready")
    if answer is None:
        return Health(Level.DOWN, "does not answer")
    status, body = answer
    if status == 200:
        return Health(Level.READY)
    if status == 503:
        reasons = _json(body).get("reasons") or ["not ready"]
        return Health(Level.DEGRADED, "not ready: " + "; ".join(map(str, reasons)))
    return Health(Level.STARTING, f"/ready answers {status}")


def _webserver(url: str, _: Context) -> Health:
    info = _get(f"{url}/server_info")
    if info is None or info[0] != 200:
        return Health(Level.DOWN, "does not answer")
    answer = _get(f"{url}/graphql", json.dumps({"query": _WORKSPACE_QUERY}).encode())
    if answer is None or answer[0] != 200:
        return Health(Level.STARTING, "workspace not readable yet")
    workspace = (_json(answer[1]).get("data") or {}).get("workspaceOrError") or {}
    if workspace.get("__typename") != "Workspace":
        return Health(Level.DEGRADED, _first_line(str(workspace.get("message", "no workspace"))))
    return _locations(workspace.get("locationEntries") or [])


def _locations(entries: list[dict[str, Any]]) -> Health:
    if not entries:
        return Health(Level.DEGRADED, "the workspace has no code location")
    for entry in entries:
        if entry.get("loadStatus") != "LOADED":
            return Health(Level.STARTING, f"loading code location {entry.get('name')}")
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("__typename") == "PythonError":
            message = _first_line(str(loaded.get("message", "")))
            return Health(Level.DEGRADED, f"code location {entry.get('name')}: {message}")
    names = ", ".join(str(entry.get("name")) for entry in entries)
    return Health(Level.READY, f"{names} loaded")


def _daemon(_: str, context: Context) -> Health:
    if context.dagster_database_url is None:
        return Health(Level.DOWN, "the Dagster database cannot be reached")
    try:
        with psycopg.connect(context.dagster_database_url, connect_timeout=int(TIMEOUT_S)) as conn:
            rows = conn.execute(
                "select daemon_type, extract(epoch from timestamp)::float8 from daemon_heartbeats"
            ).fetchall()
    except psycopg.Error as error:
        return Health(Level.DOWN, _first_line(str(error)))
    return _heartbeats({str(kind): float(at) for kind, at in rows}, context.started_at)


def _heartbeats(beats: dict[str, float], started_at: float) -> Health:
    """Ready when the daemons have beaten since the process started, and lately."""
    now = time.time()
    since_start = {kind: at for kind, at in beats.items() if at >= started_at - CLOCK_SLACK_S}
    if not since_start:
        return Health(Level.STARTING, "no heartbeat yet")
    age = now - max(since_start.values())
    if age > HEARTBEAT_FRESH_S:
        return Health(Level.DOWN, f"last heartbeat {age:.0f} s ago")
    return Health(Level.READY, f"{len(since_start)} daemons beating")


def _json(body: bytes) -> dict[str, Any]:
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:200]
