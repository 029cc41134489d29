"""Which process ran something, whether it still runs, and stopping the processes a process
started: what the command line needs to leave no run behind when it is killed or stopped, and
what the demo and the local stack need to start services and stop every process of them.

A process is named by its host, its pid and its start time: a pid alone is reused once the
process is gone, so a recorded pid whose start time differs is another process. Start times
come from ``/proc`` (Linux); elsewhere only whether the pid is alive is known.

A service runs in a session of its own, whose id is its first process's pid: what it starts
stays in that session, even in another process group (Streamlit under ``retention
dashboard``) or once its parent is gone, unless it starts a session itself. Linux does not give
a pid to a new process while a session or group still bears it, so the members of a service's
session are its processes even after the first one has ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PROC = Path("/proc")
# Fields of /proc/<pid>/stat after the ")" that closes the command name.
_STATE, _PPID, _PGRP, _SESSION, _STARTTIME = 0, 1, 2, 3, 19
# Health checks never go through a proxy from the environment: the services are local.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ProcessName:
    host: str
    pid: int
    # Clock ticks after boot at which the process started (/proc/<pid>/stat), where known.
    started: str | None = None


def this_process() -> ProcessName:
    return process_name(os.getpid())


def process_name(pid: int) -> ProcessName:
    """``pid`` of this host, with its start time where ``/proc`` tells it."""
    return ProcessName(socket.gethostname(), pid, _started(pid))


def is_gone(process: ProcessName) -> bool:
    """Whether ``process``, of this host, has ended: its pid is free, a zombie, or another
    process's (a different start time). A process of another host is never known gone."""
    if process.host != socket.gethostname():
        return False
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    stat = _stat(process.pid)
    if stat is None:  # no /proc: alive is all that is known
        return False
    return stat[_STATE] == "Z" or (
        process.started is not None and stat[_STARTTIME] != process.started
    )


def descendants(pid: int) -> set[int]:
    """The processes ``pid`` started, and theirs, from ``/proc`` (none where there is none)."""
    return _descendants_in(_process_table(), pid)


def group_members(group: int) -> set[int]:
    """The processes of process group ``group`` still running or not yet reaped, from
    ``/proc`` (none where there is none)."""
    return {pid for pid, stat in _process_table().items() if int(stat[_PGRP]) == group}


def session_members(session: int) -> set[int]:
    """The processes of session ``session`` still running or not yet reaped, whatever their
    process group, from ``/proc`` (none where there is none)."""
    return {pid for pid, stat in _process_table().items() if int(stat[_SESSION]) == session}


def service_processes(
    leader: ProcessName, table: Mapping[int, list[str]] | None = None
) -> set[int]:
    """Every process of the service ``leader`` started as a session leader: its session and
    group (even once ``leader`` has ended) and, while ``leader`` runs, what it started in a
    session of its own. ``table``: ``/proc`` as read a moment ago (read now without)."""
    now = _started(leader.pid)
    if now is not None and leader.started is not None and now != leader.started:
        # The pid is another process's: Linux reuses none a session or group still bears,
        # so nothing of the service is left.
        return set()
    table = _process_table() if table is None else table
    found = {
        pid for pid, stat in table.items() if leader.pid in (int(stat[_SESSION]), int(stat[_PGRP]))
    }
    if not is_gone(leader):
        found |= _descendants_in(table, leader.pid) | {leader.pid}
    return found


def _process_table() -> dict[int, list[str]]:
    """Every process's ``/proc/<pid>/stat`` fields, by pid: one pass over ``/proc``."""
    return {
        int(entry.name): stat
        for entry in (PROC.iterdir() if PROC.is_dir() else ())
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None
    }


