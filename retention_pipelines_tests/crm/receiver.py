"""A CRM webhook receiver on loopback, as a receiving CRM would be written, with the failures
the dispatcher must survive switched on per test.

It verifies each request's signature (401 when it does not match), answers the first requests
with 503 (one of them with ``Retry-After``), refuses the requests holding chosen customers with
400, hangs past the client's timeout on others, and honours the ``Idempotency-Key``: a request
whose key it has seen is answered as before and changes nothing. It records every request it
saw and every task it accepted.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from retention_pipelines.core.crm import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)


@dataclass(frozen=True)
class Request:
    """A request as the receiver saw it."""

    at: float
    idempotency_key: str
    customers: tuple[str, ...]
    status: int


@dataclass
class Behaviour:
    """What the receiver does; tests change it between dispatches."""

    unavailable_first: int = 0  # the first requests answered 503
    retry_after: dict[int, str] = field(default_factory=dict)  # request number -> Retry-After
    refuse: set[str] = field(default_factory=set)  # customers whose request gets 400
    hang: set[str] = field(default_factory=set)  # customers whose request never gets an answer
    hang_s: float = 1.0
    hold: int | None = None  # the accepted request (1-based) held until `release` is set


class Receiver:
    def __init__(self, secret: bytes, behaviour: Behaviour | None = None) -> None:
        self.secret = secret
        self.behaviour = behaviour or Behaviour()
        self.requests: list[Request] = []
        self.accepted: Counter[str] = Counter()  # task idempotency key -> times accepted
        self.accepted_customers: set[str] = set()
        self.repeated: list[str] = []  # Idempotency-Keys seen again
        self.authorization: str | None = None  # the last signed request's Authorization
        self.holding = threading.Event()
        self.release = threading.Event()
        self._seen: set[str] = set()
        self._accepted_requests = 0
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/crm"

    def statuses(self) -> list[int]:
        return [request.status for request in self.requests]

    def requests_holding(self, customer_id: str) -> list[Request]:
        return [request for request in self.requests if customer_id in request.customers]

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body of the answer to one request."""
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        if not verify_signature(
            self.secret,
            body,
            headers.get(TIMESTAMP_HEADER.lower()),
            headers.get(SIGNATURE_HEADER.lower()),
        ):
            return self._log(key, (), 401, b'{"error": "bad signature"}')
        self.authorization = headers.get("authorization")
        tasks = json.loads(body)["tasks"]
        customers = tuple(task["customer_id"] for task in tasks)
        behaviour = self.behaviour
        with self._lock:
            number = len(self.requests) + 1
        if number <= behaviour.unavailable_first:
            retry_after = behaviour.retry_after.get(number)
            extra = {"Retry-After": retry_after} if retry_after else {}
            return self._log(key, customers, 503, b'{"error": "busy"}', extra)
        if refused := set(customers) & behaviour.refuse:
            text = json.dumps({"error": f"unknown to the CRM: {', '.join(sorted(refused))}"})
            return self._log(key, customers, 400, text.encode())
        if set(customers) & behaviour.hang:
            self._log(key, customers, 0, b"")
            time.sleep(behaviour.hang_s)
            return 504, {}, b""
        return self._accept(key, tasks, customers)

    def _accept(
        self, key: str, tasks: list[dict[str, object]], customers: tuple[str, ...]
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if key in self._seen:
                self.repeated.append(key)
                return self._log(key, customers, 200, b'{"duplicate": true}')
            self._seen.add(key)
            for task in tasks:
                self.accepted[str(task["idempotency_key"])] += 1
            self.accepted_customers.update(customers)
            self._accepted_requests += 1
            held = self._accepted_requests == self.behaviour.hold
        answer = self._log(key, customers, 200, b'{"accepted": true}')
        if held:
            self.holding.set()
            self.release.wait(timeout=120)
        return answer

    def _log(
        self,
        key: str,
        customers: tuple[str, ...],
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(Request(time.monotonic(), key, customers, status))
        return status, headers or {}, body

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, answer = receiver.answer(headers, body)
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up (a timeout) or was killed
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
