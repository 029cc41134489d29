"""A real ``retention serve`` for tests, and a way to take its database away.

:func:`start_serve` runs the command as a process of its own (a session of its own, so its
workers can be found and stopped with it) on a loopback port, its output in a file;
:class:`ServeProcess` waits for it and stops it the way a service manager does: SIGTERM, then
SIGKILL of whatever is left. :class:`TcpProxy` stands between a server and Postgres: cutting
it breaks every connection and refuses new ones, as a database that went away does, without
touching the server or Postgres.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

RETENTION: Final = Path(sys.executable).with_name("retention")
LOOPBACK: Final = "127.0.0.1"
# A server imports MLflow, pandas and XGBoost and loads the champion before it answers; on a
# busy CI host that takes a while.
STARTUP_TIMEOUT_S: Final = 180.0
_STARTED_LINE: Final = "Application startup complete."


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def serve_environment(
    settings: Mapping[str, str], bytecode_cache: Path | None = None
) -> dict[str, str]:
    """This process's environment without its own ``RETENTION_*`` settings, with ``settings``:
    the server reads only what the test gives it.

    Where this environment forbids writing bytecode beside the sources
    (``PYTHONDONTWRITEBYTECODE``), every server would compile MLflow, pandas and XGBoost
    afresh, which takes longer than anything the tests do; with ``bytecode_cache`` they keep
    their bytecode there instead, and a server started later imports what an earlier one
    compiled."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("RETENTION_")}
    if bytecode_cache is not None and kept.pop("PYTHONDONTWRITEBYTECODE", None):
        kept["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    return {**kept, **settings}


@dataclass
class ServeProcess:
    """A running ``retention serve`` and where it answers."""

    process: subprocess.Popen[bytes]
    port: int
    output: Path
    workers: int = 1

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output_text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_started(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until every worker has finished its startup (models loaded) and /ready
        answers 200: from then on any worker may take a request."""

        def started() -> bool:
            if self.output_text().count(_STARTED_LINE) < self.workers:
                return False
            with suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/ready", timeout=5).status_code == 200
            return False

        self.wait_for(started, timeout_s, "to start")

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail, with the server's output, if the server
        ends or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if not self.running:
                raise AssertionError(
                    f"retention serve exited ({self.process.returncode}) while waiting for it "
                    f"{what}:\n{self.output_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"retention serve did not come {what} in {timeout_s:.0f} s:\n"
                    f"{self.output_text()[-4000:]}"
                )
            time.sleep(0.1)

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM; once it has ended, or after ``grace_s``, SIGKILL of whatever of its
        session is left (its workers); then wait, so nothing of the server outlives the test.
        Returns the exit status of ``retention serve``."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        with suppress(ProcessLookupError):  # workers left by a server that did not stop
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        return self.process.returncode


def start_serve(
    settings: Mapping[str, str],
    output: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    bytecode_cache: Path | None = None,
) -> ServeProcess:
    """Start ``retention serve`` on a loopback port with ``settings`` (``RETENTION_*``), its
    stdout and stderr written to ``output``; it is not waited for (see ``wait_started``),
    so several servers start at once. ``bytecode_cache``: see :func:`serve_environment`."""
    port = port or free_port()
    command = [str(RETENTION), "serve", "--host", LOOPBACK, "--port", str(port)]
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=serve_environment(settings, bytecode_cache),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServeProcess(process, port, output, workers)


@dataclass
class TcpProxy:
    """Forwards connections from a loopback port to ``target``, until cut."""

    target: tuple[str, int]
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _accepting: threading.Event = field(default_factory=threading.Event)
    _connections: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Listen (again) on ``port`` and forward what comes."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # so the accepting thread notices a cut
        with self._lock:
            self._listener = listener
        self._accepting.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def restore(self) -> None:
        """Accept connections again, on the same port, after :meth:`cut`."""
        self.start()

    def cut(self) -> None:
        """Stop listening (a new connection is refused) and break every open connection."""
        self._accepting.clear()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            connections, self._connections = self._connections, set()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by cut()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for end in (client, upstream):
                end.settimeout(None)
            with self._lock:
                if listener is not self._listener:  # cut while this one was being accepted
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way until either end closes or is cut, then close both ends."""
        with suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        with self._lock:
            self._connections.difference_update((source, sink))
