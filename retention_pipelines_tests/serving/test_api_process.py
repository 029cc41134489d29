"""``retention serve`` as it runs in production: a process of its own (two workers where that
is the point) on a loopback port, with real Postgres, a real MLflow store and Redis, driven
over HTTP with httpx.

A server takes many seconds to import its stack and load its champion, so the module starts
two at once and shares them: one with two workers and a rate limit kept in Redis, and one
whose database goes through a TCP proxy the tests can cut, with quick pollers and /metrics on
a port of its own. The last test stops that one with SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis
from prometheus_client.multiprocess import MultiProcessCollector

from retention_pipelines.core import database, registry
from retention_pipelines.core.pseudonyms import pseudonym_key
from retention_pipelines.core.warehouse.tables import PREDICTION_LOG
from retention_pipelines_tests.churn_models import constant_churn_model
from retention_pipelines_tests.serving import api
from retention_pipelines_tests.serving.processes import (
    LOOPBACK,
    ServeProcess,
    TcpProxy,
    free_port,
    start_serve,
)

pytestmark = pytest.mark.slow

POLL_S: Final = 0.5
# Time a server may take, once it has seen an alias move, to load the version it names.
LOADING_S: Final = 2.0
RATE_LIMIT: Final = 20
FIRST_PROBABILITY, SECOND_PROBABILITY = 0.2, 0.6
# A database of the Redis server of its own, so these counts meet no other test's.
REDIS_URL: Final = os.environ.get("RETENTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass(frozen=True)
class Models:
    """Two registered versions told apart by what they predict; ``first`` is champion."""

    first: str
    second: str

    def probability_of(self, version: str | None) -> float:
        return {self.first: FIRST_PROBABILITY, self.second: SECOND_PROBABILITY}[str(version)]


@dataclass
class Servers:
    """The module's servers, started together (each test waits for the one it uses)."""

    limited: ServeProcess | None  # two workers, the rate limit in Redis; None without Redis
    limited_key: api.IssuedKey
    limited_tmp: Path  # the limited server's TMPDIR, where its workers write their metrics
    proxied: ServeProcess
    proxied_tmp: Path  # the proxied server's TMPDIR
    proxy: TcpProxy
    metrics_port: int
    key: api.IssuedKey


@pytest.fixture(scope="module")
def models(platform: api.ServingPlatform, servers: Servers) -> Models:
    """The versions, registered while the servers start (they find the champion by polling)."""
    first = api.register_model(platform, constant_churn_model(FIRST_PROBABILITY))
    api.promote(platform, first)
    second = api.register_model(platform, constant_churn_model(SECOND_PROBABILITY))
    return Models(first, second)


