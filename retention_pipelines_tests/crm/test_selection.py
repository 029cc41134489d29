"""Who is handed off, on the Telco warehouse (features built by the real dbt project) with
scores of several dates: entering the high band, a rise of at least the minimum, the cooldown,
the capacity in order of revenue at risk; the asset materialized by Dagster, run again after
the scores changed (nobody sent twice), and its CSV file when no webhook is configured."""

from __future__ import annotations

import csv
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from retention_pipelines.assets.crm import ASSET, DELIVERED, crm_retention_tasks
from retention_pipelines.core import audit, crm
from retention_pipelines.core.pseudonyms import display
from retention_pipelines.core.warehouse.crm_outbox import task_key
from retention_pipelines.core.warehouse.scores import SCORE_COLUMNS
from retention_pipelines.resources import CrmResource, WarehouseResource
from retention_pipelines_tests.crm.receiver import Receiver
from retention_pipelines_tests.helpers import TELCO_DAY

pytestmark = pytest.mark.slow

DAY = date.fromisoformat(TELCO_DAY)
PREVIOUS = DAY - timedelta(days=1)
OLDER = DAY - timedelta(days=14)
SECRET = "selection-test-secret"  # noqa: S105  # the test receiver's own key
REASONS = (("Contract: Month-to-month", 0.61), ("Tenure: 2 months", 0.33), ("Fiber optic", 0.1))
# Role -> (score of OLDER, of PREVIOUS, of DAY) as (probability, band); None: not scored then.
ROLES: dict[str, tuple[tuple[float, str] | None, ...]] = {
    "enters_high": (None, (0.20, "low"), (0.80, "high")),
    "rises_within_high": (None, (0.75, "high"), (0.90, "high")),
    "rises_too_little": (None, (0.40, "medium"), (0.50, "medium")),
    "rises_just_enough": (None, (0.45, "medium"), (0.60, "medium")),
    "rises_a_hair_short": (None, (0.50, "medium"), (0.64, "medium")),
    "falls_within_high": (None, (0.90, "high"), (0.70, "high")),
    "first_scored_high": (None, None, (0.70, "high")),
    "was_high_before_a_gap": ((0.80, "high"), None, (0.85, "high")),
    "rose_since_before_a_gap": ((0.10, "low"), None, (0.30, "medium")),
    "cooling_down": (None, (0.20, "low"), (0.90, "high")),
    "cooled_down": (None, (0.20, "low"), (0.90, "high")),
    "handed_off_days_later": (None, (0.20, "low"), (0.90, "high")),
    "rises_on_a_rerun": (None, (0.10, "low"), (0.10, "low")),
}
SELECTED = {
    "enters_high": "entered_high",
    "rises_within_high": "risk_rose",
    "rises_just_enough": "risk_rose",
    "first_scored_high": "entered_high",
    "rose_since_before_a_gap": "risk_rose",
    "cooled_down": "entered_high",
}
# Earlier hand-offs: the cooldown (30 days) keeps these customers out around DAY.
HANDED_OFF = {"cooling_down": -10, "cooled_down": -40, "handed_off_days_later": 5}


def selection(capacity: int = 200) -> crm.Selection:
    return crm.Selection(min_rise=0.15, cooldown_days=30, daily_capacity=capacity)


@pytest.fixture(scope="module")
def customers(telco_warehouse: str) -> dict[str, Any]:
    """Scores of three dates, written as the scoring asset would: every customer low on
    PREVIOUS and DAY, the customers of ``ROLES`` as their role says. Role -> customer id, and
    every customer's monthly charges."""
    with psycopg.connect(telco_warehouse) as conn:
        charges = dict(
            conn.execute(
                "select customer_id, monthly_charges from features.customer_features"
                " where snapshot_date = %s order by customer_id",
                (DAY,),
            ).fetchall()
        )
        roles = dict(zip(ROLES, list(charges)[100 : 100 + len(ROLES)], strict=True))
        rows = []
        for customer in charges:
            role = next((name for name, held in roles.items() if held == customer), None)
            scores = ROLES[role] if role else (None, (0.10, "low"), (0.10, "low"))
            for day, score in zip((OLDER, PREVIOUS, DAY), scores, strict=True):
                if score is not None:
                    rows.append(_score_row(day, customer, *score))
        with conn.cursor().copy(
            f"copy ml.churn_risk_scores ({', '.join(SCORE_COLUMNS)}) from stdin"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    return {"roles": roles, "charges": charges}


def _score_row(day: date, customer: str, probability: float, band: str) -> tuple[Any, ...]:
    reasons = [value for reason in REASONS for value in reason]
    return (day, customer, probability, band, *reasons, "churn-model", "7", datetime.now(UTC))


@pytest.fixture
def warehouse(telco_warehouse: str, customers: dict[str, Any]) -> str:
    """The warehouse with no hand-off but the earlier ones of ``HANDED_OFF``."""
    with psycopg.connect(telco_warehouse) as conn:
        conn.execute("delete from ml.crm_outbox")
        for role, days in HANDED_OFF.items():
            day, customer = DAY + timedelta(days=days), customers["roles"][role]
            conn.execute(
                "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
                " handoff_reason, churn_probability, risk_band, monthly_charges,"
                " revenue_at_risk, priority, talking_points, model_name, model_version,"
                " status, sent_at) values (%s, %s, %s, 'entered_high', 0.9, 'high', 50, 45, 1,"
                " '[]', 'churn-model', '7', 'sent', now())",
                (day, customer, task_key(day, customer)),
            )
    return telco_warehouse


def outbox(url: str, day: date = DAY) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select * from ml.crm_outbox where snapshot_date = %s order by priority", (day,)
        )
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def by_revenue(customers: dict[str, Any], roles: list[str]) -> list[str]:
    """The customers of ``roles``, the most revenue at risk first."""
    probability = {role: ROLES[role][2][0] for role in roles}  # type: ignore[index]
    return sorted(
        (customers["roles"][role] for role in roles),
        key=lambda customer: (
            -next(p for r, p in probability.items() if customers["roles"][r] == customer)
            * float(customers["charges"][customer]),
            customer,
        ),
    )


