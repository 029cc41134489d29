"""The audit log on real Postgres, MLflow and Dagster: every move of the champion, every
refusal of the gate and every API key leaves an entry, a change that fails leaves none, the
command line prints them, and nobody who writes through the platform can change one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import mlflow
import numpy as np
import psycopg
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from retention_pipelines import cli
from retention_pipelines.assets.training import champion_model
from retention_pipelines.core import api_keys, audit, registry
from retention_pipelines.core.features import LABEL_COLUMN
from retention_pipelines.core.training import TrainingSplit
from retention_pipelines.resources import MlflowResource, TrainingResource, WarehouseResource
from retention_pipelines.settings import get_settings
from retention_pipelines_tests.churn_models import (
    constant_churn_model,
    feature_rows,
    log_churn_model,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri)


@pytest.fixture(scope="module")
def experiment_id(client: MlflowClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    return client.create_experiment("audit-tests", artifact_location=artifacts.resolve().as_uri())


def _register(client: MlflowClient, experiment_id: str, probability: float) -> str:
    """A constant model (everyone gets ``probability``) registered as the challenger."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        model_uri = log_churn_model(constant_churn_model(probability))
    return registry.register_challenger(
        client, model_uri=model_uri, run_id=run.info.run_id, tags={"data_snapshots": "2026-01-15"}
    )


def _last_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select coalesce(max(audit_id), 0) from ops.audit_log").fetchone()
    return int(row[0]) if row else 0


def _since(url: str, last_id: int) -> list[audit.AuditEntry]:
    return [entry for entry in audit.entries(url) if entry.audit_id > last_id]


# --- the promotion gate, in Dagster ----------------------------------------------------------


