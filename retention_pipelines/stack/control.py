"""``retention stack up|status|down``: start the stack in the background, say how each service
is, and stop it all.

``up`` prepares Postgres (the embedded server started if that is where the platform's data
lives, the warehouse migrated), writes the Dagster instance, the workspace and Prometheus'
config, then starts each service as the leader of a session of its own (its log under
``logs/<service>.log``), a service that depends on another once that one is healthy, and
waits until every one is ready or degraded. Each process is written to ``state.json`` as it
starts (pid, start time, host), so that ``status`` and ``down``, later commands of their own,
find exactly those processes and no other that reused a pid. A service already running is
kept: ``up`` again starts only what is missing.

``down`` stops every service within ``STOP_TIMEOUT_S`` seconds: SIGTERM to each one's
process group, then SIGKILL to whatever is left of its session, group or descendants (a
process that moved to a group of its own, or whose parent has ended); and the embedded
Postgres, when ``up`` started it.
"""

from __future__ import annotations

import fcntl
import json
import shlex
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from retention_pipelines.core import database
from retention_pipelines.core.processes import (
    ProcessName,
    is_gone,
    process_name,
    start_session,
    stop_services,
)
from retention_pipelines.settings import RetentionSettings
from retention_pipelines.stack import health as health_checks
from retention_pipelines.stack.health import Health, Level
from retention_pipelines.stack.services import (
    HealthCheck,
    StackFiles,
    StackService,
    service_environment,
    stack_services,
    write_configs,
)

# SIGTERM's grace, then SIGKILL: every service ends within the bound (compose's own default
# grace is 10 s).
TERM_GRACE_S: Final = 10.0
STOP_TIMEOUT_S: Final = 15.0
POLL_S: Final = 0.5
LOG_TAIL_LINES: Final = 15
STATE_VERSION: Final = 1
WIDE_COLUMNS: Final = 140
_COLOURS: Final = {
    Level.READY: "green",
    Level.DEGRADED: "yellow",
    Level.STARTING: "yellow",
    Level.DOWN: "red",
}


class StackError(RuntimeError):
    """The stack cannot be started or stopped as asked; the message says why."""


# --- the state file -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunningService:
    """A service ``up`` started: its first process (a session leader) and how to reach it."""

    name: str
    pid: int
    started: str | None  # start time of the process, in clock ticks after boot (/proc)
    host: str
    started_at: float  # Unix time
    url: str
    health: HealthCheck
    log: str
    what: str = ""

    @property
    def process(self) -> ProcessName:
        return ProcessName(self.host, self.pid, self.started)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunningService:
        return cls(**{**data, "health": HealthCheck(**data["health"])})


@dataclass(frozen=True)
class DatabaseInfo:
    """The Postgres the stack runs on: ``server`` (RETENTION_DATABASE_URL) or ``embedded``."""

    kind: str
    shown_url: str  # password masked
    dagster_database: str
    pgdata: str | None = None
    # Whether ``up`` started the embedded server (then ``down`` stops it).
    started_by_stack: bool = False


@dataclass
class StackState:
    database: DatabaseInfo | None = None
    services: dict[str, RunningService] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "version": STATE_VERSION,
            "database": asdict(self.database) if self.database else None,
            "services": {name: asdict(service) for name, service in self.services.items()},
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StackState:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise StackError(f"the stack's state file is of another version: {data.get('version')}")
        return cls(
            database=DatabaseInfo(**data["database"]) if data.get("database") else None,
            services={
                name: RunningService.from_json(service)
                for name, service in (data.get("services") or {}).items()
            },
        )


def read_state(files: StackFiles) -> StackState | None:
    if not files.state.exists():
        return None
    return StackState.from_json(files.state.read_text(encoding="utf-8"))