def test_the_day_s_tasks_are_who_entered_high_or_rose_and_is_not_cooling_down_by_revenue(
    warehouse: str, customers: dict[str, Any]
) -> None:
    outcome = crm.select_tasks(warehouse, DAY, selection())
    assert (outcome.selected, outcome.kept, outcome.replaced) == (len(SELECTED), 0, 0)
    rows = outbox(warehouse)
    roles = {customer: role for role, customer in customers["roles"].items()}
    assert {roles[row["customer_id"]]: row["handoff_reason"] for row in rows} == SELECTED
    assert [row["customer_id"] for row in rows] == by_revenue(customers, list(SELECTED))
    assert [row["priority"] for row in rows] == list(range(1, len(SELECTED) + 1))
    for row in rows:
        role, customer = roles[row["customer_id"]], row["customer_id"]
        older, previous, today = ROLES[role]
        before = previous or older
        assert row["previous_probability"] == (before[0] if before else None)
        assert row["churn_probability"] == today[0]  # type: ignore[index]
        assert row["revenue_at_risk"] == pytest.approx(
            today[0] * float(customers["charges"][customer])  # type: ignore[index]
        )
        assert row["idempotency_key"] == task_key(DAY, customer)
        assert row["talking_points"] == [
            {"reason": reason, "contribution": contribution} for reason, contribution in REASONS
        ]
        assert (row["status"], row["attempts"], row["model_version"]) == ("pending", 0, "7")


def test_the_daily_capacity_keeps_the_most_revenue_at_risk_and_a_new_selection_replaces_pending(
    warehouse: str, customers: dict[str, Any]
) -> None:
    crm.select_tasks(warehouse, DAY, selection(capacity=3))
    top = by_revenue(customers, list(SELECTED))
    assert [row["customer_id"] for row in outbox(warehouse)] == top[:3]
    outcome = crm.select_tasks(warehouse, DAY, selection(capacity=4))
    assert (outcome.selected, outcome.replaced) == (4, 3)
    assert [row["customer_id"] for row in outbox(warehouse)] == top[:4]


def test_a_date_with_no_scores_is_refused(warehouse: str) -> None:
    with pytest.raises(crm.NoScoresError, match="no rows for 2030-01-01"):
        crm.select_tasks(warehouse, date(2030, 1, 1), selection())


@contextmanager
def rising(url: str, customer: str) -> Iterator[None]:
    """The customer's score of DAY raised into the high band for the block."""
    statement = (
        "update ml.churn_risk_scores set churn_probability = %s, risk_band = %s"
        " where snapshot_date = %s and customer_id = %s"
    )
    with psycopg.connect(url) as conn:
        conn.execute(statement, (0.95, "high", DAY, customer))
    try:
        yield
    finally:
        with psycopg.connect(url) as conn:
            conn.execute(statement, (0.10, "low", DAY, customer))


def materialize(url: str, resource: CrmResource) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [crm_retention_tasks],
        partition_key=TELCO_DAY,
        resources={"warehouse": WarehouseResource(database_url=url), "crm": resource},
    )


def run_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node(ASSET)
    return {
        name: getattr(value, "value", value) for name, value in materialization.metadata.items()
    }


