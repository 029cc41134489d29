"""Which process ran something, whether it still runs, and stopping the processes a process
started: what the command line needs to leave no run behind when it is killed or stopped.

A process is named by its host, its pid and its start time: a pid alone is reused once the
process is gone, so a recorded pid whose start time differs is another process. Start times
come from ``/proc`` (Linux); elsewhere only whether the pid is alive is known.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Fields of /proc/<pid>/stat after the ")" that closes the command name.
_STATE, _PPID, _PGRP, _STARTTIME = 0, 1, 2, 19


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
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(int(stat[_PPID]), []).append(int(entry.name))
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        children = [child for child in parents.get(frontier.pop(), []) if child not in found]
        found.update(children)
        frontier.extend(children)
    return found


def group_members(group: int) -> set[int]:
    """The processes of process group ``group`` still running or not yet reaped, from
    ``/proc`` (none where there is none)."""
    return {
        int(entry.name)
        for entry in (PROC.iterdir() if PROC.is_dir() else ())
        if entry.name.isdigit()
        and (stat := _stat(int(entry.name))) is not None
        and int(stat[_PGRP]) == group
    }


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


def _wait_until_gone(running: set[ProcessName], seconds: float) -> set[ProcessName]:
    """The processes of ``running`` still there after at most ``seconds``."""
    deadline = time.monotonic() + seconds
    running = {process for process in running if not is_gone(process)}
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = {process for process in running if not is_gone(process)}
    return running


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