def write_state(files: StackFiles, state: StackState) -> None:
    """Replace the state file at once: a command killed meanwhile leaves the old or the new."""
    files.root.mkdir(parents=True, exist_ok=True)
    partial = files.state.with_suffix(".json.partial")
    partial.write_text(state.to_json(), encoding="utf-8")
    partial.replace(files.state)


@contextmanager
def _one_command_at_a_time(files: StackFiles) -> Iterator[None]:
    """Two ``up`` or ``down`` at once would start services twice or stop half of them."""
    files.root.mkdir(parents=True, exist_ok=True)
    with (files.root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as busy:
            raise StackError("another `retention stack` command is running") from busy
        yield


def _check_host(state: StackState) -> None:
    here = socket.gethostname()
    for service in state.services.values():
        if service.host != here:
            raise StackError(
                f"the stack in this folder was started on {service.host}: run the command there"
            )


# --- up -----------------------------------------------------------------------------------


def up(settings: RetentionSettings, console: Console) -> int:
    """Start what of the stack is not running and wait until every service serves; the exit
    code (1 when a service ended or did not answer in time, its log's tail printed)."""
    files = StackFiles(settings.stack_dir)
    with _one_command_at_a_time(files):
        state = running_state(files)
        services = stack_services(settings, files)
        to_start = [service for service in services if service.name not in state.services]
        _refuse_missing_programs(to_start)
        _refuse_busy_ports(to_start)
        with console.status("preparing Postgres, the Dagster instance and the configs ..."):
            state.database, dagster_url = _prepare(settings, state.database)
            write_configs(settings, files)
        console.print(f"Postgres ({state.database.kind}): {state.database.shown_url}",
                      soft_wrap=True, highlight=False)  # fmt: skip
        return start_and_wait(settings, files, state, services, console, dagster_url)


def running_state(files: StackFiles) -> StackState:
    """The state file's services still running (a fresh state where there is none)."""
    state = read_state(files) or StackState()
    _check_host(state)
    state.services = {
        name: running for name, running in state.services.items() if not is_gone(running.process)
    }
    return state


def start_and_wait(
    settings: RetentionSettings,
    files: StackFiles,
    state: StackState,
    services: Sequence[StackService],
    console: Console,
    dagster_database_url: str | None = None,
) -> int:
    """Start those of ``services`` that ``state`` has not running, each once what it depends
    on is healthy, and wait until every one serves; print where each is. The exit code."""
    if state.services:
        console.print(f"already running: {', '.join(state.services)}", highlight=False)
    to_start = [service for service in services if service.name not in state.services]
    write_state(files, state)
    waiter = _Waiter(settings, files, state, health_checks.Context(dagster_database_url))
    failure = waiter.run(services, to_start, console)
    if failure is not None:
        console.print(f"[red]{failure}[/red]", soft_wrap=True, highlight=False)
        console.print("`retention stack status` shows the others; `make stack-stop` stops them",
                      soft_wrap=True, highlight=False)  # fmt: skip
        return 1
    _print_services(console, services, files, waiter.health)
    return 0


def _refuse_missing_programs(services: Sequence[StackService]) -> None:
    """Before anything starts: a program that is not installed would fail one service late."""
    missing = [
        f"{program} (for {service.name})"
        for service in services
        for program in _programs(service.command)
        if not (Path(program).is_file() or shutil.which(program))
    ]
    if missing:
        raise StackError(
            f"not installed: {', '.join(missing)}. The platform's commands come with "
            "`make install`; Prometheus with Debian's package (`apt-get install prometheus`)"
        )


def _programs(command: Sequence[str]) -> list[str]:
    """The programs a command runs: its first word, and those a shell wrapper runs."""
    if Path(command[0]).name == "sh" and "-c" in command:
        return [command[0], *command[command.index("-c") + 2 : command.index("-c") + 4]]
    return [command[0]]


def _refuse_busy_ports(services: Sequence[StackService]) -> None:
    """Before anything starts: a port another program holds would fail one service late."""
    busy = [
        f"{service.name} ({service.port})"
        for service in services
        if service.port is not None and not _port_free(service.port)
    ]
    if busy:
        raise StackError(
            f"ports in use by another program: {', '.join(busy)}; stop it, or give the stack "
            "other ports (RETENTION_API_PORT, RETENTION_DAGSTER_PORT, ... see the README)"
        )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def _prepare(settings: RetentionSettings, before: DatabaseInfo | None) -> tuple[DatabaseInfo, str]:
    """Postgres found (the embedded server started when it is the platform's), the warehouse
    migrated, the Dagster database there and the instance written: what every service finds
    at start. Returns the database's description and the Dagster database's URL."""
    from retention_pipelines.instance import write_local_instance  # noqa: PLC0415

    pgdata = settings.embedded_pgdata
    embedded_before = settings.database_url is None and _embedded_server_url(pgdata) is not None
    warehouse = database.settings_database_url(settings)
    database.ensure_database(warehouse, settings.dagster_database)
    write_local_instance(settings)
    dagster_url = database.with_database(warehouse, settings.dagster_database)
    if settings.database_url:
        info = DatabaseInfo("server", database.masked_url(warehouse), settings.dagster_database)
    else:
        started_by_stack = not embedded_before or bool(before and before.started_by_stack)
        info = DatabaseInfo(
            "embedded",
            database.masked_url(warehouse),
            settings.dagster_database,
            pgdata=str(pgdata.resolve()),
            started_by_stack=started_by_stack,
        )
    return info, dagster_url


class _Waiter:
    """Starts services as what they depend on becomes healthy, and waits for them all."""

    def __init__(
        self,
        settings: RetentionSettings,
        files: StackFiles,
        state: StackState,
        context: health_checks.Context,
    ) -> None:
        self.settings = settings
        self.files = files
        self.state = state
        self.context = context
        self.health: dict[str, Health] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def run(
        self, services: Sequence[StackService], to_start: Sequence[StackService], console: Console
    ) -> str | None:
        """Start ``to_start`` and wait for every one of ``services``; None, or what failed."""
        pending = list(to_start)
        began = time.monotonic()
        deadline = began + self.settings.stack_ready_timeout_s
        columns = (SpinnerColumn(), TextColumn("{task.description:<28}"),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            tasks = {
                service.name: progress.add_task(service.name, status="waiting")
                for service in services
            }
            while True:
                for service in self._startable(pending):
                    pending.remove(service)
                    self._start(service)
                failure = self._look(services, progress, tasks, began)
                if failure is not None:
                    return failure
                if not pending and all(self._settled(service) for service in services):
                    return None
                if time.monotonic() > deadline:
                    return self._late(services)
                time.sleep(POLL_S)

    def _settled(self, service: StackService) -> bool:
        found = self.health.get(service.name)
        return found is not None and found.settled

    def _startable(self, pending: Sequence[StackService]) -> list[StackService]:
        return [
            service
            for service in pending
            if all(self.health.get(need, Health(Level.DOWN)).settled for need in service.depends_on)
        ]

    def _start(self, service: StackService) -> None:
        log = self.files.log(service.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as header:
            command = shlex.join(service.command).replace("\n", "\\n")
            header.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} "
                         f"retention stack up: {command}\n")  # fmt: skip
        environment = {**service_environment(self.settings), **service.env}
        process, opened = start_session(service.command, log, env=environment, cwd=service.cwd)
        opened.close()  # the child holds its own copy
        self.processes[service.name] = process
        name = process_name(process.pid)
        self.state.services[service.name] = RunningService(
            name=service.name,
            pid=process.pid,
            started=name.started,
            host=name.host,
            started_at=time.time(),
            url=service.url,
            health=service.health,
            log=str(log),
            what=service.what,
        )
        write_state(self.files, self.state)

    def _look(
        self,
        services: Sequence[StackService],
        progress: Progress,
        tasks: dict[str, Any],
        began: float,
    ) -> str | None:
        """Ask each started, unsettled service how it is; what failed, if one has ended."""
        for service in services:
            running = self.state.services.get(service.name)
            if running is None or self._settled(service):
                continue
            if is_gone(running.process):
                return self._ended(running)
            context = health_checks.Context(self.context.dagster_database_url, running.started_at)
            found = health_checks.check(running.health, context)
            self.health[service.name] = found
            status = _describe(found) if found.level != Level.DOWN else "starting"
            progress.update(tasks[service.name], status=status)
            if found.settled:
                progress.stop_task(tasks[service.name])
                seconds = time.monotonic() - began
                progress.console.print(f"{service.name:<28}{seconds:>5.0f} s  {_describe(found)}",
                                       highlight=False, soft_wrap=True)  # fmt: skip
        return None

    def _ended(self, running: RunningService) -> str:
        process = self.processes.get(running.name)
        code = process.poll() if process is not None else None
        how = f"exited with code {code}" if code is not None else "is no longer running"
        return f"{running.name} {how} (log: {running.log})\n{_tail(Path(running.log))}"

    def _late(self, services: Sequence[StackService]) -> str:
        late = [service for service in services if not self._settled(service)]
        lines = []
        for service in late:
            found = self.health.get(service.name)
            detail = (
                _describe(found)
                if found
                else "not started: waits for " + ", ".join(service.depends_on)
            )
            lines.append(f"{service.name}: {detail} (log: {self.files.log(service.name)})")
        timeout = self.settings.stack_ready_timeout_s
        return f"not ready within {timeout:.0f} s (RETENTION_STACK_READY_TIMEOUT_S):\n" + "\n".join(
            lines
        )


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"  {line}" for line in lines[-LOG_TAIL_LINES:])


