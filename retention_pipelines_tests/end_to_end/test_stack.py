"""``make stack`` as a person runs it, and what it leaves when stopped: nothing.

The fast tests drive the stack's lifecycle (start in order, wait, status, stop) on small HTTP
servers standing in for the services, one of which leaves a process behind in a group of its
own after its first process was killed. The slow test runs the real stack with ``retention
stack up`` on a throwaway warehouse and free ports, drives the API, reads every Grafana
panel's and alert rule's PromQL from the stack's own Prometheus, and stops it all with
``retention stack down``.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from retention_pipelines.core.processes import (
    ProcessName,
    is_gone,
    process_name,
    service_processes,
)
from retention_pipelines.settings import RetentionSettings
from retention_pipelines.stack import control
from retention_pipelines.stack.control import DatabaseInfo, StackState
from retention_pipelines.stack.services import HealthCheck, StackFiles, StackService
from retention_pipelines_tests.serving.processes import free_port

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes in /proc")

# An HTTP server that first starts a child in a process group of its own and passes SIGTERM
# on to it (what `retention dashboard` does with Streamlit), and says the child's pid; it
# answers after ``delay`` seconds.
SERVER = textwrap.dedent(
    """
    import http.server, signal, subprocess, sys, time
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             process_group=0)
    def stop(number, frame):
        child.terminate()
        child.wait()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("child", child.pid, flush=True)
    time.sleep(delay)
    handler = http.server.SimpleHTTPRequestHandler
    http.server.HTTPServer(("127.0.0.1", port), handler).serve_forever()
    """
)


def _server(name: str, *, delay_s: float = 0.0, depends_on: tuple[str, ...] = ()) -> StackService:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return StackService(
        name=name,
        command=[sys.executable, "-c", SERVER, str(port), str(delay_s)],
        health=HealthCheck("http", f"{url}/"),
        url=url,
        port=port,
        depends_on=depends_on,
    )


def _exits(name: str, code: int) -> StackService:
    return StackService(
        name=name,
        command=[sys.executable, "-c", f"print('giving up', flush=True); raise SystemExit({code})"],
        health=HealthCheck("http", "http://127.0.0.1:1/"),
        url="",
    )


def _output() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=200), text


@pytest.fixture
def stack_settings(tmp_path: Path, server_url: str) -> RetentionSettings:
    return RetentionSettings(
        home_dir=tmp_path / "home", database_url=server_url, stack_ready_timeout_s=30
    )


def _state(server_url: str) -> StackState:
    return StackState(database=DatabaseInfo("server", "the test server", "dagster"))


def _child_of(log: str) -> ProcessName:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if found := re.search(r"^child (\d+)$", Path(log).read_text(), re.MULTILINE):
            return process_name(int(found[1]))
        time.sleep(0.05)
    raise AssertionError(f"no child in {log}")


def test_up_starts_each_service_once_what_it_depends_on_answers_and_down_leaves_nothing(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    first = _server("first", delay_s=1.0)
    second = _server("second", depends_on=("first",))
    console, printed = _output()

    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [first, second], console
    )
    assert code == 0, printed.getvalue()
    state = control.read_state(files)
    assert state is not None and list(state.services) == ["first", "second"]
    # `second` was started only once `first` answered, a second after its start.
    assert state.services["second"].started_at - state.services["first"].started_at >= 1.0
    text = printed.getvalue()
    assert first.url in text and second.url in text and "ready" in text
    assert "logs/<service>.log" in text
    leaders = {name: running.process for name, running in state.services.items()}
    processes = {
        process_name(pid) for leader in leaders.values() for pid in service_processes(leader)
    }
    assert len(processes) == 4  # each server and its child

    console, printed = _output()
    assert control.status(stack_settings, console) == 0, printed.getvalue()
    assert str(state.services["first"].pid) in printed.getvalue()

    console, printed = _output()
    began = time.monotonic()
    assert control.down(stack_settings, console) == 0, printed.getvalue()
    assert time.monotonic() - began < control.STOP_TIMEOUT_S
    assert all(is_gone(process) for process in processes)
    assert "first: 2 processes stopped; second: 2 processes stopped" in printed.getvalue()
    assert not files.state.exists()
    console, printed = _output()
    assert control.status(stack_settings, console) == 1
    assert "not running" in printed.getvalue()


def test_a_service_whose_first_process_died_is_down_and_down_still_stops_what_it_left(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    console, printed = _output()
    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [_server("crashing")], console
    )
    assert code == 0, printed.getvalue()
    running = control.read_state(files).services["crashing"]  # type: ignore[union-attr]
    orphan = _child_of(running.log)  # in a group of its own, outliving its parent
    os.kill(running.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not is_gone(running.process) and time.monotonic() < deadline:
        time.sleep(0.05)

    console, printed = _output()
    assert control.status(stack_settings, console) == 1
    assert "down: not running" in printed.getvalue()
    assert not is_gone(orphan)

    console, printed = _output()
    assert control.down(stack_settings, console) == 0, printed.getvalue()
    assert is_gone(orphan)
    assert "crashing: 1 process stopped" in printed.getvalue()


def test_a_service_that_exits_while_starting_fails_up_with_its_log(
    stack_settings: RetentionSettings, server_url: str
) -> None:
    files = StackFiles(stack_settings.stack_dir)
    serving = _server("serving")
    console, printed = _output()
    code = control.start_and_wait(
        stack_settings, files, _state(server_url), [serving, _exits("broken", 3)], console
    )
    text = printed.getvalue()
    assert code == 1
    assert f"broken exited with code 3 (log: {files.log('broken')})" in text
    assert "giving up" in text  # the log's tail
    assert "make stack-stop" in text
    console, printed = _output()
    assert control.down(stack_settings, console) == 0
    assert "serving: 2 processes stopped" in printed.getvalue()


def test_up_refuses_a_port_another_program_holds_before_starting_anything(
    stack_settings: RetentionSettings,
) -> None:
    import socket  # noqa: PLC0415

    taken = _server("api")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken.port or 0))
        holder.listen()
        with pytest.raises(control.StackError, match=rf"api \({taken.port}\)"):
            control._refuse_busy_ports([_server("free"), taken])
