"""The dispatcher against a real webhook receiver on loopback: signed requests, retries with
backoff and Retry-After, no retry on a 400, batches split around a bad task, dead letters with
their reason, each outcome committed at once; and a dispatcher killed mid-batch, rerun, sends
nothing twice."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from retention_pipelines.core import audit, crm
from retention_pipelines.core.warehouse.crm_outbox import batch_key, task_key
from retention_pipelines_tests.crm.receiver import Behaviour, Receiver

DAY = date(2026, 1, 15)
SECRET = "test-webhook-secret"  # noqa: S105  # the test receiver's own key
SELECTION = crm.Selection(min_rise=0.15, cooldown_days=30, daily_capacity=200)
RETENTION = Path(sys.executable).parent / "retention"


def add_tasks(url: str, day: date, customers: list[str]) -> list[str]:
    """Pending tasks of ``customers`` (in this priority order), as a selection writes them;
    their idempotency keys."""
    rows = [
        (day, customer, task_key(day, customer), "entered_high", 0.8, 0.4, "high", 70.0,
         56.0 - priority / 100, priority + 1,
         json.dumps([{"reason": "Contract: Month-to-month", "contribution": 0.7}]), "m", "3")
        for priority, customer in enumerate(customers)
    ]  # fmt: skip
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
            " handoff_reason, churn_probability, previous_probability, risk_band,"
            " monthly_charges, revenue_at_risk, priority, talking_points, model_name,"
            " model_version) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return [row[2] for row in rows]


def outbox(url: str) -> dict[str, dict[str, Any]]:
    """Every task's delivery columns, by customer."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select customer_id, status, attempts, last_status_code, last_error, sent_at,"
            " destination from ml.crm_outbox"
        )
        names = [column.name for column in cursor.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def config(url: str, tmp_path: Path, **delivery: Any) -> crm.CrmConfig:
    return crm.CrmConfig.of(
        selection=SELECTION,
        webhook_url=url,
        webhook_secret=SECRET,
        crm_dir=tmp_path / "crm",
        **{"batch_size": 4, "timeout_s": 0.5, "max_attempts": 3, "max_backoff_s": 2.0,
           "first_backoff_s": 0.05, **delivery},
    )  # fmt: skip


def test_every_task_is_delivered_once_or_dead_lettered_with_its_reason(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    customers = [f"C-{number:02d}" for number in range(1, 11)]
    keys = dict(zip(customers, add_tasks(database_url, DAY, customers), strict=True))
    refused, hanging = "C-02", "C-06"
    behaviour = Behaviour(
        unavailable_first=2, retry_after={2: "1"}, refuse={refused}, hang={hanging}, hang_s=1.0
    )
    with Receiver(SECRET.encode(), behaviour).running() as receiver:
        # Credentials and a token in the URL: sent, never recorded.
        webhook = receiver.url.replace("127.0.0.1", "crm:pw@127.0.0.1") + "?token=abc"
        handoffs = crm.dispatch(
            database_url, config(webhook, tmp_path), actor="pytest", snapshot_date=DAY
        )

    delivered = [customer for customer in customers if customer not in {refused, hanging}]
    assert receiver.accepted == {keys[customer]: 1 for customer in delivered}
    assert 401 not in receiver.statuses()
    rows = outbox(database_url)
    assert {customer: rows[customer]["status"] for customer in customers} == {
        customer: "sent" if customer in delivered else "dead_letter" for customer in customers
    }
    # The first batch: 503, 503 (Retry-After), 400 (no retry), then each task alone. The
    # second: three timeouts, then each task alone, the hanging one three times more.
    assert {customer: rows[customer]["attempts"] for customer in customers} == {
        **dict.fromkeys(customers[:8], 4),
        hanging: 6,
        "C-09": 1,
        "C-10": 1,
    }
    assert rows[refused]["last_status_code"] == 400
    assert f"unknown to the CRM: {refused}" in rows[refused]["last_error"]
    assert "sending them one by one" in caplog.text
    assert not [customer for customer in customers if customer in caplog.text]  # ids stay put
    assert receiver.authorization == "Basic " + base64.b64encode(b"crm:pw").decode()
    assert "pw@" not in caplog.text
    assert rows[hanging]["last_status_code"] is None
    assert "no answer within 0.5 s" in rows[hanging]["last_error"]
    assert all(rows[customer]["sent_at"] is not None for customer in delivered)
    assert all(rows[customer]["last_error"] is None for customer in delivered)

    alone = [
        request for request in receiver.requests_holding(refused) if len(request.customers) == 1
    ]
    assert [request.status for request in alone] == [400]  # a 400 is never retried
    first, second, third = receiver.requests[:3]
    assert [first.status, second.status, third.status] == [503, 503, 400]
    assert third.at - second.at >= 0.95  # Retry-After: 1 honoured
    assert second.at - first.at < 0.5  # the exponential backoff's first wait

    destination = receiver.url
    assert handoffs == [crm.Handoff(DAY, sent=8, dead_letter=2, pending=0, destination=destination)]
    assert {row["destination"] for row in rows.values()} == {destination}
    [entry] = audit.entries(database_url, kind="crm_handoff")
    assert (entry.subject, entry.actor) == (DAY.isoformat(), "pytest")
    assert entry.details == {
        "count": 8, "dead_letter": 2, "pending": 0, "destination": destination
    }  # fmt: skip


def test_dead_letters_can_be_sent_again_once_the_receiver_is_fixed(
    database_url: str, tmp_path: Path
) -> None:
    keys = add_tasks(database_url, DAY, ["C-01", "C-02", "C-03"])
    with Receiver(SECRET.encode(), Behaviour(refuse={"C-02"})).running() as receiver:
        crm.dispatch(database_url, config(receiver.url, tmp_path), actor="pytest")
        assert outbox(database_url)["C-02"]["status"] == "dead_letter"
        receiver.behaviour.refuse.clear()
        [handoff] = crm.dispatch(
            database_url,
            config(receiver.url, tmp_path),
            actor="pytest",
            snapshot_date=DAY,
            requeue_dead_letters=True,
        )
    assert (handoff.sent, handoff.dead_letter) == (1, 0)
    assert receiver.accepted == dict.fromkeys(keys, 1)
    assert {row["status"] for row in outbox(database_url).values()} == {"sent"}


@pytest.mark.parametrize("receiver_state", ["unreachable", "always 503"])
def test_an_unavailable_receiver_leaves_the_tasks_pending_instead_of_dead_lettering_them(
    database_url: str, tmp_path: Path, receiver_state: str
) -> None:
    add_tasks(database_url, DAY, ["C-01", "C-02", "C-03"])
    with contextlib.ExitStack() as stack:
        if receiver_state == "unreachable":
            with socket.socket() as probe:  # a port nobody listens on
                probe.bind(("127.0.0.1", 0))
                webhook = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
            expected = "cannot connect"
        else:
            receiver = Receiver(SECRET.encode(), Behaviour(unavailable_first=1000))
            webhook = stack.enter_context(receiver.running()).url
            expected = "HTTP 503"
        [handoff] = crm.dispatch(
            database_url, config(webhook, tmp_path, batch_size=2), actor="pytest"
        )
    assert (handoff.sent, handoff.dead_letter, handoff.pending) == (0, 0, 3)
    assert handoff.stopped and "is unavailable" in handoff.stopped
    rows = outbox(database_url)
    assert {row["status"] for row in rows.values()} == {"pending"}
    assert rows["C-01"]["attempts"] == 3 and expected in rows["C-01"]["last_error"]
    assert rows["C-03"]["attempts"] == 0  # the next batch was never tried
    assert audit.entries(database_url, kind="crm_handoff") == []


def test_the_receiver_refuses_a_forged_or_replayed_signature(tmp_path: Path) -> None:
    body = json.dumps({"tasks": [{"customer_id": "C-01", "idempotency_key": "k"}]}).encode()
    now = str(int(time.time()))
    with Receiver(SECRET.encode()).running() as receiver:

        def post(secret: str, timestamp: str, content: bytes = body) -> int:
            headers = {
                crm.TIMESTAMP_HEADER: timestamp,
                crm.SIGNATURE_HEADER: crm.signature(secret.encode(), timestamp, body),
                crm.IDEMPOTENCY_HEADER: timestamp,
            }
            return httpx.post(receiver.url, content=content, headers=headers).status_code

        assert post("another-secret", now) == 401
        assert post(SECRET, now, body.replace(b"C-01", b"C-99")) == 401  # body changed
        assert post(SECRET, str(int(time.time()) - 3600)) == 401  # an old request replayed
        assert post(SECRET, now) == 200
    assert receiver.accepted == {"k": 1}


def test_signature_retry_after_and_destination_helpers() -> None:
    body = b'{"tasks":[]}'
    assert crm.signed_content("1700000000", body) == b'1700000000.{"tasks":[]}'
    assert crm.signature(b"s", "1700000000", body).startswith("sha256=")
    assert crm.verify_signature(
        b"s", body, "1700000000", crm.signature(b"s", "1700000000", body), now=1700000100
    )
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert crm.retry_after_seconds("7", now) == 7.0
    assert crm.retry_after_seconds("Thu, 15 Jan 2026 12:00:30 GMT", now) == 30.0
    assert crm.retry_after_seconds("Thu, 15 Jan 2026 11:00:00 GMT", now) == 0.0
    assert crm.retry_after_seconds("soon", now) is None
    assert crm.retry_after_seconds(None, now) is None
    assert crm.public_url("https://u:p@crm.example.com:8443/hooks/r?token=x#f") == (
        "https://crm.example.com:8443/hooks/r"
    )
    assert batch_key(["a", "b"]) == batch_key(["a", "b"]) != batch_key(["b", "a"])
    assert task_key(DAY, "C-01") != task_key(DAY + timedelta(days=1), "C-01")
    with pytest.raises(crm.CrmConfigError, match="SECRET is required"):
        crm.CrmConfig.of(
            selection=SELECTION, webhook_url="https://crm/x", webhook_secret=None, crm_dir=Path()
        )


def _dispatch_process(database_url: str, home: Path, webhook: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "RETENTION_DATABASE_URL": database_url,
        "RETENTION_HOME_DIR": str(home),
        "RETENTION_CRM_WEBHOOK_URL": webhook,
        "RETENTION_CRM_WEBHOOK_SECRET": SECRET,
        "RETENTION_CRM_BATCH_SIZE": "2",
        "RETENTION_CRM_TIMEOUT_S": "60",
        "RETENTION_CRM_MAX_ATTEMPTS": "3",
        "RETENTION_CRM_MAX_BACKOFF_S": "0.5",
    }
    return subprocess.Popen(
        [str(RETENTION), "crm", "dispatch", "--date", DAY.isoformat()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_a_dispatcher_killed_mid_batch_and_run_again_sends_nothing_twice(
    database_url: str, tmp_path: Path
) -> None:
    customers = [f"C-{number:02d}" for number in range(1, 7)]
    keys = add_tasks(database_url, DAY, customers)
    with Receiver(SECRET.encode(), Behaviour(hold=2)).running() as receiver:
        killed = _dispatch_process(database_url, tmp_path, receiver.url)
        try:
            assert receiver.holding.wait(timeout=90), "the dispatcher never sent its 2nd batch"
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
        finally:
            if killed.poll() is None:
                killed.kill()
        receiver.release.set()
        rows = outbox(database_url)
        assert [rows[customer]["status"] for customer in customers] == ["sent"] * 2 + [
            "pending"
        ] * 4
        rerun = _dispatch_process(database_url, tmp_path, receiver.url)
        output, _ = rerun.communicate(timeout=90)
    assert rerun.returncode == 0, output
    assert "2026-01-15: 4 sent, 0 dead-lettered, 0 pending" in output
    assert not any(customer in output for customer in customers)
    assert receiver.accepted == dict.fromkeys(keys, 1)
    # Only the request in flight at the kill came twice, under the same Idempotency-Key.
    assert receiver.repeated == [batch_key(keys[2:4])]
    rows = outbox(database_url)
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert {row["attempts"] for row in rows.values()} == {1}


def test_the_webhook_url_and_secret_reach_the_ui_as_the_names_of_their_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from retention_pipelines.resources import crm_resource  # noqa: PLC0415
    from retention_pipelines.settings import RetentionSettings  # noqa: PLC0415

    monkeypatch.setenv("RETENTION_CRM_WEBHOOK_URL", "https://crm.example.com/hook?token=t0k")
    monkeypatch.setenv("RETENTION_CRM_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("RETENTION_CRM_DAILY_CAPACITY", "7")
    monkeypatch.setenv("RETENTION_HOME_DIR", str(tmp_path))
    resource = crm_resource(RetentionSettings())
    assert resource.webhook_url.env_var_name == "RETENTION_CRM_WEBHOOK_URL"
    assert resource.webhook_secret.env_var_name == "RETENTION_CRM_WEBHOOK_SECRET"
    assert (resource.daily_capacity, resource.crm_dir) == (7, str(tmp_path / "reports" / "crm"))
    monkeypatch.delenv("RETENTION_CRM_WEBHOOK_URL")
    monkeypatch.delenv("RETENTION_CRM_WEBHOOK_SECRET")
    unset = crm_resource(RetentionSettings())
    assert (unset.webhook_url, unset.config().webhook) == (None, None)
