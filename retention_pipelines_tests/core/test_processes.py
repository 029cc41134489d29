"""Knowing whether the process that ran something is still there, and stopping the processes
a process started, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from retention_pipelines.core.processes import (
    ProcessName,
    descendants,
    is_gone,
    terminate,
    this_process,
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="start times need /proc")


def _sleeper(*, ignore_sigterm: bool = False) -> subprocess.Popen[bytes]:
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def _named(pid: int) -> ProcessName:
    return replace(this_process(), pid=pid, started=_started(pid))


def _started(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_this_process_is_not_gone() -> None:
    assert not is_gone(this_process())


def test_a_killed_process_is_gone_once_reaped_and_while_a_zombie() -> None:
    sleeper = _sleeper()
    name = _named(sleeper.pid)
    assert not is_gone(name)
    sleeper.kill()
    time.sleep(0.2)  # not reaped yet: a zombie, which runs nothing any more
    assert is_gone(name)
    sleeper.wait()
    assert is_gone(name)


def test_a_reused_pid_is_another_process() -> None:
    """The pid of a gone process, now someone else's: its start time tells them apart."""
    sleeper = _sleeper()
    try:
        assert is_gone(replace(_named(sleeper.pid), started="1"))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_of_another_host_is_never_taken_for_gone() -> None:
    assert not is_gone(ProcessName("another-host.example", 2**22 + 1, "1"))


def test_descendants_include_grandchildren_and_terminate_stops_them_all() -> None:
    """A child that ignores SIGTERM is killed after the grace period; its own child too."""
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    names = [_named(parent.pid), _named(grandchild)]
    assert {parent.pid, grandchild} <= descendants(os.getpid())

    started = time.monotonic()
    terminate({parent.pid, grandchild}, grace_s=1.0)
    assert time.monotonic() - started < 5
    parent.wait(timeout=5)
    assert all(is_gone(name) for name in names)
