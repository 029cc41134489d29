"""The churn model's place in the MLflow registry: where the store lives, how versions arrive,
and how the ``champion`` alias moves.

Models move by alias, never by "latest": every training registers a version as
``churn-model@challenger``; the promotion gate (a pure function, so its rules are tested
without MLflow) decides whether ``champion`` follows. Each move of ``champion`` is recorded
with who made it and why, so that a bad promotion can be rolled back by the same route; given
the warehouse, each move and each refusal of the gate is also an entry of ``ops.audit_log``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import mlflow
import mlflow.pyfunc
import psycopg
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.core import audit
from retention_pipelines.core.database import (
    connect,
    ensure_database,
    sqlalchemy_url,
    with_database,
)

logger = logging.getLogger(__name__)

MODEL_NAME = "churn-model"
CHAMPION = "champion"
CHALLENGER = "challenger"

HISTORY_TAG = "champion_history"
# Newest entries kept. MLflow validates registered-model tag values up to 100,000 characters,
# but its schema stores them as varchar(5000) on Postgres, so the JSON is also held under that.
HISTORY_MAX_ENTRIES = 50
HISTORY_MAX_CHARS = 5000
# The full reason lives on the version's own tag (a text column); the history keeps a summary.
_HISTORY_REASON_CHARS = 160
_HISTORY_ACTOR_CHARS = 80

# A fixed key: processes meeting a fresh MLflow database create its tables one at a time.
MLFLOW_SCHEMA_LOCK_KEY = 0x4D4C464C
# How long a process waits for another one creating the tables (seconds, ~5 s in practice).
_SCHEMA_LOCK_TIMEOUT = "120s"

# Gate metrics are rounded figures: "exactly at the tolerance" must not fail on the last bit.
_FLOAT_SLACK = 1e-9


# --- the backend store -------------------------------------------------------------------


def mlflow_tracking_uri(server_url: str, database: str = "mlflow") -> str:
    """The SQLAlchemy URI of MLflow's backend store: ``database`` on the platform's server.

    The database is created when missing and MLflow's tables on first use. MLflow creates
    them itself (``create_all`` and its alembic migrations) whenever a store finds them
    missing, but without any lock: two processes meeting a fresh database at once (a
    webserver and a run, two Optuna workers) both create and one fails with a duplicate-key
    error. Here a Postgres advisory lock lets one process create them while the others wait,
    on one machine or many. A schema from an older MLflow is left alone: MLflow then refuses
    it with an explicit message asking for ``mlflow db upgrade <uri>`` after a backup.

    A Unix-socket URL keeps its socket: ``postgresql://postgres:@/retention?host=/dir``
    gives ``postgresql+psycopg2://postgres:@/mlflow?host=/dir``.
    """
    _ensure_database(server_url, database)
    url = with_database(server_url, database)
    uri = sqlalchemy_url(url)
    _ensure_mlflow_schema(url, uri)
    return uri


def _ensure_database(server_url: str, database: str) -> None:
    """Two processes creating the same database at once: the loser may see a unique violation
    on ``pg_database`` rather than ``DuplicateDatabase``, which ``ensure_database`` expects."""
    try:
        ensure_database(server_url, database)
    except psycopg.errors.UniqueViolation:
        logger.debug("database %s was created by another process meanwhile", database)


def _ensure_mlflow_schema(url: str, uri: str) -> None:
    """Create MLflow's tables unless done, one process at a time.

    MLflow's migrations run in a single transaction on Postgres, so ``alembic_version``
    holds a row only once they have all committed: the cheap check that skips the lock.
    """
    with connect(url, autocommit=True) as conn:
        if _mlflow_schema_revision(conn) is not None:
            return
        conn.execute(f"set lock_timeout = '{_SCHEMA_LOCK_TIMEOUT}'")
        conn.execute("select pg_advisory_lock(%s)", (MLFLOW_SCHEMA_LOCK_KEY,))
        try:
            if _mlflow_schema_revision(conn) is None:
                logger.info("creating MLflow's tables in %s", urlsplit(url).path.lstrip("/"))
                # MLflow's own first use: the store creates the tables and runs the migrations.
                MlflowClient(uri).search_experiments(max_results=1)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MLFLOW_SCHEMA_LOCK_KEY,))


def _mlflow_schema_revision(conn: psycopg.Connection) -> str | None:
    exists = conn.execute("select to_regclass('public.alembic_version')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute("select version_num from public.alembic_version").fetchone()
    return str(row[0]) if row else None


# --- registering a challenger --------------------------------------------------------------


def register_challenger(
    client: MlflowClient, *, model_uri: str, run_id: str, tags: dict[str, str]
) -> str:
    """Register the logged model as a new version of ``churn-model`` and point
    ``challenger`` at it; return the version.

    Every training run does this, whatever the gate decides later, so that each trained
    model can be inspected, compared or promoted by hand.
    """
    _ensure_registered_model(client)
    model_id = _logged_model_id(model_uri)
    created = client.create_model_version(
        MODEL_NAME,
        source=_version_source(client, model_uri, model_id),
        run_id=run_id,
        tags=tags,
        model_id=model_id,
    )
    version = str(created.version)  # MLflow 3.17's SQL store answers an int here
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    if model_id is not None:
        _link_logged_model(client, model_id, version)
    logger.info("registered %s version %s as %s", MODEL_NAME, version, CHALLENGER)
    return version


def _version_source(client: MlflowClient, model_uri: str, model_id: str | None) -> str:
    """The source to register: the logged-model URI when MLflow can resolve it.

    MLflow's SQL registry resolves a ``models:/<model_id>`` source through the process-wide
    tracking URI, not the client's (a TODO in MLflow 3.17). Where the two differ, the logged
    model's artefact location is registered instead: the version loads the same, only the
    link back to the logged model in the UI is lost.
    """
    if model_id is None or mlflow.get_tracking_uri() == client.tracking_uri:
        return model_uri
    logger.warning(
        "the process-wide MLflow tracking URI is not the client's: registering %s by its "
        "artefact location",
        model_uri,
    )
    return str(client.get_logged_model(model_id).artifact_location)


def _link_logged_model(client: MlflowClient, model_id: str, version: str) -> None:
    """List the version on the logged model, as ``mlflow.register_model`` does, so the
    logged model's page in the UI shows where it was registered."""
    logged = client.get_logged_model(model_id)
    links = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    links.append({"name": MODEL_NAME, "version": version})
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})