def _describe(found: Health) -> str:
    colour = _COLOURS[found.level]
    detail = f": {found.detail}" if found.detail else ""
    return f"[{colour}]{found.level}[/{colour}]{detail}"


def _print_services(
    console: Console,
    services: Sequence[StackService],
    files: StackFiles,
    health: dict[str, Health],
) -> None:
    table = Table(title="The stack")
    table.add_column("service", no_wrap=True)
    table.add_column("url", no_wrap=True)
    table.add_column("health")
    wide = console.width >= WIDE_COLUMNS  # room to say what each one is for
    if wide:
        table.add_column("what")
    for service in services:
        found = health.get(service.name)
        row = [service.name, service.url or "-", _describe(found) if found else "-"]
        table.add_row(*row, *([service.what] if wide else []))
    for service in services:
        found = health.get(service.name)
        if found is not None and found.level == Level.DEGRADED and service.when_degraded:
            console.print(f"[yellow]{service.name}[/yellow]: {service.when_degraded}",
                          soft_wrap=True, highlight=False)  # fmt: skip
    console.print(table)
    console.print(
        f"logs: {files.logs}/<service>.log; `retention stack status` checks them again; "
        "`make stack-stop` stops everything",
        soft_wrap=True,
        highlight=False,
    )


# --- status -------------------------------------------------------------------------------


