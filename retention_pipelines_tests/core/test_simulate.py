"""Simulated days: one customer base followed through time, quiet days that differ by turnover
only, a drift from a chosen day, labels that arrive late, and the ``retention simulate``
command."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retention_pipelines.cli import app
from retention_pipelines.core.ingestion import read_validated_chunks
from retention_pipelines.datagen import (
    SIMULATION_BLOCK_ROWS,
    TELCO_COLUMNS,
    SimulatedDay,
    Simulation,
    landing_file_name,
    write_simulation,
)

START = date(2026, 3, 1)
CUSTOMERS, DAYS, DRIFT_FROM, LABEL_LAG, TURNOVER = 2_000, 8, 6, 2, 0.05
NEW_A_DAY = 100  # CUSTOMERS x TURNOVER
SIMULATION = Simulation(
    customers=CUSTOMERS,
    days=DAYS,
    start=START,
    drift_from=DRIFT_FROM,
    label_lag=LABEL_LAG,
    turnover=TURNOVER,
    seed=11,
)
runner = CliRunner()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[SimulatedDay]:
    return list(write_simulation(SIMULATION, tmp_path_factory.mktemp("landing")))


@pytest.fixture(scope="module")
def frames(written: list[SimulatedDay]) -> dict[int, pd.DataFrame]:
    """Each day's file as ingestion reads it, by 1-based day."""
    return {result.day: _read(result.path) for result in written}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["customerID"])


def _share(frame: pd.DataFrame, column: str, value: str) -> float:
    return float((frame[column] == value).mean())


def _mean(frame: pd.DataFrame, column: str) -> float:
    return float(pd.to_numeric(frame[column]).mean())


def _churn_share(frame: pd.DataFrame) -> float:
    labelled = frame[frame["Churn"] != ""]
    return float((labelled["Churn"] == "Yes").mean())


def test_one_file_a_day_named_by_its_date(written: list[SimulatedDay]) -> None:
    folder = written[0].path.parent
    expected = [landing_file_name(START + timedelta(days=offset)) for offset in range(DAYS)]
    assert sorted(path.name for path in folder.iterdir()) == expected
    assert [result.path.name for result in written] == expected
    assert [result.day for result in written] == list(range(1, DAYS + 1))


def test_every_file_has_the_telco_header_and_passes_ingestion(written: list[SimulatedDay]) -> None:
    for result in (written[0], written[-1]):
        assert tuple(_read(result.path).columns) == TELCO_COLUMNS
        chunks = list(read_validated_chunks(result.path, chunk_rows=1_000))
        assert sum(len(chunk.rejects) for chunk in chunks) == 0
        assert sum(len(chunk.valid) for chunk in chunks) == CUSTOMERS


def test_the_same_seed_writes_the_same_files_and_another_seed_others(tmp_path: Path) -> None:
    small = Simulation(customers=300, days=2, start=START, drift_from=2, seed=11)
    again = list(write_simulation(small, tmp_path / "again"))
    twice = list(write_simulation(small, tmp_path / "twice"))
    other = Simulation(customers=300, days=2, start=START, drift_from=2, seed=12)
    elsewhere = list(write_simulation(other, tmp_path / "other"))
    for first, second, third in zip(again, twice, elsewhere, strict=True):
        assert first.path.read_bytes() == second.path.read_bytes()
        assert first.path.read_bytes() != third.path.read_bytes()


def test_a_quiet_day_replaces_the_turnover_and_keeps_everyone_else_byte_for_byte(
    frames: dict[int, pd.DataFrame],
) -> None:
    yesterday, today = frames[1].set_index("customerID"), frames[2].set_index("customerID")
    stayed = yesterday.index.intersection(today.index)
    assert len(stayed) == CUSTOMERS - NEW_A_DAY
    assert today.index.is_unique
    # Churn is left out: a customer's label may arrive between the two days.
    features = [column for column in TELCO_COLUMNS if column not in {"customerID", "Churn"}]
    pd.testing.assert_frame_equal(yesterday.loc[stayed, features], today.loc[stayed, features])