def _ensure_registered_model(client: MlflowClient) -> None:
    try:
        client.create_registered_model(
            MODEL_NAME, description="Probability that a customer churns (RetentionAI)."
        )
    except MlflowException as error:
        # Created earlier, or by another run a moment ago.
        if error.error_code != _code_name(RESOURCE_ALREADY_EXISTS):
            raise


def _logged_model_id(model_uri: str) -> str | None:
    """The id in an MLflow 3 logged-model URI (``models:/m-...``), which links the version to
    the logged model (its metrics, params and artefact location); None for other sources."""
    parts = urlsplit(model_uri)
    path = parts.path.strip("/")
    if parts.scheme == "models" and not parts.netloc and path and "/" not in path:
        return path if "@" not in path else None
    return None


# --- the promotion gate (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class GateMetrics:
    """What the gate compares, both measured on the same latest labelled data."""

    roc_auc: float
    brier: float


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: GateMetrics,
    champion: GateMetrics | None,
    *,
    beat_baseline: bool,
    auc_tolerance: float,
    brier_tolerance: float,
) -> PromotionDecision:
    """Whether the challenger replaces the champion, with a reason a person can act on.

    "At least as good" allows a small tolerance on both metrics: two trainings on the same
    data differ by noise, and refusing a fresher model over the fourth decimal would freeze
    the champion. Ranking (ROC AUC) and calibration (Brier) must both hold, because business
    users read the score as a probability.
    """
    if auc_tolerance < 0 or brier_tolerance < 0:
        raise ValueError("gate tolerances must not be negative")
    if not beat_baseline:
        return PromotionDecision(
            False, "the challenger does not beat the logistic baseline; the champion stays"
        )
    if not _finite(challenger):
        return PromotionDecision(False, f"the challenger's metrics are not finite: {challenger}")
    if champion is None:
        return PromotionDecision(True, "first model: there is no champion yet")
    if not _finite(champion):
        return PromotionDecision(
            True, f"the champion's metrics are not finite ({champion}); the challenger's are"
        )
    failures = _gate_failures(challenger, champion, auc_tolerance, brier_tolerance)
    if failures:
        return PromotionDecision(False, "; ".join(failures))
    return PromotionDecision(
        True,
        f"at least as good as the champion: ROC AUC {challenger.roc_auc:.4f} vs "
        f"{champion.roc_auc:.4f} (tolerance {auc_tolerance:g}), Brier {challenger.brier:.4f} "
        f"vs {champion.brier:.4f} (tolerance {brier_tolerance:g})",
    )


def _gate_failures(
    challenger: GateMetrics, champion: GateMetrics, auc_tolerance: float, brier_tolerance: float
) -> list[str]:
    failures = []
    auc_shortfall = champion.roc_auc - challenger.roc_auc
    if auc_shortfall > auc_tolerance + _FLOAT_SLACK:
        failures.append(
            f"ROC AUC {challenger.roc_auc:.4f} is {auc_shortfall:.4f} below the champion's "
            f"{champion.roc_auc:.4f} (tolerance {auc_tolerance:g})"
        )
    brier_excess = challenger.brier - champion.brier
    if brier_excess > brier_tolerance + _FLOAT_SLACK:
        failures.append(
            f"Brier {challenger.brier:.4f} is {brier_excess:.4f} above the champion's "
            f"{champion.brier:.4f} (tolerance {brier_tolerance:g})"
        )
    return failures