def test_the_asset_run_again_after_the_scores_changed_sends_only_the_new_task(
    warehouse: str, customers: dict[str, Any], tmp_path: Path
) -> None:
    riser = customers["roles"]["rises_on_a_rerun"]
    with Receiver(SECRET.encode()).running() as receiver:
        resource = CrmResource(
            crm_dir=str(tmp_path), webhook_url=receiver.url, webhook_secret=SECRET, batch_size=4
        )
        first = materialize(warehouse, resource)
        sent_first = {row["idempotency_key"]: row["sent_at"] for row in outbox(warehouse)}
        with rising(warehouse, riser):
            second = materialize(warehouse, resource)
    assert first.success and second.success
    rows = outbox(warehouse)
    assert len(rows) == len(SELECTED) + 1
    assert receiver.accepted == {row["idempotency_key"]: 1 for row in rows}  # nobody twice
    assert receiver.repeated == []
    assert {row["idempotency_key"]: row["sent_at"] for row in rows[:-1]} == sent_first
    assert rows[-1]["customer_id"] == riser  # after the tasks kept, whatever its revenue
    assert rows[-1]["priority"] == len(SELECTED) + 1

    metadata = run_metadata(second)
    assert metadata["tasks_selected"] == 1
    assert metadata["tasks_kept"] == len(SELECTED)
    assert (metadata["tasks_sent"], metadata["tasks_pending"], metadata["tasks_dead_letter"]) == (
        len(SELECTED) + 1, 0, 0
    )  # fmt: skip
    assert metadata["tasks_handed_off_now"] == 1
    assert metadata["destination"] == receiver.url
    [check] = second.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (DELIVERED, True)
    preview = metadata["tasks"]
    key = b"retention-tests-pseudonym-key"
    assert [record.data["customer"] for record in preview.records] == [
        display(row["customer_id"], key) for row in rows
    ]
    shown = str(first.all_events) + str(second.all_events)
    assert display(riser, key) in shown
    assert not [customer for customer in customers["charges"] if customer in shown]
    entries = [e for e in audit.entries(warehouse, kind="crm_handoff") if e.subject == TELCO_DAY]
    assert [entry.details["count"] for entry in entries[-2:]] == [len(SELECTED), 1]


def test_without_a_webhook_the_day_s_tasks_go_to_a_csv_file_only_its_owner_reads(
    warehouse: str, customers: dict[str, Any], tmp_path: Path
) -> None:
    resource = CrmResource(crm_dir=str(tmp_path / "crm"))
    assert materialize(warehouse, resource).success
    path = tmp_path / "crm" / f"retention_tasks_{TELCO_DAY}.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = list(csv.DictReader(path.open(encoding="utf-8")))
    rows = outbox(warehouse)
    assert [line["idempotency_key"] for line in first] == [row["idempotency_key"] for row in rows]
    assert first[0]["talking_points"] == " | ".join(reason for reason, _ in REASONS)
    assert {(row["status"], row["destination"]) for row in rows} == {("sent", str(path))}
    entries = [e for e in audit.entries(warehouse, kind="crm_handoff") if e.subject == TELCO_DAY]
    assert entries[-1].details["destination"] == str(path)
    assert entries[-1].details["count"] == len(SELECTED)

    with rising(warehouse, customers["roles"]["rises_on_a_rerun"]):
        result = materialize(warehouse, resource)
    again = list(csv.DictReader(path.open(encoding="utf-8")))
    assert again[: len(first)] == first  # the day's whole hand-off, the earlier tasks unchanged
    assert [line["customer_id"] for line in again[len(first) :]] == [
        customers["roles"]["rises_on_a_rerun"]
    ]
    assert run_metadata(result)["tasks_handed_off_now"] == 1
    assert not list(path.parent.glob(".*.tmp"))


def test_tasks_an_outage_left_pending_on_an_earlier_night_go_out_with_the_next_night_s(
    warehouse: str, customers: dict[str, Any], tmp_path: Path
) -> None:
    left, day = customers["roles"]["rises_too_little"], PREVIOUS
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "insert into ml.crm_outbox (snapshot_date, customer_id, idempotency_key,"
            " handoff_reason, churn_probability, risk_band, monthly_charges, revenue_at_risk,"
            " priority, talking_points, model_name, model_version) values"
            " (%s, %s, %s, 'entered_high', 0.9, 'high', 50, 45, 1, '[]', 'churn-model', '7')",
            (day, left, task_key(day, left)),
        )
    with Receiver(SECRET.encode()).running() as receiver:
        resource = CrmResource(
            crm_dir=str(tmp_path), webhook_url=receiver.url, webhook_secret=SECRET
        )
        assert materialize(warehouse, resource).success
    assert receiver.accepted[task_key(day, left)] == 1
    assert [row["status"] for row in outbox(warehouse, day)] == ["sent"]
    assert {row["status"] for row in outbox(warehouse)} == {"sent"}
    subjects = [entry.subject for entry in audit.entries(warehouse, kind="crm_handoff")][-2:]
    assert subjects == [day.isoformat(), TELCO_DAY]  # oldest first