def test_quiet_days_differ_a_little_but_share_their_distribution(
    frames: dict[int, pd.DataFrame],
) -> None:
    first, last_quiet = frames[1], frames[DRIFT_FROM - 1]
    assert len(_ids(first) & _ids(last_quiet)) == CUSTOMERS - (DRIFT_FROM - 2) * NEW_A_DAY
    for contract in ("Month-to-month", "One year", "Two year"):
        assert _share(first, "Contract", contract) != _share(last_quiet, "Contract", contract)
        assert _share(first, "Contract", contract) == pytest.approx(
            _share(last_quiet, "Contract", contract), abs=0.03
        )
    assert _mean(last_quiet, "MonthlyCharges") == pytest.approx(
        _mean(first, "MonthlyCharges"), rel=0.03
    )
    assert _mean(last_quiet, "tenure") == pytest.approx(_mean(first, "tenure"), rel=0.05)


def test_drifted_days_move_the_drifted_columns_only(frames: dict[int, pd.DataFrame]) -> None:
    quiet, drifted = frames[DRIFT_FROM - 1], frames[DRIFT_FROM]
    assert _mean(drifted, "MonthlyCharges") > 1.12 * _mean(quiet, "MonthlyCharges")
    assert _mean(drifted, "tenure") < 0.85 * _mean(quiet, "tenure")
    month_to_month = "Month-to-month"
    assert (
        _share(drifted, "Contract", month_to_month)
        > _share(quiet, "Contract", month_to_month) + 0.08
    )
    assert _share(drifted, "gender", "Male") == pytest.approx(
        _share(quiet, "gender", "Male"), abs=0.03
    )


def test_drift_shifts_the_customers_who_stay_rather_than_replacing_them(
    frames: dict[int, pd.DataFrame],
) -> None:
    quiet = frames[DRIFT_FROM - 1].set_index("customerID")
    drifted = frames[DRIFT_FROM].set_index("customerID")
    stayed = quiet.index.intersection(drifted.index)
    assert len(stayed) == CUSTOMERS - NEW_A_DAY
    for unchanged in ("gender", "SeniorCitizen", "Partner", "Dependents"):
        assert (quiet.loc[stayed, unchanged] == drifted.loc[stayed, unchanged]).all()
    rise = pd.to_numeric(drifted.loc[stayed, "MonthlyCharges"]) / pd.to_numeric(
        quiet.loc[stayed, "MonthlyCharges"]
    )
    assert rise.median() == pytest.approx(1.18, abs=0.03)  # 1 + 0.3 x drift 0.6


def test_every_day_labels_the_customers_of_label_lag_days_earlier(
    frames: dict[int, pd.DataFrame],
) -> None:
    for day, frame in frames.items():
        labelled = frame["Churn"] != ""
        assert labelled.sum() == CUSTOMERS - LABEL_LAG * NEW_A_DAY
        assert set(frame.loc[labelled, "Churn"]) == {"Yes", "No"}
        if day > LABEL_LAG:
            earlier = _ids(frames[day - LABEL_LAG])
            assert set(frame.loc[labelled, "customerID"]) <= earlier
            assert not set(frame.loc[~labelled, "customerID"]) & earlier


def test_a_label_once_known_stays_known_while_the_customer_stays(
    frames: dict[int, pd.DataFrame],
) -> None:
    yesterday, today = frames[3], frames[4]
    known = set(yesterday.loc[yesterday["Churn"] != "", "customerID"])
    still_here = today[today["customerID"].isin(known)]
    assert len(still_here) == len(known) - NEW_A_DAY
    assert (still_here["Churn"] != "").all()


def test_labelled_rows_of_drifted_days_carry_the_drifted_churn(
    frames: dict[int, pd.DataFrame], written: list[SimulatedDay]
) -> None:
    quiet = [_churn_share(frames[day]) for day in range(1, DRIFT_FROM)]
    drifted = [_churn_share(frames[day]) for day in range(DRIFT_FROM, DAYS + 1)]
    assert max(quiet) - min(quiet) < 0.03
    assert min(drifted) > max(quiet) + 0.08
    for result in written:
        frame = frames[result.day]
        assert result.labelled == (frame["Churn"] != "").sum()
        assert result.churned == (frame["Churn"] == "Yes").sum()
        assert result.snapshot_date == START + timedelta(days=result.day - 1)