def _finite(metrics: GateMetrics) -> bool:
    return math.isfinite(metrics.roc_auc) and math.isfinite(metrics.brier)


# --- moving the champion -------------------------------------------------------------------


def champion_version(client: MlflowClient) -> str | None:
    """The version ``champion`` points at; None before the first promotion."""
    return _champion_of(_registered_model(client))


def promote(
    client: MlflowClient,
    version: str,
    *,
    reason: str,
    actor: str,
    audit_url: str | None = None,
) -> None:
    """Point ``champion`` at ``version`` and record who did it and why.

    Scoring reads the alias, so this is the one step that changes what customers
    are scored with. The history on the registered model is what :func:`rollback` reads.
    With ``audit_url`` (the warehouse; every path of the platform passes it, tests of the
    registry alone need not), the move is an entry of the audit log, kept exactly when the
    move succeeded: see :func:`_audited`.
    """
    client.get_model_version(MODEL_NAME, version)  # a clear error for a version that is absent
    registered = _registered_model(client)
    previous = _champion_of(registered)
    details = {"model": MODEL_NAME, "version": version, "previous": previous}
    with _audited(
        audit_url, "promotion", _subject(version), actor=actor, reason=reason, details=details
    ):
        at = _now()
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
        _append_history(
            client,
            _history_of(registered),
            {"action": "promote", "version": version, "previous": previous},
            reason=reason,
            actor=actor,
            at=at,
        )
        client.set_model_version_tag(MODEL_NAME, version, "promoted_at", at)
        client.set_model_version_tag(MODEL_NAME, version, "promotion_reason", reason)
        client.set_model_version_tag(MODEL_NAME, version, "promoted_by", actor)
    logger.info("%s@%s: %s -> %s (%s)", MODEL_NAME, CHAMPION, previous, version, reason)


def rollback(client: MlflowClient, *, reason: str, actor: str, audit_url: str | None = None) -> str:
    """Point ``champion`` back at the version that held it before the current one; return it.

    Rollbacks undo promotions in order, like an undo stack: after v1 → v2 → v3, a rollback
    goes to v2 and a second one to v1. The history on the registered model is the stack.
    With ``audit_url``, the rollback is an entry of the audit log (as for :func:`promote`).
    """
    registered = _registered_model(client)
    current = _champion_of(registered)
    if current is None:
        raise ValueError(f"{MODEL_NAME} has no {CHAMPION}: there is nothing to roll back")
    history = _history_of(registered)
    chain = _champion_chain(history, current)
    if len(chain) < 2:
        raise ValueError(
            f"{MODEL_NAME}@{CHAMPION} is version {current} and no earlier champion is "
            "recorded: there is nothing to roll back to"
        )
    target = chain[-2]
    details = {"model": MODEL_NAME, "version": target, "previous": current}
    with _audited(
        audit_url, "rollback", _subject(target), actor=actor, reason=reason, details=details
    ):
        at = _now()
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, target)
        _append_history(
            client,
            history,
            {"action": "rollback", "version": target, "previous": current},
            reason=reason,
            actor=actor,
            at=at,
        )
        client.set_model_version_tag(MODEL_NAME, current, "rolled_back_at", at)
        client.set_model_version_tag(MODEL_NAME, current, "rollback_reason", reason)
    logger.info("%s@%s rolled back: %s -> %s (%s)", MODEL_NAME, CHAMPION, current, target, reason)
    return target


def apply_gate(
    client: MlflowClient,
    challenger_version: str,
    decision: PromotionDecision,
    *,
    actor: str,
    audit_url: str | None,
    figures: Mapping[str, float | None] | None = None,
) -> None:
    """Carry out the gate's ``decision`` on ``challenger_version``: promote it, or record
    the refusal in the audit log; either way the version keeps the gate's reason as its
    ``gate_decision`` tag. ``figures`` (the metrics compared) go with the audit entry."""
    if decision.promote:
        promote(
            client, challenger_version, reason=decision.reason, actor=actor, audit_url=audit_url
        )
    elif audit_url is not None:
        audit.record_now(
            audit_url,
            "gate_refusal",
            _subject(challenger_version),
            actor=actor,
            reason=decision.reason,
            details={
                "model": MODEL_NAME,
                "version": challenger_version,
                "champion": champion_version(client),
                **(figures or {}),
            },
        )
    client.set_model_version_tag(MODEL_NAME, challenger_version, "gate_decision", decision.reason)


