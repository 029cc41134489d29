"""Per-key rate limits, with the ``limits`` library: a moving window in this process, or in
Redis (``RETENTION_REDIS_URL``) so that every worker and every replica share one count."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

logger = logging.getLogger(__name__)


class RateLimitSettingError(ValueError):
    """A rate limit the ``limits`` notation does not read."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


class RateLimiter:
    """Counts each key's requests against one limit (e.g. ``600/minute``)."""

    def __init__(self, limit: str, redis_url: str | None = None, namespace: str = "") -> None:
        try:
            self.item: RateLimitItem = parse(limit)
        except ValueError as error:
            raise RateLimitSettingError(
                f"RETENTION_API_RATE_LIMIT {limit!r} is not a rate like 600/minute"
            ) from error
        self.shared = redis_url is not None
        # Installations sharing one Redis count their own keys (key ids repeat across them).
        self.namespace = namespace
        if redis_url:
            # Redis: a sliding-window counter, two keys per client, one round trip.
            storage = storage_from_string(redis_url, socket_timeout=0.5)
            self._limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter = (
                SlidingWindowCounterRateLimiter(storage)
            )
        else:
            self._limiter = MovingWindowRateLimiter(storage_from_string("memory://"))
        self._last_warning = 0.0

    def hit(self, key: str) -> Decision:
        """Count one request of ``key``; refused ones say when to try again (whole seconds).

        A rate-limit store that cannot be reached lets the request through (and says so in
        the log): an outage of Redis must not become an outage of predictions."""
        try:
            if self._limiter.hit(self.item, self.namespace, key):
                return Decision(True)
            stats = self._limiter.get_window_stats(self.item, self.namespace, key)
        except Exception as error:  # Redis down or slow
            self._warn(error)
            return Decision(True)
        return Decision(False, max(1, math.ceil(stats.reset_time - time.time())))

    def _warn(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            logger.warning("rate limits not applied, their store is unreachable: %s", error)