def _gate(url: str, mlflow_uri: str, artifacts: Path, version: str) -> dg.ExecuteInProcessResult:
    """``champion_model`` materialized by Dagster on forty labelled customers, half of whom
    churned, with ``version`` as the run's challenger."""
    rows = feature_rows()
    rows[LABEL_COLUMN] = np.arange(len(rows)) % 2 == 0
    split = TrainingSplit(train=rows, validation=rows, test=rows)

    @dg.asset(name="training_set", group_name="training")
    def training_set() -> TrainingSplit:
        return split

    @dg.asset(name="registered_churn_model", group_name="training")
    def registered_churn_model() -> dict[str, str]:
        return {"version": version}

    warehouse = WarehouseResource(database_url=url)
    return dg.materialize(
        [training_set, registered_churn_model, champion_model],
        resources={
            "warehouse": warehouse,
            "training": TrainingResource(),
            "mlflow_registry": MlflowResource(
                warehouse=warehouse,
                tracking_uri=mlflow_uri,
                artifact_root=str(artifacts),
                experiment="audit-tests",
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )


@pytest.mark.slow  # two Dagster runs loading two MLflow models, ~5 s
def test_the_gate_records_its_promotion_and_its_refusal_by_the_run(
    module_database_url: str,
    mlflow_uri: str,
    client: MlflowClient,
    experiment_id: str,
    tmp_path: Path,
) -> None:
    url, before = module_database_url, _last_id(module_database_url)
    good = _register(client, experiment_id, 0.5)  # Brier 0.25 on a half-churned sample
    first = _gate(url, mlflow_uri, tmp_path, good)
    worse = _register(client, experiment_id, 0.1)  # Brier 0.41: refused
    second = _gate(url, mlflow_uri, tmp_path, worse)

    assert first.success and second.success
    assert registry.champion_version(client) == good
    promotion, refusal = _since(url, before)
    assert (promotion.kind, promotion.subject) == ("promotion", f"churn-model v{good}")
    assert promotion.actor == audit.run_actor(first.run_id) == f"run:{first.run_id}"
    assert promotion.reason == "first model: there is no champion yet"
    assert promotion.details == {"model": "churn-model", "version": good, "previous": None}
    assert (refusal.kind, refusal.subject) == ("gate_refusal", f"churn-model v{worse}")
    assert refusal.actor == f"run:{second.run_id}"
    assert refusal.reason is not None and refusal.reason.startswith("Brier 0.4100 is")
    assert refusal.details["champion"] == good
    assert refusal.details["challenger_brier"] == pytest.approx(0.41)
    assert refusal.details["champion_brier"] == pytest.approx(0.25)
    tags = client.get_model_version(registry.MODEL_NAME, worse).tags
    assert tags["gate_decision"] == refusal.reason


# --- promotions and rollbacks by people ------------------------------------------------------


@pytest.fixture
def platform_env(
    module_database_url: str, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The command line pointed at this module's warehouse and MLflow store."""
    monkeypatch.setenv("RETENTION_DATABASE_URL", module_database_url)
    monkeypatch.setenv("RETENTION_MLFLOW_DATABASE", urlsplit(mlflow_uri).path.lstrip("/"))
    monkeypatch.setattr(cli.console, "_width", 250)  # one line per row, whatever the terminal
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_promote_and_rollback_on_the_command_line_record_the_user_and_the_reason(
    module_database_url: str, client: MlflowClient, platform_env: None
) -> None:
    url, before = module_database_url, _last_id(module_database_url)
    champion = registry.champion_version(client)
    other = next(
        str(v.version)
        for v in client.search_model_versions(f"name = '{registry.MODEL_NAME}'")
        if str(v.version) != champion
    )
    promoted = runner.invoke(cli.app, ["model", "promote", other, "--reason", "ops asked"])
    rolled_back = runner.invoke(cli.app, ["model", "rollback", "--reason", "too many calls"])

    assert promoted.exit_code == rolled_back.exit_code == 0, promoted.output + rolled_back.output
    promotion, rollback = _since(url, before)
    assert (promotion.kind, promotion.subject, promotion.reason) == (
        "promotion",
        f"churn-model v{other}",
        "ops asked",
    )
    assert promotion.actor == rollback.actor == audit.cli_actor()
    assert promotion.details["previous"] == champion
    assert (rollback.kind, rollback.subject, rollback.reason) == (
        "rollback",
        f"churn-model v{champion}",
        "too many calls",
    )
    assert rollback.details == {"model": "churn-model", "version": champion, "previous": other}


def test_a_move_that_fails_records_nothing(module_database_url: str, client: MlflowClient) -> None:
    url, before = module_database_url, _last_id(module_database_url)
    champion = registry.champion_version(client)
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.promote(client, "99", reason="typo", actor="pytest", audit_url=url)
    # After the command line's promotion and rollback, no earlier champion is left.
    with pytest.raises(ValueError, match="nothing to roll back"):
        registry.rollback(client, reason="once more", actor="pytest", audit_url=url)
    assert registry.champion_version(client) == champion
    assert _since(url, before) == []


def test_the_audit_command_prints_entries_oldest_first_filtered_by_kind_time_and_count(
    module_database_url: str, platform_env: None
) -> None:
    every = audit.entries(module_database_url)
    moves = [e for e in every if e.kind in ("promotion", "rollback")]

    listed = runner.invoke(cli.app, ["audit"])
    promotions = runner.invoke(cli.app, ["audit", "--kind", "promotion"])
    latest = runner.invoke(cli.app, ["audit", "--limit", "1"])
    future = runner.invoke(cli.app, ["audit", "--since", "2999-01-01"])
    timed = runner.invoke(cli.app, ["audit", "--since", "2000-01-01T08:30"])

    for result in (listed, promotions, latest, future, timed):
        assert result.exit_code == 0, result.output
    lines = listed.output.splitlines()
    rows = [next(i for i, line in enumerate(lines) if e.subject in line and e.kind in line)
            for e in moves]  # fmt: skip
    assert rows == sorted(rows)  # oldest first
    assert "ops asked" in listed.output and "too many calls" in listed.output
    assert audit.cli_actor() in listed.output
    assert "gate_refusal" in listed.output and "gate_refusal" not in promotions.output
    assert "too many calls" not in promotions.output
    assert f"({len(every)} entries" in timed.output
    assert "(1 entries" in latest.output and every[-1].subject in latest.output
    assert "(0 entries" in future.output


def test_the_audit_command_refuses_an_unknown_kind_or_date_clearly(platform_env: None) -> None:
    wide = {"COLUMNS": "250"}  # the usage error's panel on one line
    kind = runner.invoke(cli.app, ["audit", "--kind", "promotions"], env=wide)
    since = runner.invoke(cli.app, ["audit", "--since", "yesterday"], env=wide)
    assert kind.exit_code == since.exit_code == 2
    assert "unknown kind 'promotions': one of promotion, rollback" in kind.output
    assert "is not a date or time like 2026-11-26" in since.output


# --- API keys --------------------------------------------------------------------------------


def test_creating_and_revoking_a_key_records_both_and_a_refused_one_records_nothing(
    module_database_url: str,
) -> None:
    url, before = module_database_url, _last_id(module_database_url)
    name = f"crm-{uuid.uuid4().hex[:6]}"
    _, key = api_keys.create_key(url, name, ("predict", "read"), actor="cli:alice")
    with pytest.raises(api_keys.ApiKeyError, match="already named"):
        api_keys.create_key(url, name, ("predict",), actor="cli:alice")
    api_keys.revoke_key(url, name, actor="cli:bob")
    with pytest.raises(api_keys.ApiKeyError, match="no live key"):
        api_keys.revoke_key(url, name, actor="cli:bob")

    created, revoked = _since(url, before)
    assert (created.kind, created.subject, created.actor) == ("api_key_created", name, "cli:alice")
    assert created.details == {"key_id": key.key_id, "scopes": ["predict", "read"]}
    assert (revoked.kind, revoked.subject, revoked.actor) == ("api_key_revoked", name, "cli:bob")
    assert revoked.details == {"key_id": key.key_id}


# --- append-only -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "update ops.audit_log set reason = 'rewritten'",
        "delete from ops.audit_log",
        "truncate ops.audit_log",
    ],
)
def test_the_platforms_own_connection_cannot_change_or_remove_entries(
    module_database_url: str, statement: str
) -> None:
    audit.record_now(module_database_url, "purge", "a table", actor="pytest", reason="kept")
    before = audit.entries(module_database_url)
    with (
        psycopg.connect(module_database_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
    ):
        conn.execute(statement)
    assert audit.entries(module_database_url) == before


@pytest.fixture
def granted_role(module_database_url: str) -> Iterator[str]:
    """A throwaway role (roles are the cluster's) owning nothing, granted on ops.audit_log
    exactly what the platform's own role holds there."""
    role = f"retention_test_writer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        held = [
            row[0]
            for row in conn.execute(
                "select privilege_type from information_schema.table_privileges"
                " where table_schema = 'ops' and table_name = 'audit_log'"
                " and grantee = current_user"
            )
        ]
        conn.execute(f"create role {role} nologin nosuperuser")
        conn.execute(f"grant usage on schema ops to {role}")
        conn.execute(f"grant {', '.join(held)} on ops.audit_log to {role}")
        try:
            yield role
        finally:
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")


def test_a_role_granted_the_platforms_privileges_can_append_but_not_change_or_remove(
    module_database_url: str, granted_role: str
) -> None:
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        conn.execute(f"set role {granted_role}")
        conn.execute(
            "insert into ops.audit_log (kind, actor, subject) values ('purge', 'pytest', 'x')"
        )
        for statement in (
            "update ops.audit_log set reason = 'rewritten'",
            "delete from ops.audit_log",
            "truncate ops.audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)
        conn.execute("reset role")
        row = conn.execute(
            "select actor, subject from ops.audit_log order by audit_id desc limit 1"
        ).fetchone()
    assert row == ("pytest", "x")
