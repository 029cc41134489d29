"""The models the API answers with: ``@champion`` always, ``@challenger`` for an A/B share or
in the shadow. Each is resolved by alias, loaded off the request path and swapped in whole, so
a request holds one loaded version from its first line to its last."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from mlflow import MlflowClient

from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.core import registry

logger = logging.getLogger(__name__)

Variant = Literal["champion", "challenger"]
VARIANTS: Final[tuple[Variant, ...]] = ("champion", "challenger")
_HASH_BUCKETS: Final = 10_000


@dataclass(frozen=True)
class LoadedModel:
    """A registry version, loaded: what answers a request and what the answer names."""

    model: ChurnModel
    name: str
    version: str
    variant: Variant
    loaded_at: datetime


@dataclass
class ModelEvents:
    """What the holder reports to the metrics (callbacks, so it does not know about them)."""

    on_load: Callable[[LoadedModel], None] = lambda loaded: None
    on_failure: Callable[[Variant, str], None] = lambda variant, version: None


@dataclass
class ModelHolder:
    """The loaded champion and challenger, refreshed from the registry's aliases.

    ``refresh`` reads the aliases once and loads only a version that moved; a failed load
    keeps the last good model (and is reported). An alias that disappears (a challenger
    promoted or deleted) drops its model. Attribute assignment is atomic, so a reader sees
    either the old model or the new one, never half of each.
    """

    client_factory: Callable[[], MlflowClient]
    wanted: tuple[Variant, ...] = ("champion",)
    prediction_threads: int = 1
    events: ModelEvents = field(default_factory=ModelEvents)
    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    last_error: str | None = None
    last_checked: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failed: set[tuple[str, str]] = field(default_factory=set)

    def get(self, variant: Variant) -> LoadedModel | None:
        return self.champion if variant == "champion" else self.challenger

    def refresh(self) -> None:
        """Bring every wanted variant in line with its alias (one at a time per process)."""
        with self._lock:
            client = self.client_factory()
            try:
                aliases = _aliases(client)
            except Exception as error:  # the registry is out of reach: keep what is loaded
                self.last_error = f"cannot read the model aliases: {_short(error)}"
                logger.warning("%s", self.last_error)
                return
            self.last_checked = time.monotonic()
            for variant in self.wanted:
                self._follow(client, variant, aliases.get(variant))

    def _follow(self, client: MlflowClient, variant: Variant, version: str | None) -> None:
        current = self.get(variant)
        if version is None:
            if current is not None:
                logger.info("%s@%s is gone: no longer answering with it", MODEL_NAME, variant)
                self._set(variant, None)
            return
        if current is not None and current.version == version:
            return
        try:
            model = registry.load_version(client, version)
            if hasattr(model, "set_prediction_threads"):
                model.set_prediction_threads(self.prediction_threads)
        except Exception as error:
            self.last_error = f"cannot load {MODEL_NAME} version {version}: {_short(error)}"
            # The traceback once per version; every later poll tries again and says so briefly.
            first = (variant, version) not in self._failed
            self._failed.add((variant, version))
            logger.warning("keeping the last good %s: %s", variant, self.last_error, exc_info=first)
            self.events.on_failure(variant, version)
            return
        loaded = LoadedModel(model, MODEL_NAME, version, variant, datetime.now(UTC))
        self._set(variant, loaded)
        self.last_error = None
        previous = current.version if current else "none"
        logger.info("%s@%s: now version %s (was %s)", MODEL_NAME, variant, version, previous)
        self.events.on_load(loaded)

    def _set(self, variant: Variant, loaded: LoadedModel | None) -> None:
        if variant == "champion":
            self.champion = loaded
        else:
            self.challenger = loaded


MODEL_NAME: Final = registry.MODEL_NAME


def _aliases(client: MlflowClient) -> dict[str, str]:
    try:
        registered = client.get_registered_model(MODEL_NAME)
    except Exception as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", "")):
            return {}
        raise
    return {alias: str(version) for alias, version in registered.aliases.items()}


def _short(error: BaseException) -> str:
    return str(error).strip().split("\n", 1)[0][:300]


def in_challenger_share(customer_id: str, share: float) -> bool:
    """Whether ``customer_id`` is in the A/B test's challenger share: a stable hash, so a
    customer gets the same variant on every request, in every worker, after every restart."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(customer_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _HASH_BUCKETS < share * _HASH_BUCKETS
