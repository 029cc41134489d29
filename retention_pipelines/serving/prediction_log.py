"""The prediction log's writer: answers queue in memory and a background thread copies them
into ``ml.prediction_log`` in batches. A request only appends to a bounded queue; when
Postgres is slow or down the queue fills and what does not fit, or a batch that cannot be
written, is dropped and counted, never raised to a client.

Answers about erased customers (on the suppression list, ``ops.erased_customers``) are
answered but not logged: the log would hold the customer again. Each batch reads the list in
its own transaction, locked as ingestion locks it, so an erasure waits for a batch being
written and then removes it, and a batch written after the erasure leaves the customer out."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from retention_pipelines.core.database import connect
from retention_pipelines.core.erasure import erased_pseudonyms
from retention_pipelines.core.pseudonyms import pseudonym
from retention_pipelines.core.warehouse.prediction_log import LoggedPrediction, copy_predictions

logger = logging.getLogger(__name__)

QUEUE_FULL: Final = "queue full"
DATABASE_ERROR: Final = "database error"
ERASED_CUSTOMER: Final = "erased customer"
DROP_REASONS: Final = (QUEUE_FULL, DATABASE_ERROR, ERASED_CUSTOMER)
# Seconds a connection attempt of the writer may take: it must notice an outage, not wait it out.
_CONNECT_TIMEOUT_S = 3


@dataclass
class LogCounters:
    """Rows written and dropped since start (read by the metrics and by /health)."""

    written: int = 0
    dropped: int = 0
    on_written: Callable[[int], None] = lambda rows: None
    on_dropped: Callable[[int, str], None] = lambda rows, reason: None

    def add_written(self, rows: int) -> None:
        self.written += rows
        self.on_written(rows)

    def add_dropped(self, rows: int, reason: str) -> None:
        self.dropped += rows
        self.on_dropped(rows, reason)


@dataclass
class PredictionLogWriter:
    """A bounded queue of rows and the thread that copies them (``start``/``stop``)."""

    url: str
    pseudonym_key: bytes
    max_rows: int = 100_000
    batch_rows: int = 5_000
    flush_s: float = 1.0
    counters: LogCounters = field(default_factory=LogCounters)
    _queue: queue.Queue[LoggedPrediction] = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_warning: float = 0.0

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.max_rows)

    def submit(self, rows: Sequence[LoggedPrediction]) -> None:
        """Queue ``rows`` without waiting; what does not fit is dropped and counted."""
        for position, row in enumerate(rows):
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._drop(len(rows) - position, QUEUE_FULL)
                return

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Copy what is queued (for ``timeout_s`` at most) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch:
                self._write(batch)

    def _next_batch(self) -> list[LoggedPrediction]:
        """Rows for one COPY: as many as are queued (up to the batch size) once the first has
        waited ``flush_s`` at most."""
        try:
            batch = [self._queue.get(timeout=self.flush_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + (0 if self._stop.is_set() else self.flush_s / 10)
        while len(batch) < self.batch_rows:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[LoggedPrediction]) -> None:
        try:
            with connect(self.url, retry_s=0, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                kept = self._without_erased(conn, batch)
                if kept:
                    copy_predictions(conn, kept)
        except Exception as error:  # an outage or a bad row: count and go on
            self._drop(len(batch), DATABASE_ERROR, error)
            return
        if len(kept) < len(batch):
            self.counters.add_dropped(len(batch) - len(kept), ERASED_CUSTOMER)
        self.counters.add_written(len(kept))

    def _without_erased(self, conn: Any, batch: list[LoggedPrediction]) -> list[LoggedPrediction]:
        """The rows of ``batch`` not about an erased customer (no pseudonym computed while
        the suppression list is empty)."""
        erased = erased_pseudonyms(conn)
        if not erased:
            return batch
        key = self.pseudonym_key
        return [row for row in batch if pseudonym(row.customer_id, key) not in erased]

    def _drop(self, rows: int, reason: str, error: BaseException | None = None) -> None:
        self.counters.add_dropped(rows, reason)
        now = time.monotonic()
        if now - self._last_warning >= 10:  # one line per 10 s, however many requests
            self._last_warning = now
            detail = f": {str(error).strip().splitlines()[0][:200]}" if error else ""
            logger.warning(
                "prediction log: dropped %d rows (%s%s); %d dropped since start",
                rows, reason, detail, self.counters.dropped,
            )  # fmt: skip
