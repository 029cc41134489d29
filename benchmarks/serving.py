"""Latency and throughput of the prediction API, as a client on the same machine sees them.

    uv run python benchmarks/serving.py [--workers 2] [--steady-rate 50] [--seconds 20]

In a throwaway database (and MLflow store) on the platform's Postgres (RETENTION_DATABASE_URL
or the embedded server) it registers a champion of the reference size (XGBoost, 300 trees of
depth 5, blended with the logistic part and calibrated, fitted on the real Telco customers)
and an API key, starts ``retention serve --workers N`` on loopback, and drives it from a
separate process with an open-loop load generator (asyncio, persistent HTTP/1.1 connections;
each request's latency runs from the moment it was due, so a server that falls behind is
charged for the wait). It prints:

- ``/v1/predict`` with reasons at a steady rate: p50, p95 and p99 latency;
- the highest rate of a ramp that is sustained with p99 under 100 ms and no errors;
- ``/v1/predict/batch`` with 1,000 customers: latency;
- the same one-customer path called in process, without HTTP: the reference.

Requests are Telco customers, cycled, with their numbers as JSON numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TELCO_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco_customer_churn.csv"
REFERENCE_TREES = 300
SLO_P99_S = 0.100
RAMP = (100, 150, 200, 250, 300, 350, 400, 500, 600, 800)
NUMBERS = ("SeniorCitizen", "tenure", "MonthlyCharges")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steady-rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady run")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="length of a ramp step")
    parser.add_argument("--batches", type=int, default=20, help="batch requests to time")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the load generator's own process
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(_drive(json.loads(args.drive)))))
        return
    _benchmark(args)


# --- setting up: a champion, a key, a server ---------------------------------------------


def customers() -> list[dict[str, Any]]:
    """The Telco customers as an application would send them (no Churn)."""
    with TELCO_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        row.pop("Churn", None)
        for column in NUMBERS:
            row[column] = float(row[column]) if "." in row[column] else int(row[column])
        out.append(row)
    return out


def _reference_model(records: list[dict[str, Any]]) -> Any:
    """A champion of the reference size, fitted on the Telco customers' features as the API
    computes them (the parity test holds them equal to dbt's)."""
    import pandas as pd  # noqa: PLC0415
    import xgboost as xgb  # noqa: PLC0415

    from retention_pipelines.churn_model.model import ChurnModel  # noqa: PLC0415
    from retention_pipelines.core import training  # noqa: PLC0415
    from retention_pipelines.core.features import customer_features, fit_encoder  # noqa: PLC0415
    from retention_pipelines.core.ingestion import validate_records  # noqa: PLC0415

    with TELCO_CSV.open(newline="", encoding="utf-8") as handle:
        labels = {row["customerID"]: row["Churn"] == "Yes" for row in csv.DictReader(handle)}
    validated = validate_records(records)
    frame = pd.DataFrame(customer_features(validated.valid))
    frame["churned"] = frame["customer_id"].map(labels)
    split = training.split_training_set(frame, seed=42)
    encoder = fit_encoder(split.train)
    params = {"objective": "binary:logistic", "max_depth": 5, "eta": 0.05, "seed": 42}
    booster = xgb.train(
        params,
        xgb.DMatrix(encoder.tree_input(split.train), training.labels_of(split.train),
                    enable_categorical=True),
        num_boost_round=REFERENCE_TREES,
    )  # fmt: skip
    booster.best_iteration = REFERENCE_TREES - 1
    baseline = training.fit_baseline(encoder, split, seed=42)
    weight = 0.7
    margin = weight * training.booster_margin(booster, encoder, split.validation)
    margin += (1 - weight) * baseline.margin(split.validation)
    calibrator = training.choose_calibrator(
        1 / (1 + np.exp(-margin)), training.labels_of(split.validation), seed=42
    )
    model = ChurnModel(
        kind="xgboost",
        encoder=encoder,
        booster=booster,
        calibrator=calibrator.to_part(),
        linear=baseline.to_part(),
        tree_weight=weight,
    )
    return model, frame.drop(columns="churned").head(3)


def _register(tracking_uri: str, model: Any, example: Any, artefacts: Path) -> str:
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    from retention_pipelines.churn_model import pyfunc  # noqa: PLC0415
    from retention_pipelines.core import registry  # noqa: PLC0415
    from retention_pipelines.core.features import INTEGER_FEATURES  # noqa: PLC0415

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("serving-benchmark", artifact_location=artefacts.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        info = pyfunc.log_model(
            model,
            name="model",
            signature=pyfunc.signature(model, INTEGER_FEATURES),
            input_example=example,
            pip_requirements=["mlflow"],
        )
    version = registry.register_challenger(
        client, model_uri=info.model_uri, run_id=run.info.run_id, tags={}
    )
    registry.promote(client, version, reason="serving benchmark", actor="benchmark")
    return version


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(port: int, server: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"retention serve exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the API did not become ready")


def _benchmark(args: argparse.Namespace) -> None:
    from retention_pipelines.core import api_keys, database, registry  # noqa: PLC0415
    from retention_pipelines.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    server_url = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    suffix = uuid.uuid4().hex[:8]
    warehouse, store = f"retention_bench_{suffix}", f"retention_bench_mlflow_{suffix}"
    database.ensure_database(server_url, warehouse)
    url = database.with_database(server_url, warehouse)
    home = Path(tempfile.mkdtemp(prefix="retention-serving-bench-"))
    env = {
        **os.environ,
        "RETENTION_DATABASE_URL": url,
        "RETENTION_HOME_DIR": str(home),
        "RETENTION_MLFLOW_DATABASE": store,
        "RETENTION_API_RATE_LIMIT": "10000000/minute",
    }
    try:
        database.upgrade(url)
        records = customers()
        print(f"fitting the reference champion ({REFERENCE_TREES} trees of depth 5)...")
        model, example = _reference_model(records)
        tracking_uri = registry.mlflow_tracking_uri(url, store)
        version = _register(tracking_uri, model, example, home / "artefacts")
        raw_key, _ = api_keys.create_key(url, "benchmark", ("predict",), actor="benchmark")
        port = _free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("retention")), "serve", "--port", str(port),
             "--workers", str(args.workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(port, server)
            print(f"retention serve --workers {args.workers} on :{port}, champion v{version}")
            figures = _drive_server(args, port, raw_key, records)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        figures["in_process"] = _in_process(model, version, records)
        _report(args, figures)
    finally:
        database.drop_database(server_url, warehouse)
        database.drop_database(server_url, store)


def _drive_server(
    args: argparse.Namespace, port: int, key: str, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every phase, each in a fresh load-generator process."""
    common = {"port": port, "key": key, "records": 500}

    def run(phase: dict[str, Any]) -> dict[str, Any]:
        spec = json.dumps({**common, **phase})
        out = subprocess.run(
            [sys.executable, __file__, "--drive", spec],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(out.stdout)

    run({"mode": "rate", "rate": 50, "seconds": 3})  # warm-up: models, pools, caches
    figures: dict[str, Any] = {
        "steady": run({"mode": "rate", "rate": args.steady_rate, "seconds": args.seconds})
    }
    ramp = []
    for rate in RAMP:
        step = run({"mode": "rate", "rate": rate, "seconds": args.step_seconds})
        ramp.append(step)
        print(
            f"  {rate:>4} req/s: p99 {step['p99_ms']:.1f} ms, errors {step['errors']}, "
            f"achieved {step['achieved_rate']:.0f} req/s"
        )
        if step["p99_ms"] >= SLO_P99_S * 1000 or step["errors"]:
            break
    figures["ramp"] = ramp
    figures["batch"] = run({"mode": "batch", "size": 1000, "count": args.batches})
    return figures


# --- the load generator (a process of its own) ----------------------------------------------


def _request_bytes(path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, payload: bytes) -> int:
        self.writer.write(payload)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    records = customers()[: spec["records"]]
    if spec["mode"] == "batch":
        batch = customers()[: spec["size"]]
        body = json.dumps({"customers": batch}).encode()
        payloads = [_request_bytes("/v1/predict/batch", spec["key"], body)] * spec["count"]
        return await _closed_loop(spec["port"], payloads)
    payloads = [
        _request_bytes("/v1/predict", spec["key"], json.dumps(record).encode())
        for record in records
    ]
    return await _open_loop(spec["port"], payloads, spec["rate"], spec["seconds"])


async def _open_loop(
    port: int, payloads: list[bytes], rate: float, seconds: float
) -> dict[str, Any]:
    total = int(rate * seconds)
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(min(256, max(8, int(rate / 4)))):
        pool.put_nowait(_Connection(*await asyncio.open_connection("127.0.0.1", port)))
    latencies: list[float] = []
    errors = 0

    async def one(index: int, due: float) -> None:
        nonlocal errors
        connection = await pool.get()
        try:
            status = await connection.send(payloads[index % len(payloads)])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
            connection = _Connection(*await asyncio.open_connection("127.0.0.1", port))
        else:
            if status != 200:
                errors += 1
        latencies.append(time.perf_counter() - due)
        pool.put_nowait(connection)

    started = time.perf_counter()
    tasks = []
    for index in range(total):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return {"rate": rate, "requests": total, "errors": errors,
            "achieved_rate": total / elapsed, **_percentiles(latencies)}  # fmt: skip


async def _closed_loop(port: int, payloads: list[bytes]) -> dict[str, Any]:
    connection = _Connection(*await asyncio.open_connection("127.0.0.1", port))
    latencies, errors = [], 0
    for payload in payloads:
        started = time.perf_counter()
        errors += (await connection.send(payload)) != 200
        latencies.append(time.perf_counter() - started)
    return {"requests": len(payloads), "errors": errors, **_percentiles(latencies)}


def _percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies) * 1000
    return {
        f"p{q}_ms": float(np.percentile(values, q)) if values.size else float("nan")
        for q in (50, 95, 99)
    } | {"mean_ms": float(values.mean()) if values.size else float("nan")}


# --- the reference: the same path without HTTP -------------------------------------------


def _in_process(model: Any, version: str, records: list[dict[str, Any]]) -> dict[str, float]:
    from datetime import UTC, datetime  # noqa: PLC0415

    from retention_pipelines.core.scoring import RiskBands  # noqa: PLC0415
    from retention_pipelines.serving.models import LoadedModel, ModelHolder  # noqa: PLC0415
    from retention_pipelines.serving.predictor import Predictor  # noqa: PLC0415

    model.set_prediction_threads(1)
    holder = ModelHolder(client_factory=lambda: None)  # type: ignore[arg-type,return-value]
    holder.champion = LoadedModel(model, "churn-model", version, "champion", datetime.now(UTC))
    predictor = Predictor(holder=holder, bands=RiskBands())
    latencies = []
    for index in range(2000):
        started = time.perf_counter()
        predictor.predict([records[index % len(records)]])
        latencies.append(time.perf_counter() - started)
    return _percentiles(latencies[100:])


def _report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    steady, batch, reference = figures["steady"], figures["batch"], figures["in_process"]
    sustained = [
        step["rate"] for step in figures["ramp"]
        if step["p99_ms"] < SLO_P99_S * 1000 and not step["errors"]
    ]  # fmt: skip
    print(f"\n/v1/predict at {args.steady_rate:g} req/s for {args.seconds:g} s "
          f"({steady['requests']} requests, {steady['errors']} errors):")  # fmt: skip
    print(f"  p50 {steady['p50_ms']:.2f} ms  p95 {steady['p95_ms']:.2f} ms  "
          f"p99 {steady['p99_ms']:.2f} ms  (target p99 <= 10 ms)")  # fmt: skip
    print(f"highest rate sustained with p99 < 100 ms and no errors: "
          f"{max(sustained) if sustained else 0} req/s (target >= 300)")  # fmt: skip
    print(f"/v1/predict/batch of 1,000 customers ({batch['requests']} requests): "
          f"p50 {batch['p50_ms']:.0f} ms  p95 {batch['p95_ms']:.0f} ms "
          "(target <= 250 ms)")  # fmt: skip
    print(f"the same one-customer path in process, no HTTP: p50 {reference['p50_ms']:.2f} ms  "
          f"p99 {reference['p99_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