@pytest.fixture(scope="module")
def servers(
    platform: api.ServingPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    parts = database.connection_parts(platform.url)
    if parts.host.startswith("/"):
        pytest.skip("the proxy in front of the database forwards TCP, not a Unix socket")
    folder = tmp_path_factory.mktemp("serve")
    # pytest's own folder of this user, kept between sessions: later runs import, not compile.
    bytecode_cache = tmp_path_factory.getbasetemp().parent / "serve-bytecode"
    with ExitStack() as cleanup:
        proxy = TcpProxy((parts.host, parts.port))
        proxy.start()
        cleanup.callback(proxy.close)
        metrics_port = free_port()
        proxied_settings = _settings(
            platform, folder / "proxied-home", _with_port(platform.url, proxy.port)
        )
        proxied_tmp = folder / "proxied-tmp"
        proxied_tmp.mkdir()
        proxied_settings |= {
            "TMPDIR": str(proxied_tmp),
            "RETENTION_API_MODEL_POLL_S": str(POLL_S),
            "RETENTION_API_LOG_FLUSH_S": "0.2",
            "RETENTION_API_RATE_LIMIT": "100000/minute",
            "RETENTION_API_METRICS_PORT": str(metrics_port),
        }
        proxied = start_serve(
            proxied_settings, folder / "proxied.log", bytecode_cache=bytecode_cache
        )
        cleanup.callback(proxied.stop)
        limited_key, limited_tmp, limited = api.create_key(platform), folder / "limited-tmp", None
        if _redis_answers():
            _forget_counts(limited_key)
            cleanup.callback(_forget_counts, limited_key)
            limited_tmp.mkdir()
            limited_settings = _settings(platform, folder / "limited-home", platform.url)
            limited_settings |= {
                "RETENTION_API_MODEL_POLL_S": str(POLL_S),
                "RETENTION_REDIS_URL": REDIS_URL,
                "RETENTION_API_RATE_LIMIT": f"{RATE_LIMIT}/minute",
                "RETENTION_API_LOG_FLUSH_S": "0.2",
                "TMPDIR": str(limited_tmp),  # where its workers' metric files go
            }
            limited = start_serve(
                limited_settings, folder / "limited.log", workers=2, bytecode_cache=bytecode_cache
            )
            cleanup.callback(limited.stop)
        yield Servers(
            limited=limited,
            limited_key=limited_key,
            limited_tmp=limited_tmp,
            proxied=proxied,
            proxied_tmp=proxied_tmp,
            proxy=proxy,
            metrics_port=metrics_port,
            key=api.create_key(platform),
        )


@pytest.fixture(scope="module")
def limited_server(servers: Servers, models: Models) -> ServeProcess:
    if servers.limited is None:
        pytest.skip(f"Redis does not answer at {REDIS_URL} (RETENTION_TEST_REDIS_URL)")
    servers.limited.wait_started()
    return servers.limited


@pytest.fixture
def proxied_server(servers: Servers, models: Models) -> ServeProcess:
    assert servers.proxied.running, "the shared server was stopped by an earlier test"
    servers.proxied.wait_started()
    return servers.proxied


def test_two_workers_share_one_rate_limit_in_redis_and_refuse_the_rest_with_retry_after(
    limited_server: ServeProcess, servers: Servers
) -> None:
    key = servers.limited_key

    def predict_on_a_new_connection(_: int) -> httpx.Response:
        with httpx.Client(base_url=limited_server.url, headers=key.headers, timeout=30) as client:
            return client.post("/v1/predict", json=api.customer(_new_customer_id()))

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(predict_on_a_new_connection, range(2 * RATE_LIMIT)))

    assert Counter(r.status_code for r in responses) == {200: RATE_LIMIT, 429: RATE_LIMIT}
    for refused in (r for r in responses if r.status_code == 429):
        retry_after = refused.headers["Retry-After"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    answered = _predictions_per_worker(servers.limited_tmp)
    assert len([count for count in answered.values() if count]) == 2, answered  # both took some
    assert sum(answered.values()) == 2 * RATE_LIMIT

    def scraped_total() -> float:
        text = httpx.get(f"{limited_server.url}/metrics", timeout=10).text
        return api.metric_value(text, "retention_api_requests_total", route="/v1/predict")

    # Whichever worker answers the scrape reports both; the last count lands just after
    # its response is sent.
    api.wait_for(lambda: scraped_total() == 2 * RATE_LIMIT, timeout_s=5)


def test_metrics_are_served_on_their_own_port_and_not_on_the_api_port(
    proxied_server: ServeProcess, servers: Servers
) -> None:
    assert httpx.get(f"{proxied_server.url}/metrics").status_code == 404

    scraped = httpx.get(f"http://{LOOPBACK}:{servers.metrics_port}/metrics")

    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert api.metric_value(scraped.text, "retention_api_model_reloads_total") >= 1
    assert api.metric_value(scraped.text, "retention_api_requests_total", route="/ready") >= 1


def test_alias_moves_under_load_switch_the_version_within_a_poll_and_fail_no_request(
    proxied_server: ServeProcess, servers: Servers, platform: api.ServingPlatform, models: Models
) -> None:
    client = platform.client
    with ResponseStream(proxied_server.url, servers.key.headers) as stream:
        stream.wait_for(lambda reply: True, after=0, timeout_s=10)
        started = time.monotonic()
        registry.promote(client, models.second, reason="under load", actor="pytest")
        promoted = time.monotonic()
        switched = stream.wait_for(_naming(models.second), after=started, timeout_s=30)
        registry.rollback(client, reason="back under load", actor="pytest")
        rolled_back = time.monotonic()
        switched_back = stream.wait_for(_naming(models.first), after=rolled_back, timeout_s=30)
        # Replies for two more polls: the version stays where the alias is.
        stream.wait_for(lambda reply: True, after=switched_back.received + 2 * POLL_S, timeout_s=10)

    replies = stream.replies
    assert [reply for reply in replies if reply.status != 200] == []
    for reply in replies:
        assert reply.body["model_version"] == reply.version
        assert reply.body["churn_probability"] == pytest.approx(
            models.probability_of(reply.version)
        )
    assert _runs([reply.version for reply in replies]) == [
        models.first,
        models.second,
        models.first,
    ]
    assert switched.received - promoted <= POLL_S + LOADING_S
    assert switched_back.received - rolled_back <= POLL_S + LOADING_S


def test_in_a_database_outage_the_server_is_unready_keeps_predicting_and_counts_lost_log_rows(
    proxied_server: ServeProcess, servers: Servers, platform: api.ServingPlatform
) -> None:
    url, key = proxied_server.url, servers.key
    metrics_url = f"http://{LOOPBACK}:{servers.metrics_port}/metrics"
    during, after = _new_customer_id(), _new_customer_id()
    with httpx.Client(base_url=url, headers=key.headers, timeout=10) as client:
        servers.proxy.cut()
        try:
            unready = client.get("/ready")
            # Several polls of the model aliases fail meanwhile: the loaded champion answers.
            until = time.monotonic() + 4 * POLL_S
            answers = []
            while time.monotonic() < until:
                answers.append(client.post("/v1/predict", json=api.customer(during)).status_code)
            dropped = api.wait_for(lambda: _dropped_rows(metrics_url), timeout_s=10)
            health = client.get("/health").json()
        finally:
            servers.proxy.restore()
        restored = time.monotonic()
        api.wait_for(lambda: client.get("/ready").status_code == 200, timeout_s=10)
        ready_again = time.monotonic() - restored
        assert client.post("/v1/predict", json=api.customer(after)).status_code == 200

    assert unready.status_code == 503
    assert any("database" in reason for reason in unready.json()["reasons"]), unready.json()
    assert answers and set(answers) == {200}
    assert dropped > 0
    assert health["database"] == "unreachable" and health["prediction_log"]["dropped"] > 0
    assert health["models"]["champion"]["model_version"]
    assert ready_again <= 5
    assert api.wait_for(lambda: _logged_rows(platform.url, after), timeout_s=10) == 1


def test_serve_says_where_it_listens_answers_docs_and_stops_within_ten_seconds_of_sigterm(
    proxied_server: ServeProcess, servers: Servers
) -> None:
    output = proxied_server.output_text()
    assert f"prediction API on http://{LOOPBACK}:{proxied_server.port} (1 worker)" in output
    assert f"metrics on http://{LOOPBACK}:{servers.metrics_port}/metrics" in output
    docs = httpx.get(f"{proxied_server.url}/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "/v1/predict" in httpx.get(f"{proxied_server.url}/openapi.json").json()["paths"]

    proxied_server.process.send_signal(signal.SIGTERM)
    try:
        exit_status = proxied_server.process.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 10 s after SIGTERM:\n{proxied_server.output_text()[-2000:]}")

    assert exit_status == 0
    assert "Application shutdown complete." in proxied_server.output_text()
    assert list(servers.proxied_tmp.glob("retention-api-metrics-*")) == []  # cleaned up


@dataclass(frozen=True)
class Reply:
    received: float  # time.monotonic() when the response arrived
    status: int | None  # None: the request got no response
    version: str | None  # X-Model-Version
    body: dict[str, Any]


@dataclass
class ResponseStream:
    """/v1/predict requests sent back to back from a thread of their own, each reply kept."""

    url: str
    headers: dict[str, str]
    replies: list[Reply] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ResponseStream:
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def wait_for(self, wanted: Any, *, after: float, timeout_s: float) -> Reply:
        """The first reply received after ``after`` that ``wanted`` accepts."""

        def found() -> Reply | None:
            return next((r for r in list(self.replies) if r.received > after and wanted(r)), None)

        return api.wait_for(found, timeout_s=timeout_s, interval_s=0.01)

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/predict", json=api.customer(_new_customer_id()))
                except httpx.TransportError as error:
                    self.replies.append(Reply(time.monotonic(), None, None, {"error": str(error)}))
                    continue
                is_json = response.headers.get("content-type", "").startswith("application/json")
                self.replies.append(
                    Reply(
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("X-Model-Version"),
                        response.json() if is_json else {"text": response.text[:500]},
                    )
                )


def _new_customer_id() -> str:
    """A customer id of the landing format no other test uses (its log rows are its own)."""
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(5))
    return f"{secrets.randbelow(10_000):04d}-{letters}"


def _naming(version: str) -> Any:
    return lambda reply: reply.version == version


def _runs(values: list[str | None]) -> list[str | None]:
    """``values`` with repeats in a row collapsed: [a, a, b, a] gives [a, b, a]."""
    return [value for index, value in enumerate(values) if index == 0 or values[index - 1] != value]


def _settings(platform: api.ServingPlatform, home: Path, database_url: str) -> dict[str, str]:
    """What a server needs to answer from ``platform``'s warehouse and MLflow store."""
    return {
        "RETENTION_DATABASE_URL": database_url,
        "RETENTION_HOME_DIR": str(home),
        "RETENTION_MLFLOW_DATABASE": platform.settings.mlflow_database,
        # The access log names customers by a keyed pseudonym: a server needs the key.
        "RETENTION_PSEUDONYM_KEY": pseudonym_key(platform.settings).decode(),
    }


def _with_port(url: str, port: int) -> str:
    """``url`` on loopback port ``port`` (its user, password and database kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"{LOOPBACK}:{port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{address}" if credentials else address))


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _forget_counts(key: api.IssuedKey) -> None:
    """Remove what the rate limiter counted for ``key`` (and only that)."""
    store = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    for name in store.scan_iter(f"LIMITS:*key:{key.key_id}/*"):
        store.delete(name)


def _predictions_per_worker(tmp: Path) -> dict[str, float]:
    """/v1/predict requests each worker answered, from the metric files each writes."""
    counted = {}
    for path in tmp.glob("retention-api-metrics-*/counter_*.db"):
        families = MultiProcessCollector.merge([str(path)], accumulate=False)
        counted[path.stem.removeprefix("counter_")] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "retention_api_requests_total"
            and sample.labels.get("route") == "/v1/predict"
        )
    return counted


def _dropped_rows(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    return api.metric_value(text, "retention_api_prediction_log_rows_dropped_total")


def _logged_rows(url: str, customer_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"select count(*) from {PREDICTION_LOG} where customer_id = %s", (customer_id,)
        ).fetchone()
    return int(row[0]) if row else 0