@contextmanager
def _audited(
    url: str | None,
    kind: audit.AuditKind,
    subject: str,
    *,
    actor: str,
    reason: str,
    details: Mapping[str, object],
) -> Iterator[None]:
    """Run the block (a move of the alias in MLflow) inside a warehouse transaction holding
    its audit entry: a move that fails rolls the entry back, and the entry is committed the
    moment the move is done. MLflow and the warehouse share no transaction, so the one gap
    left is a commit failing after the move, which the caller sees as an error."""
    if url is None:
        yield
        return
    with connect(url) as conn:
        audit.record(conn, kind, subject, actor=actor, reason=reason, details=details)
        yield


def _subject(version: str) -> str:
    """How the audit log names a version: ``churn-model v3``."""
    return f"{MODEL_NAME} v{version}"


def champion_history(client: MlflowClient) -> list[dict[str, Any]]:
    """The recorded moves of ``champion``, oldest first (the newest ones, bounded)."""
    return _history_of(_registered_model(client))


def _registered_model(client: MlflowClient) -> RegisteredModel | None:
    try:
        return client.get_registered_model(MODEL_NAME)
    except MlflowException as error:
        if error.error_code == _code_name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def _champion_of(registered: RegisteredModel | None) -> str | None:
    version = registered.aliases.get(CHAMPION) if registered is not None else None
    return str(version) if version is not None else None  # an int from MLflow 3.17's SQL store


def _history_of(registered: RegisteredModel | None) -> list[dict[str, Any]]:
    raw = registered.tags.get(HISTORY_TAG) if registered is not None else None
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("ignoring an unreadable %s tag on %s", HISTORY_TAG, MODEL_NAME)
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _champion_chain(history: list[dict[str, Any]], current: str) -> list[str]:
    """Replay the history into the stack of champions, ending with ``current``.

    A promotion pushes, a rollback pops. An alias moved outside this module (the MLflow UI)
    shows as a ``previous`` that is not the top of the stack, or as a current champion that
    is not: it counts as one more promotion, so a rollback returns to the champion before it.
    """
    chain: list[str] = []
    for entry in history:
        version = str(entry.get("version"))
        previous = None if entry.get("previous") is None else str(entry["previous"])
        if entry.get("action") == "rollback":
            if chain and chain[-1] == previous:
                chain.pop()
        elif previous is not None and (not chain or chain[-1] != previous):
            chain.append(previous)
        if not chain or chain[-1] != version:
            chain.append(version)
    if not chain or chain[-1] != current:
        chain.append(current)
    return chain


def _append_history(
    client: MlflowClient,
    history: list[dict[str, Any]],
    move: dict[str, str | None],
    *,
    reason: str,
    actor: str,
    at: str,
) -> None:
    """Add one move to the registered model's history, keeping the newest that fit.

    A read-modify-write of one tag: two moves at the same instant could drop one entry (the
    alias itself is always right). Moves come from the gate asset and the CLI, rarely at once.
    """
    entry = {
        **move,
        "reason": _shorten(reason, _HISTORY_REASON_CHARS),
        "actor": _shorten(actor, _HISTORY_ACTOR_CHARS),
        "at": at,
    }
    entries = [*history, entry][-HISTORY_MAX_ENTRIES:]
    value = _compact_json(entries)
    while len(value) > HISTORY_MAX_CHARS and len(entries) > 1:
        entries = entries[1:]
        value = _compact_json(entries)
    client.set_registered_model_tag(MODEL_NAME, HISTORY_TAG, value)


def _compact_json(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, separators=(",", ":"), ensure_ascii=False)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _code_name(code: int) -> str:
    return str(ErrorCode.Name(code))


# --- loading models ------------------------------------------------------------------------


def load_version(client: MlflowClient, version: str) -> ChurnModel:
    """The churn model of ``version``, found through ``client`` (exactly what
    ``models:/churn-model/<version>`` resolves to), not through the process-wide tracking URI,
    which may point at another store. Models of any format this release reads load the same."""
    location = client.get_model_version_download_uri(MODEL_NAME, version)
    python_model = mlflow.pyfunc.load_model(location).unwrap_python_model()
    model = getattr(python_model, "model", None)
    if not isinstance(model, ChurnModel):
        raise TypeError(f"{MODEL_NAME} version {version} is not a churn model: {python_model!r}")
    return model


def load_champion(client: MlflowClient) -> tuple[ChurnModel, str]:
    """The champion model and its version, resolved once.

    The alias is read a single time and the model loaded by that version, so a promotion
    while a scoring run is under way cannot give it one version's model and another's
    number.
    """
    version = champion_version(client)
    if version is None:
        raise NoChampionError(
            f"{MODEL_NAME} has no {CHAMPION} yet: train one with `retention train` "
            "(or the retrain_job in Dagster), or promote a version"
        )
    return load_version(client, version), version


class NoChampionError(LookupError):
    """The registry has no champion model to score with."""
