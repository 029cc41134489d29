"""The CRM hand-off: the night's scores turned into retention tasks, and those tasks delivered.

Who is handed off: a customer entering the high band (or scored high for the first time), or
whose churn probability rose by ``crm_min_rise`` since their previous score, unless they were
handed off within ``crm_cooldown_days`` of the date; at most ``crm_daily_capacity`` of them,
the most monthly revenue at risk (probability x monthly charges) first. The selection runs in
Postgres and lands in ``ml.crm_outbox`` (see :mod:`~retention_pipelines.core.warehouse.crm_outbox`).

How they are delivered: the dispatcher POSTs the pending tasks to ``crm_webhook_url`` in
batches, signed with ``crm_webhook_secret``, each batch under an ``Idempotency-Key`` derived
from its tasks' keys. Every request's outcome is committed as soon as it is known, so a killed
dispatcher loses at most the request in flight, and the next one sends it again under the same
key: delivery is at least once, and at a receiver that honours the key, the effect is exactly
once. Without a webhook, the day's tasks are written as a CSV file instead.

When a request fails: timeouts, lost connections, 429 and 5xx are tried again (exponential
backoff with jitter, or the receiver's ``Retry-After``, at most ``crm_max_backoff_s``), up to
``crm_max_attempts`` times; another 4xx is not. A batch that fails for good is split and its
tasks sent one by one, so one bad task does not sink the others; a task failing for good on
its own goes to ``dead_letter`` with the last status and body. A receiver that cannot be
reached, or answers 503 or 429 through every attempt, is no task's fault: the dispatch stops
and the tasks stay pending for the next one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import pandas as pd
import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from retention_pipelines.core import audit
from retention_pipelines.core.database import connect
from retention_pipelines.core.pseudonyms import display_all
from retention_pipelines.core.warehouse import crm_outbox as outbox
from retention_pipelines.core.warehouse.crm_outbox import OutboxTask, SelectionOutcome

if TYPE_CHECKING:
    from retention_pipelines.settings import RetentionSettings

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SIGNATURE_HEADER: Final = "X-Retention-Signature"
TIMESTAMP_HEADER: Final = "X-Retention-Timestamp"
# How old a signed timestamp a receiver should accept (the README's verification example).
SIGNATURE_TOLERANCE_S: Final = 300
# The first wait between attempts; each next one doubles, plus up to as much again of jitter.
FIRST_BACKOFF_S: Final = 1.0
PREVIEW_ROWS: Final = 10
_BODY_CHARS: Final = 500
# Answers that speak of the receiver, not of the request: retried, and when retries are spent
# the dispatch stops with the tasks still pending (a 500 may be one task's fault: split).
_UNAVAILABLE: Final = frozenset({httpx.codes.TOO_MANY_REQUESTS, httpx.codes.SERVICE_UNAVAILABLE})
# A task's columns, its priority first: the order the retention team works the file in.
CSV_COLUMNS: Final[tuple[str, ...]] = (
    "priority",
    *(column for column in outbox.TASK_COLUMNS if column != "priority"),
)


class CrmConfigError(ValueError):
    """The hand-off is configured in a way that cannot work (a webhook without its secret)."""


class NoScoresError(RuntimeError):
    """The date has no scores to select tasks from."""


class ReceiverUnavailableError(RuntimeError):
    """Through every attempt, the webhook could not be reached or said it is unavailable
    (503, 429): no task is at fault, so the rest stay pending for the next dispatch instead of
    being dead-lettered."""


@dataclass(frozen=True)
class Selection:
    min_rise: float
    cooldown_days: int
    daily_capacity: int


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: bytes = field(repr=False)
    batch_size: int = 50
    timeout_s: float = 10.0
    max_attempts: int = 5
    max_backoff_s: float = 60.0
    first_backoff_s: float = FIRST_BACKOFF_S

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in {"http", "https"} or not urlsplit(self.url).hostname:
            raise CrmConfigError("RETENTION_CRM_WEBHOOK_URL must be an http(s) URL")
        if not self.secret:
            raise CrmConfigError(
                "RETENTION_CRM_WEBHOOK_SECRET is required with RETENTION_CRM_WEBHOOK_URL: "
                "every request is signed with it"
            )

    @property
    def destination(self) -> str:
        return public_url(self.url)

    def endpoint(self) -> tuple[str, httpx.BasicAuth | None]:
        """The URL to POST to, and the credentials it held as Basic auth: sent the same,
        but a logged URL never shows them."""
        parts = urlsplit(self.url)
        if parts.username is None:
            return self.url, None
        address = parts.netloc.rpartition("@")[2]
        auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        return urlunsplit(parts._replace(netloc=address)), auth


@dataclass(frozen=True)
class CrmConfig:
    selection: Selection
    webhook: Webhook | None  # None: the CSV file under crm_dir
    crm_dir: Path

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> CrmConfig:
        secret = settings.crm_webhook_secret
        return cls.of(
            selection=Selection(
                min_rise=settings.crm_min_rise,
                cooldown_days=settings.crm_cooldown_days,
                daily_capacity=settings.crm_daily_capacity,
            ),
            webhook_url=settings.crm_webhook_url,
            webhook_secret=secret.get_secret_value() if secret else None,
            crm_dir=settings.crm_dir,
            batch_size=settings.crm_batch_size,
            timeout_s=settings.crm_timeout_s,
            max_attempts=settings.crm_max_attempts,
            max_backoff_s=settings.crm_max_backoff_s,
        )

    @classmethod
    def of(
        cls,
        *,
        selection: Selection,
        webhook_url: str | None,
        webhook_secret: str | None,
        crm_dir: Path,
        **delivery: Any,
    ) -> CrmConfig:
        """The configuration; ``delivery``: the :class:`Webhook`'s batch size, timeout and
        retries, used when a URL is given."""
        webhook = (
            Webhook(url=webhook_url, secret=(webhook_secret or "").encode("utf-8"), **delivery)
            if webhook_url
            else None
        )
        return cls(selection=selection, webhook=webhook, crm_dir=crm_dir)

    @property
    def destination(self) -> str:
        """Where tasks go, fit to show: the webhook without query or credentials, or the
        folder of the CSV files."""
        return self.webhook.destination if self.webhook else str(self.crm_dir)


def public_url(url: str) -> str:
    """``url`` as scheme://host[:port]/path: no credentials, no query (which may hold a
    token), no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- Selection ---