def test_the_drift_schedule_is_a_step_a_ramp_or_nothing() -> None:
    step = Simulation(customers=10, days=5, start=START, drift_from=3, drift=0.6)
    assert [step.drift_on(day) for day in range(1, 6)] == [0.0, 0.0, 0.6, 0.6, 0.6]
    ramp = Simulation(customers=10, days=6, start=START, drift_from=2, drift=0.6, ramp_days=3)
    assert [ramp.drift_on(day) for day in range(1, 7)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.6, 0.6]
    )
    never = Simulation(customers=10, days=3, start=START, drift_from=0)
    assert [never.drift_on(day) for day in range(1, 4)] == [0.0, 0.0, 0.0]


def test_a_day_that_spans_two_blocks_keeps_its_customers_distinct_and_stable(
    tmp_path: Path,
) -> None:
    customers = SIMULATION_BLOCK_ROWS - 10
    crossing = Simulation(customers=customers, days=2, start=START, turnover=0.01, label_lag=0)
    first, second = (_read(result.path) for result in write_simulation(crossing, tmp_path))
    assert second["customerID"].is_unique
    assert len(_ids(first) & _ids(second)) == customers - 200
    assert (second["Churn"] != "").all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"days": 0}, "days must be at least 1"),
        ({"drift_from": 9}, "drift_from must be a day from 1 to 8"),
        ({"drift_from": -1}, "drift_from must be a day from 1 to 8"),
        ({"customers": 0}, "customers must be at least 1"),
        ({"drift": 1.5}, "drift must be between 0 and 1"),
        ({"label_lag": -1}, "label_lag must be 0 or more"),
        ({"turnover": -0.1}, "turnover must be between 0 and 1"),
        ({"ramp_days": 0}, "ramp_days must be at least 1"),
        ({"label_lag": 20}, "no customer would be labelled"),
    ],
)
def test_an_impossible_run_is_refused_before_anything_is_written(
    change: dict[str, float], message: str
) -> None:
    arguments = {
        "customers": CUSTOMERS,
        "days": DAYS,
        "start": START,
        "drift_from": DRIFT_FROM,
        "label_lag": LABEL_LAG,
        "turnover": TURNOVER,
    }
    with pytest.raises(ValueError, match=message):
        Simulation(**{**arguments, **change})


def test_simulate_writes_days_ending_today_and_prints_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", "--days", "3", "--drift-from", "3", "--customers", "300",
         "--landing-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    today = date.today()
    dates = [today - timedelta(days=offset) for offset in (2, 1, 0)]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        landing_file_name(day) for day in dates
    ]
    for day in dates:
        assert day.isoformat() in result.output
    assert "0.60" in result.output
    assert "282" in result.output  # labelled: 300 - 3 days x 6 new customers a day
    assert all(len(_read(tmp_path / landing_file_name(day))) == 300 for day in dates)


def test_simulate_takes_a_start_date_and_none_for_no_drift(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", "--days", "2", "--drift-from", "none", "--customers", "200",
         "--start", "2026-02-27", "--label-lag", "0", "--landing-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "customers_2026-02-27.csv",
        "customers_2026-02-28.csv",
    ]
    assert (_read(tmp_path / "customers_2026-02-28.csv")["Churn"] != "").all()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--days", "0", "--drift-from", "0"], "days must be at least 1"),
        (["--days", "3", "--drift-from", "4"], "drift_from must be a day from 1 to 3"),
        (["--days", "3", "--drift-from", "soon"], "is not a day number"),
        (["--days", "3", "--drift-from", "1", "--customers", "0"], "customers must be at least"),
        (["--days", "3", "--drift-from", "1", "--drift", "1.5"], "drift must be between 0 and 1"),
        (["--days", "3", "--drift-from", "1", "--label-lag", "-1"], "label_lag must be 0 or more"),
        (["--days", "3", "--drift-from", "1", "--start", "1/3/2026"], "is not a date like"),
    ],
)
def test_simulate_rejects_bad_arguments_as_usage_errors(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["simulate", *arguments, "--landing-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not any(tmp_path.iterdir())