def status(settings: RetentionSettings, console: Console) -> int:
    """A table of each service, its pid, URL and health; 1 when any is not serving."""
    files = StackFiles(settings.stack_dir)
    state = read_state(files)
    if state is None or not state.services:
        console.print("the stack is not running (`make stack` starts it)")
        return 1
    _check_host(state)
    table = Table(title=f"The stack ({files.root})")
    for column in ("service", "pid", "url"):
        table.add_column(column, no_wrap=True)
    table.add_column("health")
    postgres, server_url = _postgres_row(settings, state.database)
    rows = [postgres]
    dagster_url = (
        database.with_database(server_url, state.database.dagster_database)
        if server_url and state.database
        else None
    )
    order = [service.name for service in stack_services(settings, files)]
    listed = sorted(state.services.values(), key=lambda running: _rank(order, running.name))
    rows += [_service_row(running, dagster_url) for running in listed]
    for name, pid, url, found in rows:
        table.add_row(name, pid, url, _describe(found))
    console.print(table)
    return 0 if all(found.settled for *_, found in rows) else 1


def _rank(order: list[str], name: str) -> int:
    """A service's place in the stack's own order (one no longer in it, last)."""
    return order.index(name) if name in order else len(order)


def _service_row(running: RunningService, dagster_url: str | None) -> tuple[str, str, str, Health]:
    if is_gone(running.process):
        found = Health(Level.DOWN, f"not running (log: {running.log})")
        return running.name, "-", running.url or "-", found
    context = health_checks.Context(dagster_url, running.started_at)
    found = health_checks.check(running.health, context)
    return running.name, str(running.pid), running.url or "-", found


