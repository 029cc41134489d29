"""How long ``make demo`` takes a newcomer: cold (build, train, score), a second time, and
until the dashboard and the Dagster UI answer.

    uv run python benchmarks/demo.py [--customers 5000]

Runs ``retention demo`` as a person does, in a fresh temporary home on the embedded Postgres
(RETENTION_DATABASE_URL is left out, as on a fresh clone):

1. ``retention demo --no-serve`` cold: seconds of each stage, read back from the Dagster
   runs it made (build = daily_snapshot_job, train = retrain_job on the demo's budget,
   score = nightly_scoring_job's scoring, analytics and monitoring), and in all, with the
   embedded server's first start and the command's own start;
2. ``retention demo --no-serve`` again: everything reused;
3. ``retention demo`` serving: seconds until both URLs answer (from the command's start, and
   from its "starting" line), then SIGINT and the seconds until it has stopped.

``make install`` (uv sync, dbt parse) comes before all this on a fresh clone and is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg

from retention_pipelines.core.database import stop_embedded_server

RETENTION = str(Path(sys.executable).parent / "retention")
STAGES = {"build": "daily_snapshot_job", "train": "retrain_job", "score": "nightly_scoring_job"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="retention-demo-bench-"))
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("RETENTION_DATABASE_URL", "DAGSTER_HOME")
    }
    environment["RETENTION_HOME_DIR"] = str(home)
    demo = [RETENTION, "demo", "--customers", str(args.customers)]
    try:
        cold = _timed([*demo, "--no-serve"], environment)
        stages = _stage_seconds(home / "dagster_home")
        second = _timed([*demo, "--no-serve"], environment)
        served = _serve(demo, environment)
    finally:
        stop_embedded_server(home / "pgdata")
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(f"customers: {args.customers:,}; home: {home}{'' if args.keep else ' (removed)'}")
    for stage, seconds in stages.items():
        print(f"{stage:>12}: {seconds:6.1f} s ({STAGES[stage]})")
    print(f"{'cold total':>12}: {cold:6.1f} s (retention demo --no-serve, first run)")
    print(f"{'second run':>12}: {second:6.1f} s (retention demo --no-serve, all reused)")
    print(f"{'serve-ready':>12}: {served['ready']:6.1f} s (retention demo, second run, to both "
          f"URLs answering; {served['services']:.1f} s of it starting the services)")  # fmt: skip
    for name in ("dashboard", "Dagster UI"):
        print(f"{name:>12}: {served[f'{name} answers']:6.1f} s (first answer, from the start)")
    print(f"{'stop':>12}: {served['stop']:6.1f} s (SIGINT to exit)")


def _timed(command: list[str], environment: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(  # the project's own command
        command, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command[1:])} failed:\n{completed.stdout}{completed.stderr}")
    return time.perf_counter() - started


def _stage_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds of each stage's run, from the Dagster instance's run records."""
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    seconds = {}
    for stage, job in STAGES.items():
        [record] = instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)
        if record.start_time is None or record.end_time is None:
            sys.exit(f"the {job} run has no start or end time")
        seconds[stage] = record.end_time - record.start_time
    return seconds


def _serve(demo: list[str], environment: dict[str, str]) -> dict[str, float]:
    """The demo serving: seconds until each URL first answers and until the demo says both
    do (from the command's start), the services' share of it (from its "starting" line), and
    from SIGINT to its exit."""
    ports = _free_port(), _free_port()
    urls = {"Dagster UI": f"http://127.0.0.1:{ports[0]}/server_info",
            "dashboard": f"http://127.0.0.1:{ports[1]}/_stcore/health"}  # fmt: skip
    command = [*demo, "--port", str(ports[0]), "--dashboard-port", str(ports[1])]
    started = time.perf_counter()
    process = subprocess.Popen(  # the project's own command
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: dict[str, float] = {}
    reader = threading.Thread(target=_note_lines, args=(process, lines), daemon=True)
    reader.start()
    answered: dict[str, float] = {}
    deadline = started + 600
    while "Ctrl-C stops" not in lines and process.poll() is None and time.perf_counter() < deadline:
        for name, url in urls.items():
            if name not in answered and _answers(url, timeout=0.5):
                answered[name] = time.perf_counter() - started
        time.sleep(0.1)
    if "Ctrl-C stops" not in lines or "starting" not in lines:
        process.kill()
        sys.exit(f"retention demo did not serve (exit {process.wait()})")
    ready = lines["Ctrl-C stops"]
    for name in urls:  # the demo saw it answer between two of this loop's polls
        answered.setdefault(name, ready - started)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    return {
        "ready": ready - started,
        "services": ready - lines["starting"],
        **{f"{name} answers": seconds for name, seconds in answered.items()},
        "stop": time.perf_counter() - ready,
    }


def _note_lines(process: subprocess.Popen[str], lines: dict[str, float]) -> None:
    """When the demo printed the lines that mark its stages."""
    for line in process.stdout or ():
        for mark in ("starting", "Ctrl-C stops"):
            if line.startswith(mark):
                lines.setdefault(mark, time.perf_counter())


def _answers(url: str, timeout: float = 5) -> bool:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