def select_tasks(url: str, snapshot_date: date, selection: Selection) -> SelectionOutcome:
    """Replace the date's pending tasks with the customers to contact now, in one
    transaction. Tasks of the date already sent or dead-lettered stay as they are: a date
    selected again after its scores changed adds the newly qualifying customers (within the
    capacity left), drops pending ones that no longer qualify, and sends nobody twice."""
    with connect(url) as conn, conn.transaction():
        if not outbox.has_scores(conn, snapshot_date):
            raise NoScoresError(
                f"ml.churn_risk_scores has no rows for {snapshot_date}: score that date first"
            )
        return outbox.replace_pending(
            conn,
            snapshot_date,
            min_rise=selection.min_rise,
            cooldown_days=selection.cooldown_days,
            capacity=selection.daily_capacity,
        )


# --- Signatures ---


def signed_content(timestamp: str, body: bytes) -> bytes:
    """What the signature covers: the timestamp header's value, a dot, the raw body."""
    return timestamp.encode("ascii") + b"." + body


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Retention-Signature`` header's value."""
    digest = hmac.new(secret, signed_content(timestamp, body), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    header: str | None,
    *,
    now: float | None = None,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """What a receiver checks: the signature matches the body and timestamp, and the
    timestamp is recent (a captured request cannot be replayed later)."""
    if not timestamp or not header or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP date; None when absent
    or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# --- Delivery ---


@dataclass(frozen=True)
class Handoff:
    """One date's tasks handed off by one dispatch."""

    snapshot_date: date
    sent: int
    dead_letter: int
    pending: int  # left pending: the receiver was unavailable
    destination: str
    stopped: str | None = None  # why the dispatch stopped before the date's last task


class _FailedRequest(Exception):  # noqa: N818  # a request's outcome, handled in this module
    """Its message is fit for logs: the status or the kind of failure, never the body the
    receiver answered (which may name a customer); the body stays in the outbox's row."""


class _Retryable(_FailedRequest):
    """A request that may succeed later: a timeout, a lost connection, 429 or 5xx."""

    def __init__(
        self, summary: str, *, retry_after: float | None = None, unavailable: bool = False
    ) -> None:
        super().__init__(summary)
        self.retry_after = retry_after
        self.unavailable = unavailable  # the receiver's state, not the tasks' fault


class _FailedForGood(_FailedRequest):
    """A request that will not succeed as it is: a 4xx other than 429, or retries spent."""


def dispatch(
    url: str,
    config: CrmConfig,
    *,
    actor: str,
    snapshot_date: date | None = None,
    requeue_dead_letters: bool = False,
) -> list[Handoff]:
    """Hand off the pending tasks of ``snapshot_date`` (default: of every date, oldest
    first): to the webhook, or to the date's CSV file without one. One dispatcher runs at a
    time; another waits for it. ``requeue_dead_letters``: the date's dead-lettered tasks are
    sent again first (after the receiver was fixed)."""
    if requeue_dead_letters and snapshot_date is None:
        raise ValueError("dead letters are requeued for one date: give snapshot_date")
    with outbox.dispatch_session(url) as conn:
        if requeue_dead_letters and snapshot_date is not None:
            outbox.requeue_dead_letters(conn, snapshot_date)
        dates = outbox.pending_dates(conn, snapshot_date)
        if config.webhook is None:
            return [_write_csv(conn, day, config.crm_dir, actor) for day in dates]
        handoffs: list[Handoff] = []
        _, auth = config.webhook.endpoint()
        with httpx.Client(
            timeout=config.webhook.timeout_s, follow_redirects=False, auth=auth
        ) as http:
            delivery = _Delivery(conn, config.webhook, http)
            for day in dates:
                handoff = delivery.send_date(day)
                if handoff.sent or handoff.dead_letter:
                    with conn.transaction():
                        _audit(conn, handoff, actor)
                handoffs.append(handoff)
                if handoff.stopped:
                    break
        return handoffs


def _audit(conn: psycopg.Connection[Any], handoff: Handoff, actor: str) -> None:
    audit.record(
        conn,
        "crm_handoff",
        subject=handoff.snapshot_date.isoformat(),
        actor=actor,
        details={
            "count": handoff.sent,
            "dead_letter": handoff.dead_letter,
            "pending": handoff.pending,
            "destination": handoff.destination,
        },
    )


class _Delivery:
    """The requests of one dispatch to one webhook, each outcome committed as it comes."""

    def __init__(self, conn: psycopg.Connection[Any], webhook: Webhook, http: httpx.Client):
        self.conn = conn
        self.webhook = webhook
        self.http = http
        self.sent = 0
        self.dead_letter = 0

    def send_date(self, snapshot_date: date) -> Handoff:
        self.sent = self.dead_letter = 0
        after: tuple[int, str] | None = None
        stopped: str | None = None
        while tasks := outbox.pending_batch(
            self.conn, snapshot_date, after=after, limit=self.webhook.batch_size
        ):
            after = (tasks[-1].priority, tasks[-1].customer_id)
            try:
                self._deliver(tasks)
            except ReceiverUnavailableError as error:
                stopped = str(error)
                logger.warning("%s: %s; the rest stay pending", snapshot_date, stopped)
                break
        return Handoff(
            snapshot_date=snapshot_date,
            sent=self.sent,
            dead_letter=self.dead_letter,
            pending=outbox.status_counts_on(self.conn, snapshot_date)["pending"],
            destination=self.webhook.destination,
            stopped=stopped,
        )

    def _deliver(self, tasks: Sequence[OutboxTask]) -> None:
        """Send a batch; when it fails for good, send its tasks one by one, so that one bad
        task does not sink the others; a task failing for good alone is dead-lettered."""
        try:
            self._send(tasks)
        except _FailedForGood as failure:
            if len(tasks) > 1:
                logger.warning(
                    "a batch of %d tasks failed for good (%s): sending them one by one",
                    len(tasks),
                    failure,
                )
                for task in tasks:
                    self._deliver([task])
                return
            self.dead_letter += outbox.mark_dead_letter(
                self.conn, tasks[0].idempotency_key, self.webhook.destination
            )
            return
        self.sent += outbox.mark_sent(
            self.conn, [task.idempotency_key for task in tasks], self.webhook.destination
        )

    def _send(self, tasks: Sequence[OutboxTask]) -> None:
        """POST the batch until it is accepted, retrying what may pass later."""
        body = json.dumps(
            {"tasks": [task.payload() for task in tasks]}, separators=(",", ":")
        ).encode("utf-8")
        keys = [task.idempotency_key for task in tasks]
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.webhook.max_attempts),
            wait=_backoff(self.webhook),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            retrying(self._post, keys, body, outbox.batch_key(keys))
        except _Retryable as failure:
            if failure.unavailable:
                raise ReceiverUnavailableError(
                    f"{self.webhook.destination} is unavailable: {failure}"
                ) from failure
            raise _FailedForGood(str(failure)) from failure

    def _post(self, keys: list[str], body: bytes, idempotency_key: str) -> None:
        """One request; its outcome is recorded on the tasks before anything else happens."""
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_key,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self.webhook.secret, timestamp, body),
        }
        try:
            response = self.http.post(self.webhook.endpoint()[0], content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            reason = f"cannot connect ({type(error).__name__}: {error})"
            self._record(keys, None, reason)
            raise _Retryable(reason, unavailable=True) from error
        except httpx.TimeoutException as error:
            reason = f"no answer within {self.webhook.timeout_s:g} s ({type(error).__name__})"
            self._record(keys, None, reason)
            raise _Retryable(reason) from error
        except httpx.TransportError as error:
            reason = f"connection failed ({type(error).__name__}: {error})"
            self._record(keys, None, reason)
            raise _Retryable(reason) from error
        status = response.status_code
        if response.is_success:
            self._record(keys, status, None)
            return
        self._record(keys, status, f"HTTP {status}: {response.text[:_BODY_CHARS]}")
        if status == httpx.codes.TOO_MANY_REQUESTS or status >= httpx.codes.INTERNAL_SERVER_ERROR:
            raise _Retryable(
                f"HTTP {status}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), _now()),
                unavailable=status in _UNAVAILABLE,
            )
        raise _FailedForGood(f"HTTP {status}")

    def _record(self, keys: list[str], status_code: int | None, error: str | None) -> None:
        outbox.record_attempt(self.conn, keys, status_code=status_code, error=error)


def _now() -> datetime:
    return datetime.now(UTC)


def _backoff(webhook: Webhook) -> Callable[[RetryCallState], float]:
    """Exponential backoff with jitter, or the receiver's ``Retry-After``; never longer than
    ``max_backoff_s``."""
    exponential = wait_exponential_jitter(
        initial=webhook.first_backoff_s,
        max=webhook.max_backoff_s,
        jitter=webhook.first_backoff_s,
    )

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return min(error.retry_after, webhook.max_backoff_s)
        return exponential(state)

    return wait


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.info("attempt %d failed (%s): trying again in %.1f s", state.attempt_number, error, wait)


# --- The CSV file, without a webhook ---


def csv_path(crm_dir: Path, snapshot_date: date) -> Path:
    return crm_dir / f"retention_tasks_{snapshot_date.isoformat()}.csv"


def _write_csv(
    conn: psycopg.Connection[Any], snapshot_date: date, crm_dir: Path, actor: str
) -> Handoff:
    """Write the date's file: its pending tasks and those written to it before (the file is
    always the date's whole hand-off; the idempotency key tells a task seen before), replaced
    atomically, readable by its owner only; then mark the pending tasks sent, with the audit
    entry, in one transaction."""
    path = csv_path(crm_dir, snapshot_date)
    with conn.transaction():
        _replace_file(path, map(_csv_row, outbox.file_tasks(conn, snapshot_date, str(path))))
        sent = outbox.mark_pending_sent(conn, snapshot_date, str(path))
        handoff = Handoff(snapshot_date, sent=sent, dead_letter=0, pending=0, destination=str(path))
        _audit(conn, handoff, actor)
    return handoff


def erase_from_files(crm_dir: Path, customer_id: str) -> list[Path]:
    """Rewrite the hand-off files that name ``customer_id`` without their rows, each replaced
    atomically: the files are the platform's own copy of what it handed off, and an erasure
    reaches them as it reaches ``ml.crm_outbox``. Returns the files changed."""
    position = CSV_COLUMNS.index("customer_id")
    changed: list[Path] = []
    for path in sorted(crm_dir.glob("retention_tasks_*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            _header, *rows = list(csv.reader(handle)) or [[]]
        kept = [row for row in rows if row[position] != customer_id]
        if len(kept) < len(rows):
            _replace_file(path, kept)
            changed.append(path)
    return changed


def _replace_file(path: Path, rows: Iterable[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            os.fchmod(handle.fileno(), 0o600)
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _csv_row(task: OutboxTask) -> list[object]:
    payload = task.payload()
    payload["talking_points"] = " | ".join(point["reason"] for point in task.talking_points)
    return [payload[column] for column in CSV_COLUMNS]


# --- What people see ---


def status_counts(url: str, snapshot_date: date) -> dict[str, int]:
    return outbox.status_counts(url, snapshot_date)


def task_preview(
    url: str, snapshot_date: date, key: bytes, limit: int = PREVIEW_ROWS
) -> pd.DataFrame:
    """The date's first tasks by priority, each customer named by pseudonym, never by id."""
    frame = outbox.task_rows(url, snapshot_date, limit)
    frame.insert(1, "customer", display_all(frame.pop("customer_id").astype(str), key))
    return frame


def revenue_at_risk(url: str, snapshot_date: date) -> float:
    """The expected monthly revenue at risk of the date's tasks, together."""
    return outbox.revenue_at_risk(url, snapshot_date)


def status_by_date(url: str, snapshot_date: date | None = None, limit: int = 14) -> pd.DataFrame:
    """Tasks per status of the latest dates (or of one), newest first: counts only."""
    return outbox.counts_by_date(url, snapshot_date, limit)