def _postgres_row(
    settings: RetentionSettings, info: DatabaseInfo | None
) -> tuple[tuple[str, str, str, Health], str | None]:
    """The Postgres row, and the server's URL when it can be reached (never starting the
    embedded server: status only looks)."""
    if info is None:
        return ("postgres", "-", "-", Health(Level.DOWN, "not prepared")), None
    if info.kind == "server":
        url = settings.database_url
        why = "RETENTION_DATABASE_URL is not set in this shell"
        return ("postgres", "external", info.shown_url, health_checks.check_postgres(url, why)), url
    pgdata = Path(info.pgdata or settings.embedded_pgdata)
    url = _embedded_server_url(pgdata)
    pid = _embedded_server_pid(pgdata) if url else None
    found = health_checks.check_postgres(url, f"the embedded server in {pgdata} is not running")
    return ("postgres", str(pid or "-"), info.shown_url, found), url


def _embedded_server_url(pgdata: Path) -> str | None:
    """The running embedded server's URL (None when it does not run), without starting it."""
    info = _postmaster(pgdata)
    if info is None or not info.is_running():
        return None
    return str(info.get_uri("postgres", "postgres"))


def _embedded_server_pid(pgdata: Path) -> int | None:
    info = _postmaster(pgdata)
    return int(info.pid) if info is not None else None


def _postmaster(pgdata: Path) -> Any:
    if not (pgdata / "postmaster.pid").exists():
        return None
    with warnings.catch_warnings():  # pgserver's import asks for a runtime folder it never uses
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo  # noqa: PLC0415

    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # being written by a starting server
        return None


# --- down ---------------------------------------------------------------------------------


def down(settings: RetentionSettings, console: Console) -> int:
    """Stop every service within the bound and, when ``up`` started it, the embedded
    Postgres; 1 when a process is still running after all."""
    files = StackFiles(settings.stack_dir)
    with _one_command_at_a_time(files):
        state = read_state(files)
        if state is None or not state.services:
            console.print("the stack is not running: nothing to stop")
            return 0
        _check_host(state)
        leaders = {name: running.process for name, running in state.services.items()}
        with console.status(f"stopping {len(leaders)} services ..."):
            report = stop_services(
                leaders, term_grace_s=TERM_GRACE_S, stop_timeout_s=STOP_TIMEOUT_S
            )
        console.print(report.describe(), soft_wrap=True, highlight=False)
        if report.left:
            console.print("[red]some processes did not stop: see the pids above[/red]")
            return 1
        _stop_embedded(state.database, console)
        files.state.unlink()
    return 0


def _stop_embedded(info: DatabaseInfo | None, console: Console) -> None:
    if info is None or info.kind != "embedded" or info.pgdata is None:
        return
    if not info.started_by_stack:
        console.print("the embedded Postgres keeps running: it ran before the stack "
                      "(`make db-stop` stops it)", highlight=False)  # fmt: skip
        return
    if database.stop_embedded_server(Path(info.pgdata)):
        console.print("embedded Postgres stopped (the stack started it)", highlight=False)
