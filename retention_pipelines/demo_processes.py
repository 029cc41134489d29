"""What ``make demo`` serves after its runs: the Dagster UI (``dagster dev``) and the
dashboard (``retention dashboard``), watched by a small supervisor.

Each service runs in a session and process group of its own, so that everything it starts
(the webserver, the daemon and the code server under ``dagster dev``) can be stopped
together by signalling the group, and so that Ctrl-C in the terminal reaches the demo alone,
which then stops the services in order. Stopping is SIGTERM to each group, a wait, then
SIGKILL to what is left of the groups and of what the services started outside them
(Streamlit, under ``retention dashboard``): within ``STOP_TIMEOUT_S`` seconds, whatever the
services do with SIGTERM.

A service counts as ready when its health URL answers 200 (the webserver's ``/server_info``,
Streamlit's ``/_stcore/health``). When a service ends on its own, the other is stopped and
the demo exits non-zero, naming the service's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from rich.console import Console

from retention_pipelines.core.processes import (
    StopReport,
    answers,
    executable,
    process_name,
    service_processes,
    start_session,
    stop_services,
)
from retention_pipelines.settings import PROJECT_ROOT, RetentionSettings

__all__ = ["STOP_TIMEOUT_S", "Service", "ServiceError", "StopReport", "Supervisor", "supervise"]

# Ctrl-C to the last process gone: the promise. SIGTERM gets the most of it.
STOP_TIMEOUT_S = 10.0
TERM_GRACE_S = 7.0
# A first `dagster dev` loads the definitions and the dbt manifest on a busy 2-core machine.
READY_TIMEOUT_S = 240.0
POLL_S = 0.2


@dataclass(frozen=True)
class Service:
    """A process the demo starts and what says it is serving."""

    name: str
    command: Sequence[str]
    # Answers 200 once the service serves; what a person opens is ``url``.
    health_url: str
    url: str
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # What to look at there, for the person who opens it.
    look_at: str = ""


class ServiceError(RuntimeError):
    """A service ended on its own, or never answered: the demo cannot go on."""

    def __init__(self, service: Service, reason: str) -> None:
        super().__init__(f"{service.name} {reason} (log: {service.log_path})")
        self.service = service


@dataclass
class _Running:
    service: Service
    process: subprocess.Popen[bytes]
    log: IO[bytes]


class Supervisor:
    """Starts services in their own process groups, waits until they answer, watches them,
    and stops them all."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        term_grace_s: float = TERM_GRACE_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        if term_grace_s >= stop_timeout_s:
            raise ValueError("SIGTERM's grace must leave time for SIGKILL within the timeout")
        self.services = list(services)
        self.term_grace_s = term_grace_s
        self.stop_timeout_s = stop_timeout_s
        self.running: list[_Running] = []
        # The signal that asked to stop (its name), set by :meth:`signals_handled`.
        self.stop_requested = threading.Event()
        self.stop_signal: str | None = None

    def start(self) -> None:
        for service in self.services:
            process, log = start_session(
                service.command, service.log_path, env=service.env, cwd=service.cwd
            )
            self.running.append(_Running(service, process, log))

    def pids(self) -> dict[str, int]:
        """Each started service's process (the leader of its group)."""
        return {run.service.name: run.process.pid for run in self.running}

    def processes(self) -> set[int]:
        """Every process the services run now: their sessions and groups, and what they
        started elsewhere."""
        found: set[int] = set()
        for run in self.running:
            found |= service_processes(process_name(run.process.pid))
        return found

    def wait_ready(
        self, timeout_s: float = READY_TIMEOUT_S, on_ready: Callable[[Service], None] | None = None
    ) -> bool:
        """Wait until every service answers its health URL; False when a stop was asked
        meanwhile. Raises :class:`ServiceError` for a service that ended or never answered."""
        waiting = list(self.running)
        deadline = time.monotonic() + timeout_s
        while waiting:
            if self.stop_requested.is_set():
                return False
            self._check_alive()
            for run in list(waiting):
                if answers(run.service.health_url):
                    waiting.remove(run)
                    if on_ready is not None:
                        on_ready(run.service)
            if waiting and time.monotonic() > deadline:
                raise ServiceError(
                    waiting[0].service,
                    f"did not answer {waiting[0].service.health_url} within {timeout_s:.0f} s",
                )
            if waiting:
                self.stop_requested.wait(POLL_S)
        return True

    def wait(self) -> None:
        """Until a stop is asked (returns) or a service ends on its own (raises
        :class:`ServiceError`)."""
        while not self.stop_requested.wait(POLL_S):
            self._check_alive()

    def _check_alive(self) -> None:
        for run in self.running:
            code = run.process.poll()
            if code is not None:
                raise ServiceError(run.service, f"exited with code {code}")

    def stop(self) -> StopReport:
        """Every service stopped by :func:`stop_services` within the stop timeout (SIGTERM
        to its group, SIGKILL after the grace to what is left of its session and of what it
        started), the services' own processes reaped as they end."""
        if not self.running:
            return StopReport()
        leaders = {run.service.name: process_name(run.process.pid) for run in self.running}

        def reap() -> None:
            for run in self.running:
                run.process.poll()

        report = stop_services(
            leaders, term_grace_s=self.term_grace_s, stop_timeout_s=self.stop_timeout_s, reap=reap
        )
        for run in self.running:
            run.log.close()
        self.running = []
        return report

    @contextmanager
    def signals_handled(self) -> Iterator[None]:
        """SIGINT and SIGTERM ask for a stop (noted, acted on by the waits) instead of
        interrupting whatever runs; a second one changes nothing. Main thread only."""

        def note(number: int, _frame: object) -> None:
            if self.stop_signal is None:
                self.stop_signal = signal.Signals(number).name
            self.stop_requested.set()

        previous = {
            number: signal.signal(number, note) for number in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)