def _descendants_in(table: Mapping[int, list[str]], pid: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for child, stat in table.items():
        parents.setdefault(int(stat[_PPID]), []).append(child)
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        children = [child for child in parents.get(frontier.pop(), []) if child not in found]
        found.update(children)
        frontier.extend(children)
    return found


def command_line(pid: int) -> str:
    """The command line of ``pid``, its arguments joined by spaces ("" where unknown)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def terminate(pids: Iterable[int], grace_s: float = 5.0, kill_wait_s: float = 2.0) -> None:
    """SIGTERM each process, SIGKILL those still running after ``grace_s`` seconds, then
    wait up to ``kill_wait_s`` for them to be gone (a killed process ends when it is next
    scheduled, not at once)."""
    running = {process_name(pid) for pid in pids}
    for process in running:
        _signal(process.pid, signal.SIGTERM)
    running = _wait_until_gone(running, grace_s)
    for process in running:
        _signal(process.pid, signal.SIGKILL)
    _wait_until_gone(running, kill_wait_s)


def _wait_until_gone(
    running: set[ProcessName], seconds: float, reap: Callable[[], None] | None = None
) -> set[ProcessName]:
    """The processes of ``running`` still there after at most ``seconds`` (``reap`` called
    before each look)."""
    deadline = time.monotonic() + seconds
    while True:
        if reap is not None:
            reap()
        running = {process for process in running if not is_gone(process)}
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.05)


def _signal(pid: int, number: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, number)


def _started(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[_STARTTIME] if stat else None


def _stat(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def executable(name: str) -> str:
    """A command of this environment: beside this Python first (the project's virtual
    environment, whatever PATH says), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_session(
    command: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``command`` as the leader of a session (and process group) of its own, its output
    appended to ``log_path``; the process and the open log (the caller closes it). Signals to
    the terminal's group (Ctrl-C) never reach it: it is stopped by whoever started it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(  # noqa: S603  # the platform's own commands
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    return process, log


@dataclass
class StopReport:
    """What stopping services took: per service, the processes that ended on SIGTERM and
    those that needed SIGKILL; and the processes still there after all (none, normally)."""

    seconds: float = 0.0
    terminated: dict[str, int] = field(default_factory=dict)
    killed: dict[str, int] = field(default_factory=dict)
    left: list[int] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"{name}: {count} process{'es' if count != 1 else ''} stopped"
            + (f", {self.killed[name]} killed" if self.killed.get(name) else "")
            for name, count in self.terminated.items()
        ]
        text = f"stopped in {self.seconds:.1f} s ({'; '.join(parts) or 'nothing was running'})"
        if self.left:
            text += f"; still running: pids {', '.join(map(str, sorted(self.left)))}"
        return text


def stop_services(
    leaders: Mapping[str, ProcessName],
    *,
    term_grace_s: float,
    stop_timeout_s: float,
    reap: Callable[[], None] | None = None,
) -> StopReport:
    """Stop services started by :func:`start_session` (by name, their first process): SIGTERM
    to each one's process group; after ``term_grace_s``, SIGKILL to what is left of its
    session, group and descendants; all within ``stop_timeout_s``. ``reap`` collects the
    exit status of the caller's own children, so that they are seen gone.

    A process a service started in a group of its own (``retention dashboard`` runs Streamlit
    so) hears SIGTERM from its parent, as the service decides, not twice; one whose parent
    has ended hears it directly, as nobody else will pass it on."""
    if term_grace_s >= stop_timeout_s:
        raise ValueError("SIGTERM's grace must leave time for SIGKILL within the timeout")
    began = time.monotonic()
    report = StopReport()
    table = _process_table()
    trees = {name: _running(service_processes(leader, table)) for name, leader in leaders.items()}
    for name, leader in leaders.items():
        if trees[name]:
            _signal_group(leader.pid, signal.SIGTERM)
            for orphan in _orphans(leader.pid, trees[name]):
                _signal(orphan.pid, signal.SIGTERM)
    every = {process for tree in trees.values() for process in tree}
    _wait_until_gone(every, began + term_grace_s - time.monotonic(), reap)
    # What is left now, with what the services started as the stop began (a worker spawned).
    table = _process_table()
    for name, leader in leaders.items():
        stubborn = _running(service_processes(leader, table))
        report.terminated[name] = len(trees[name] - stubborn)
        report.killed[name] = len(stubborn)
    left = _kill_until_gone(leaders, began + stop_timeout_s, reap)
    report.left = sorted(process.pid for process in left)
    report.seconds = time.monotonic() - began
    return report


def _kill_until_gone(
    leaders: Mapping[str, ProcessName], deadline: float, reap: Callable[[], None] | None
) -> set[ProcessName]:
    """SIGKILL to every process of the services until none is left (a process born meanwhile
    included), or ``deadline``; those still there then."""
    while True:
        if reap is not None:
            reap()
        table = _process_table()
        running = {
            name: _running(service_processes(leader, table)) for name, leader in leaders.items()
        }
        left = {process for processes in running.values() for process in processes}
        if not left or time.monotonic() >= deadline:
            return left
        for name, leader in leaders.items():
            if running[name]:
                _signal_group(leader.pid, signal.SIGKILL)
                for process in running[name]:
                    _signal(process.pid, signal.SIGKILL)
        time.sleep(0.05)


def _running(pids: set[int]) -> set[ProcessName]:
    """Those of ``pids`` running (not zombies already), by name."""
    return {name for name in map(process_name, pids) if not is_gone(name)}


def _orphans(group: int, tree: set[ProcessName]) -> list[ProcessName]:
    """The processes of ``tree`` outside process group ``group`` whose parent is not in
    ``tree``: no process of the service is left to pass a signal on to them."""
    pids = {process.pid for process in tree}
    found = []
    for process in tree:
        stat = _stat(process.pid)
        if stat is not None and int(stat[_PGRP]) != group and int(stat[_PPID]) not in pids:
            found.append(process)
    return found


def _signal_group(group: int, number: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, number)
