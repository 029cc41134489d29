"""Starting the dashboard's server: the ``streamlit run`` command line and a child process that
stops with the command that started it.

Streamlit runs in a child process of its own process group: a Ctrl-C at the terminal reaches
the ``retention`` command only, which asks the server once to stop (a second signal would make
uvicorn skip its graceful shutdown), waits for it and, past a grace period, kills it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

SERVER_SCRIPT: Final = Path(__file__).resolve().with_name("server.py")
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def streamlit_command(host: str, port: int, *, python: str = sys.executable) -> list[str]:
    """``streamlit run server.py`` headless on ``host:port``: no browser opened, no usage
    statistics sent, no file watching (a served app does not reload itself)."""
    return [
        python, "-m", "streamlit", "run", str(SERVER_SCRIPT),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--theme.base", "light",
    ]  # fmt: skip


def run_until_stopped(command: list[str], *, grace_s: float = 10.0) -> int:
    """Run ``command`` until it ends or this process is asked to stop (SIGINT, SIGTERM):
    then the child gets the signal once and ``grace_s`` seconds before it is killed.
    Returns the child's exit status (0 when it stopped as asked)."""
    child = subprocess.Popen(command, process_group=0)  # noqa: S603  # our own command line
    asked: list[float] = []

    def forward(signum: int, frame: object) -> None:
        # SIGTERM whatever was asked: after its graceful shutdown uvicorn raises the signal it
        # caught again, and a SIGINT would end Streamlit's command as "Aborted!", status 1.
        if not asked and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        asked.append(time.monotonic())

    previous = {number: signal.signal(number, forward) for number in STOP_SIGNALS}
    try:
        while True:
            try:
                status = child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > grace_s:
                    child.kill()
                continue
            return 0 if asked and status in {0, -signal.SIGINT, -signal.SIGTERM} else status
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