# --- the demo's two services ---------------------------------------------------------------


def demo_services(
    settings: RetentionSettings, *, dagster_port: int, dashboard_port: int, stamp: str
) -> list[Service]:
    """``dagster dev`` on the local instance and ``retention dashboard``, logging under
    ``$RETENTION_HOME_DIR/logs``."""
    logs = settings.home_dir / "logs"
    environment = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    dagster = f"http://127.0.0.1:{dagster_port}"
    host = settings.dashboard_host
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    dashboard = f"http://{shown_host}:{dashboard_port}"
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    dagster_dev = [executable("dagster"), "dev", "-w", workspace, "-h", "127.0.0.1"]
    retention_dashboard = [executable("retention"), "dashboard", "--host", host]
    return [
        Service(
            name="Dashboard",
            command=[*retention_dashboard, "--port", str(dashboard_port)],
            health_url=f"{dashboard}/_stcore/health",
            url=dashboard,
            log_path=logs / f"demo-dashboard-{stamp}.log",
            env=environment,
            cwd=PROJECT_ROOT,
            look_at=(
                "the Call list first: today's customers by churn risk and why each one is at "
                "risk; then Customer, Trends and Model health"
            ),
        ),
        Service(
            name="Dagster UI",
            command=[*dagster_dev, "-p", str(dagster_port)],
            health_url=f"{dagster}/server_info",
            url=dagster,
            log_path=logs / f"demo-dagster-{stamp}.log",
            env=environment,
            # Not the project folder: Dagster's commands load ./.env over the environment,
            # and a .env there may name another DAGSTER_HOME than this demo's.
            cwd=settings.dagster_home,
            look_at=(
                f"Runs ({dagster}/runs): the demo's build, training and scoring runs; the "
                f"asset graph ({dagster}/asset-groups): what each run built"
            ),
        ),
    ]


def serve_demo(
    settings: RetentionSettings,
    *,
    dagster_port: int,
    dashboard_port: int,
    console: Console,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> int:
    """Serve the dashboard and the Dagster UI until SIGINT or SIGTERM; the exit code."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")  # the operator's clock
    services = demo_services(
        settings, dagster_port=dagster_port, dashboard_port=dashboard_port, stamp=stamp
    )
    console.print("\nstarting the dashboard and the Dagster UI ...", highlight=False)
    return supervise(services, console=console, ready_timeout_s=ready_timeout_s)


def supervise(
    services: Sequence[Service],
    *,
    console: Console,
    ready_timeout_s: float = READY_TIMEOUT_S,
    supervisor: Supervisor | None = None,
) -> int:
    """Start ``services``, say where each one is as soon as it answers (the dashboard is
    usually up well before the Dagster UI has loaded the code location), and keep them until
    SIGINT or SIGTERM (exit code 0) or until one of them fails (1, with its log); then stop
    them all, and say so."""
    supervisor = supervisor or Supervisor(services)
    width = max(len(service.name) for service in services) + 2

    def ready(service: Service) -> None:
        look_at = f"\n  {service.look_at}" if service.look_at else ""
        console.print(f"{service.name:<{width}}{service.url}{look_at}", soft_wrap=True,
                      highlight=False)  # fmt: skip

    code = 0
    with supervisor.signals_handled():
        try:
            supervisor.start()
            if supervisor.wait_ready(ready_timeout_s, on_ready=ready):
                logs = ", ".join(str(service.log_path) for service in services)
                console.print(f"logs: {logs}\nCtrl-C stops everything the demo started.",
                              soft_wrap=True, highlight=False)  # fmt: skip
                supervisor.wait()
        except ServiceError as failed:
            console.print(f"[red]{failed}[/red]", soft_wrap=True, highlight=False)
            code = 1
        finally:
            report = supervisor.stop()
    why = f" ({supervisor.stop_signal})" if supervisor.stop_signal else ""
    console.print(f"stopped{why}: {report.describe()}", soft_wrap=True, highlight=False)
    return 1 if report.left else code
