"""The ``retention`` command: generate and land data, train and score through the local
Dagster instance, manage the database and the model's aliases, run the demo."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import shutil
import sys
import warnings
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from retention_pipelines.core import database
from retention_pipelines.core.audit import KINDS as AUDIT_KINDS
from retention_pipelines.core.ingestion import (
    LandingFileError,
    LandingFormat,
    landing_file_name,
)
from retention_pipelines.core.landing import (
    LandingError,
    check_snapshot_date,
    land_file,
    parse_snapshot_date,
)
from retention_pipelines.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retention_pipelines.datagen import SimulatedDay
    from retention_pipelines.demo import DemoReport
    from retention_pipelines.local_runs import RunInterrupted, RunOutcome, RunProgress


class RetentionGroup(TyperGroup):
    """The command group that turns the failures a person is expected to meet into one
    sentence and a non-zero exit, wherever in a command they happen; ``--debug`` lets them
    through with their traceback. A run stopped by a signal ends the process here."""

    def invoke(self, ctx: click.Context) -> Any:
        from retention_pipelines.local_runs import RunInterrupted  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except RunInterrupted as interrupted:
            _exit_interrupted(interrupted)
        except Exception as error:
            sentence = _expected_failure(error)
            if sentence is None or ctx.params.get("debug"):
                raise
            console.print(f"[red]{sentence}[/red]", soft_wrap=True, highlight=False)
            raise typer.Exit(code=1) from error


app = typer.Typer(
    cls=RetentionGroup,
    help="RetentionAI: churn scores, reasons and drift, orchestrated by Dagster.",
)
db_app = typer.Typer(
    help="The platform's Postgres: embedded by default, or RETENTION_DATABASE_URL."
)
app.add_typer(db_app, name="db")
model_app = typer.Typer(help="The churn model's aliases in the MLflow registry.")
app.add_typer(model_app, name="model")
console = Console()
# Libraries that report their own bookkeeping at INFO (creating MLflow's tables, migrations):
# the command line says what it did itself.
QUIET_LOGGERS = ("mlflow", "alembic")
# Warnings about the platform's own code, for its developers (the tests show them), not for
# the person at the command line: Dagster's beta notice of the one-partition backfill policy.
QUIET_WARNINGS = ("Parameter `backfill_policy`",)


DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Show a failure's traceback instead of one sentence."),
]


@app.callback()
def main(debug: DebugOption = False) -> None:
    """RetentionAI: churn scores, reasons and drift, orchestrated by Dagster."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # MLflow sets its own loggers' level when it is imported (later, on use): from here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    database.set_connect_retry(get_settings().db_connect_retry_s)


# The libpq messages of a connection that could not be made (psycopg, and psycopg2 under
# dagster-postgres), whatever SQLAlchemy, Dagster, MLflow or a retry wrapped them in.
_CONNECTION_FAILED = re.compile(
    r"connection to server|could not connect|connection failed|failed to resolve host|"
    r"could not translate host name"
)


def _expected_failure(error: BaseException) -> str | None:
    """One sentence for a failure a person is expected to meet, or None for a defect."""
    reason = _connection_failure(error)
    if reason is None:
        return None
    settings = get_settings()
    where = (
        f"the database at {database.masked_url(settings.database_url)}"
        if settings.database_url
        else f"the embedded Postgres in {settings.embedded_pgdata}"
    )
    return f"cannot reach {where}: {reason}"


def _connection_failure(error: BaseException) -> str | None:
    """Why a connection to Postgres failed, if ``error`` or an error it wraps says so: the
    last clause of libpq's first line ("connection refused")."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = str(current).strip().split("\n", 1)[0]
        if type(current).__name__ == "OperationalError" and _CONNECTION_FAILED.search(line):
            reason = re.sub(r"^(FATAL:|\[Errno -?\d+\])\s*", "", line.rsplit(": ", 1)[-1].strip())
            return reason[:1].lower() + reason[1:]
        current = current.__cause__ or current.__context__
    return None


def _exit_interrupted(interrupted: RunInterrupted) -> None:
    """Say that the run was cancelled, and end the process now: the run's thread may still
    be running Python code, and nothing of it should outlive the signal."""
    log = f" (log: {interrupted.log_path})" if interrupted.log_path else ""
    console.print(f"[red]{interrupted}[/red]{log}", soft_wrap=True, highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    code = {"SIGINT": 130, "SIGTERM": 143}.get(interrupted.signal_name, 1)
    os._exit(code)


DateOption = Annotated[
    str, typer.Option("--date", help="Snapshot date, YYYY-MM-DD (default: today).")
]


def _parse_date(value: str | None) -> date:
    if not value:
        return date.today()  # the operator's calendar day
    try:
        return parse_snapshot_date(value)
    except LandingError as error:
        raise typer.BadParameter(f"{value[:64]!r} is not a date like 2026-11-26") from error


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


def _bar_progress(on: Console | None = None, *, transient: bool = False) -> Progress:
    """A progress bar with a count, for work whose size is known; a ``transient`` one is
    gone when the work is done (a summary follows it)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=on or console,
        transient=transient,
    )


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5_000,
    snapshot_date: DateOption = "",
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same file.")] = 0,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="Distribution shift, 0..1.")] = 0.0,
    labelled: Annotated[bool, typer.Option("--labelled/--unlabelled", help="Fill Churn.")] = True,
    out: Annotated[Path | None, typer.Option(help="Folder (default: the landing folder).")] = None,
) -> None:
    """Write a synthetic landing file ``customers_YYYY-MM-DD.csv`` with the Telco columns."""
    from retention_pipelines.datagen import write_landing_csv  # noqa: PLC0415

    day = _parse_date(snapshot_date)
    folder = out or get_settings().resolved_landing_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / landing_file_name(day)
    with _progress() as progress:
        progress.add_task(f"generating {customers:,} customers for {day}", total=None)
        write_landing_csv(path, customers, seed=seed, drift=drift, labelled=labelled)
    console.print(f"wrote {customers:,} customers to {path}")


# One line per paragraph: typer's rich help keeps a docstring's line breaks.
SIMULATE_HELP = (
    "Write N days of landing files in which the customers drift from a chosen day.\n\n"
    "Customers persist from day to day: each day the longest-standing --turnover share leaves"
    " and as many new customers join, the only noise of quiet days.\n\n"
    "Drift is a step: from day --drift-from (1-based; 0 or none: never) every customer is"
    " shifted with strength --drift (see retention generate --drift); --ramp-days above 1"
    " makes it a linear ramp over that many days.\n\n"
    "Labels arrive --label-lag days late: in each file the customers who were already there"
    " --label-lag days earlier carry Churn (Yes/No: their outcome as this file describes them,"
    " so drifted days carry the drifted churn); newer customers have it blank. Day 1 counts"
    " the base as already that old, so it is labelled too and a first model can train on it."
)


def _parse_drift_from(value: str) -> int:
    """A 1-based day, or 0 / none / never for no drift."""
    if value.strip().lower() in {"0", "none", "never"}:
        return 0
    try:
        return int(value)
    except ValueError as error:
        raise typer.BadParameter(
            f"{value!r} is not a day number (or 0 / none)", param_hint="--drift-from"
        ) from error


@app.command(help=SIMULATE_HELP)
def simulate(
    days: Annotated[int, typer.Option(help="Number of daily files.")],
    drift_from: Annotated[str, typer.Option(help="First drifted day, 1..DAYS; 0 or none: never.")],
    customers: Annotated[int, typer.Option(help="Customers in each file.")] = 5_000,
    start: Annotated[
        str, typer.Option(help="Date of day 1, YYYY-MM-DD (default: the last file is today's).")
    ] = "",
    drift: Annotated[float, typer.Option(help="Strength reached once drift starts, 0..1.")] = 0.6,
    label_lag: Annotated[int, typer.Option(help="Days until a customer's label is known.")] = 3,
    turnover: Annotated[float, typer.Option(help="Share of customers replaced each day.")] = 0.02,
    ramp_days: Annotated[int, typer.Option(help="Days drift takes to reach --drift.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    landing_dir: Annotated[
        Path | None, typer.Option(help="Folder (default: the landing folder).")
    ] = None,
) -> None:
    """Write N days of landing files in which the customers drift from a chosen day (see
    SIMULATE_HELP and datagen.Simulation)."""
    from retention_pipelines.datagen import Simulation, write_simulation  # noqa: PLC0415

    first_day = _parse_date(start) if start else date.today() - timedelta(days=max(days, 1) - 1)
    try:
        simulation = Simulation(
            customers=customers,
            days=days,
            start=first_day,
            drift_from=_parse_drift_from(drift_from),
            drift=drift,
            label_lag=label_lag,
            turnover=turnover,
            ramp_days=ramp_days,
            seed=seed,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    folder = landing_dir or get_settings().resolved_landing_dir
    with _bar_progress() as progress:
        task = progress.add_task(f"simulating {customers:,} customers a day", total=days)
        written: list[SimulatedDay] = []
        for result in write_simulation(simulation, folder):
            written.append(result)
            progress.update(task, advance=1, description=f"wrote {result.path.name}")
    _print_simulation(written, folder)


def _print_simulation(written: list[SimulatedDay], folder: Path) -> None:
    table = Table(title=f"Simulated days in {folder}")
    for column in ("day", "date", "customers", "drift", "labelled", "churn of labelled"):
        table.add_column(column, justify="left" if column == "date" else "right")
    for result in written:
        table.add_row(
            str(result.day),
            result.snapshot_date.isoformat(),
            f"{result.customers:,}",
            f"{result.drift:.2f}",
            f"{result.labelled:,}",
            f"{result.churned / result.labelled:.1%}" if result.labelled else "-",
        )
    console.print(table)


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A Telco-style CSV, plain or gzip.")],
    snapshot_date: DateOption = "",
    encoding: Annotated[
        str | None,
        typer.Option(help="The file's encoding, e.g. cp1252 (default: the landing encoding)."),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="The file's delimiter, e.g. ';' (default: the landing delimiter)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the date's landing file if it has one.")
    ] = False,
) -> None:
    """Check a CSV and put it into the landing folder as the snapshot of a date.

    A file in another encoding or delimiter is converted to the landing format. Materialize
    ``raw_customer_snapshot`` for that date (Dagster UI, or ``retention score``) to load it.
    """
    settings = get_settings()
    try:
        day = parse_snapshot_date(snapshot_date) if snapshot_date else date.today()
        check_snapshot_date(
            day,
            first=date.fromisoformat(settings.partitions_start_date),
            today=datetime.now(ZoneInfo(settings.timezone)).date(),
        )
        landing_format = LandingFormat(
            encoding=settings.landing_encoding,
            delimiter=settings.landing_delimiter,
            max_field_chars=settings.max_field_chars,
        )
        source_format = LandingFormat(
            encoding=encoding or landing_format.encoding,
            delimiter=delimiter or landing_format.delimiter,
            max_field_chars=landing_format.max_field_chars,
        )
        landed = land_file(
            path,
            settings.resolved_landing_dir,
            day,
            source_format=source_format,
            landing_format=landing_format,
            max_bytes=settings.max_file_bytes,
            replace=replace,
        )
    except (LandingFileError, LandingError, LookupError, ValueError) as error:
        console.print(f"[red]not landed[/red]: {_one_line(error)}", soft_wrap=True)
        raise typer.Exit(code=1) from error
    facts = landed.facts
    how = f", converted from {source_format.encoding} {source_format.delimiter!r}"
    console.print(
        f"landed {path} ({facts.size_bytes:,} bytes, {facts.data_lines:,} data lines"
        f"{how if landed.converted else ''}) as {landed.target}"
        + (f", replacing {', '.join(map(str, landed.replaced))}" if landed.replaced else ""),
        soft_wrap=True,
    )


def _one_line(error: Exception) -> str:
    text = str(error) if not isinstance(error, LookupError) else f"unknown encoding: {error}"
    return " ".join(text.split())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations not yet applied (safe to repeat)."""
    settings = get_settings()
    url = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    applied = database.upgrade(url)
    for migration in applied:
        console.print(f"applied {migration.version:04d}_{migration.name}")
    reader = database.reader_role_of(settings)
    database.ensure_reader_role(url, reader)
    console.print(f"database at migration {database.current_version(url)}")
    shared = f"; shared login {reader.login}" if reader.login else ""
    console.print(
        f"read-only role {reader.group}: reads the analytics schema only; its logins "
        f"{_reader_limits(reader)}{shared}",
        soft_wrap=True,
    )


def _reader_limits(reader: database.ReaderRole) -> str:
    return (
        f"start read-only, with at most {reader.connection_limit} connections and a "
        f"{reader.statement_timeout} statement timeout"
    )


PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
GeneratePasswordOption = Annotated[
    bool,
    typer.Option("--generate-password", help="Generate a password and print it (once)."),
]


@db_app.command("reader-login")
def db_reader_login(
    name: Annotated[str, typer.Argument(help="The login, a lowercase Postgres identifier.")],
    password_stdin: PasswordStdinOption = False,
    generate_password: GeneratePasswordOption = False,
) -> None:
    """Create a business user's own login NAME, a member of the read-only role (or set the
    password of an existing one). The password is asked for unless given another way."""
    import secrets  # noqa: PLC0415

    if password_stdin and generate_password:
        raise typer.BadParameter("give --password-stdin or --generate-password, not both")
    if generate_password:
        password = secrets.token_urlsafe(18)
    elif password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"password of {name}", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password is empty")
    settings = get_settings()
    url = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    reader = database.reader_role_of(settings)
    try:
        database.upgrade(url)
        database.ensure_reader_role(url, reader)
        database.ensure_reader_login(url, reader, name, password)
    except (ValueError, RuntimeError) as error:
        console.print(f"[red]no login created[/red]: {error}", soft_wrap=True)
        raise typer.Exit(1) from error
    console.print(
        f"login {name}: member of {reader.group}, reads the analytics schema only; its "
        f"sessions {_reader_limits(reader)}",
        soft_wrap=True,
    )
    if generate_password:
        console.print(f"password (shown once): {password}", soft_wrap=True, highlight=False)


ShowPasswordOption = Annotated[
    bool, typer.Option("--show-password", help="Print the password too (default: ***).")
]


@db_app.command("url")
def db_url(show_password: ShowPasswordOption = False) -> None:
    """Print the warehouse URL (starting the embedded server if needed), its password masked."""
    settings = get_settings()
    url = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    print(url if show_password else database.masked_url(url))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (its data stays under .retention/pgdata)."""
    stopped = database.stop_embedded_server(get_settings().embedded_pgdata)
    console.print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")


def _tracking_uri() -> str:
    from retention_pipelines.core.database import settings_database_url  # noqa: PLC0415
    from retention_pipelines.core.registry import mlflow_tracking_uri  # noqa: PLC0415

    settings = get_settings()
    return mlflow_tracking_uri(settings_database_url(settings), settings.mlflow_database)


def _mlflow_client() -> MlflowClient:
    from mlflow import MlflowClient  # noqa: PLC0415

    return MlflowClient(_tracking_uri())


ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded with the change.")]


@model_app.command("tracking-uri")
def model_tracking_uri(show_password: ShowPasswordOption = False) -> None:
    """Print MLflow's backend-store URI (the mlflow database on the platform's Postgres), its
    password masked unless asked for (`make mlflow` asks)."""
    uri = _tracking_uri()
    print(uri if show_password else database.masked_url(uri))


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="The churn-model version to make champion.")],
    reason: ReasonOption,
) -> None:
    """Move alias ``champion`` to VERSION by hand."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    from retention_pipelines.core import registry  # noqa: PLC0415

    client = _mlflow_client()
    try:
        registry.promote(
            client,
            version,
            reason=reason,
            actor=f"cli:{getpass.getuser()}",
            audit_url=database.settings_database_url(get_settings()),
        )
    except (ValueError, LookupError, MlflowException) as error:
        console.print(f"[red]cannot promote: {error}")
        raise typer.Exit(1) from error
    _sync_model_versions(client)
    console.print(f"{registry.MODEL_NAME}@{registry.CHAMPION} is now version {version}")


@model_app.command("rollback")
def model_rollback(reason: ReasonOption) -> None:
    """Move alias ``champion`` back to the version that held it before."""
    from retention_pipelines.core import registry  # noqa: PLC0415

    client = _mlflow_client()
    try:
        version = registry.rollback(
            client,
            reason=reason,
            actor=f"cli:{getpass.getuser()}",
            audit_url=database.settings_database_url(get_settings()),
        )
    except (ValueError, LookupError) as error:
        console.print(f"[red]cannot roll back: {error}")
        raise typer.Exit(1) from error
    _sync_model_versions(client)
    console.print(f"{registry.MODEL_NAME}@{registry.CHAMPION} is back on version {version}")


def _sync_model_versions(client: MlflowClient) -> None:
    """Copy the registry's versions to ``ml.model_versions``: the dashboard, which cannot
    reach MLflow, shows the new champion at once."""
    from retention_pipelines.core.warehouse.model_versions import (  # noqa: PLC0415
        sync_model_versions,
    )

    sync_model_versions(database.settings_database_url(get_settings()), client)


@app.command("dagster-home")
def dagster_home() -> None:
    """Write the local Dagster instance's config and print its folder (DAGSTER_HOME)."""
    print(_local_dagster_home())


DotenvOption = Annotated[
    Path | None,
    typer.Option(help="Also write DAGSTER_HOME into this .env file (Dagster reads ./.env)."),
]


@app.command("env")
def env(
    dotenv: DotenvOption = None,
    keep: Annotated[
        bool, typer.Option("--keep-existing", help="Leave a DAGSTER_HOME already in the file.")
    ] = False,
) -> None:
    """Print `export DAGSTER_HOME=...` of the local Dagster instance.

    `eval "$(retention env)"` lets Dagster's own commands (`dagster job list`, `dagster asset
    materialize`) use it; `--dotenv .env` also writes it where they read it in this folder.
    """
    home = _local_dagster_home()
    if dotenv is not None:
        write_dotenv(dotenv, "DAGSTER_HOME", str(home), replace=not keep)
    print(f"export DAGSTER_HOME={shlex.quote(str(home))}")


def _local_dagster_home() -> Path:
    from retention_pipelines.instance import write_local_instance  # noqa: PLC0415

    return write_local_instance(get_settings())


def write_dotenv(path: Path, name: str, value: str, *, replace: bool = True) -> None:
    """Set ``name`` in a dotenv file, keeping its other lines; with ``replace`` False, a
    value already there stays."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if not line.strip().startswith(f"{name}=")]
    if len(kept) < len(lines) and not replace:
        return
    # Dagster reads credentials from this file too: it is kept readable by its owner only.
    database.write_private_file(path, "\n".join([*kept, f"{name}={value}"]) + "\n")


VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the run's log instead of a progress bar.")
]


def _log_path(job: str) -> Path:
    from datetime import datetime  # noqa: PLC0415

    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")  # the operator's clock
    return get_settings().home_dir / "logs" / f"{job}-{stamp}.log"


def _run_with_progress(
    job: str,
    *,
    partition_key: str | None = None,
    run_config: dict[str, object] | None = None,
    verbose: bool,
    counters: dict[str, tuple[str, str, str]],
) -> RunOutcome:
    """Run ``job`` on the local instance. The terminal shows its steps and, per asset in
    ``counters`` (asset: label, done key, total key), a bar of what the asset observed; the
    run's log goes to a file, or to the terminal with ``verbose``."""
    from retention_pipelines.local_runs import run_job, terminal  # noqa: PLC0415

    settings = get_settings()
    if verbose:
        return run_job(settings, job, partition_key=partition_key, run_config=run_config)
    with _bar_progress(Console(file=terminal()), transient=True) as progress:
        show = _run_progress_view(progress, f"{job} {partition_key or ''}".strip(), counters)
        return run_job(
            settings,
            job,
            partition_key=partition_key,
            run_config=run_config,
            on_progress=show,
            log_path=_log_path(job),
        )


def _fail_abandoned_runs() -> None:
    """Mark failed the runs of this host whose process was killed, one line each."""
    from retention_pipelines.core.database import settings_database_url  # noqa: PLC0415
    from retention_pipelines.local_runs import fail_abandoned_runs, local_instance  # noqa: PLC0415

    settings = get_settings()
    settings_database_url(settings)  # the server found and ready, as every command finds it
    for abandoned in fail_abandoned_runs(local_instance(settings)):
        console.print(abandoned.describe(), soft_wrap=True, highlight=False)


def _report_run(outcome: RunOutcome, summary: str) -> None:
    """One line of what the run did (or which step failed, and why), where its log is, and
    how to look at it in the UI."""
    if not outcome.success:
        console.print(f"[red]{outcome.error}[/red]", soft_wrap=True, highlight=False)
    else:
        console.print(summary, soft_wrap=True)
    if outcome.log_path is not None:
        console.print(f"log: {outcome.log_path}", soft_wrap=True)
    console.print(f"run {outcome.run_id}: in the Dagster UI (make dev) under Runs", soft_wrap=True)
    if not outcome.success:
        raise typer.Exit(code=1)


@app.command()
def train(
    xgboost_trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials for XGBoost (default: settings).")
    ] = None,
    catboost_trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials for CatBoost (default: settings).")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Train a churn model on the latest labelled snapshot, with a progress bar.

    Runs `retrain_job` on the local Dagster instance: tunes, registers a challenger, and the
    gate decides whether it becomes the champion. The run shows in the UI afterwards.
    """
    from retention_pipelines.core.database import settings_database_url  # noqa: PLC0415
    from retention_pipelines.core.warehouse.features import labelled_dates  # noqa: PLC0415

    _fail_abandoned_runs()
    settings = get_settings()
    if not labelled_dates(settings_database_url(settings), settings.training_snapshots):
        console.print(
            "[red]no labelled snapshot to train on[/red]: build one first "
            "(`make demo` builds today's, or `retention score --date D` for a landed file)",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    overrides = {
        key: value
        for key, value in (
            ("xgboost_trials", xgboost_trials),
            ("catboost_trials", catboost_trials),
        )
        if value is not None
    }
    config = {"ops": {"churn_model_candidates": {"config": overrides}}} if overrides else None
    outcome = _run_with_progress(
        "retrain_job",
        run_config=config,
        verbose=verbose,
        counters={"churn_model_candidates": ("Optuna trials", "trials_done", "trials_budget")},
    )
    gate = outcome.materialized.get("champion_model", {})
    registered = outcome.materialized.get("registered_churn_model", {})
    _report_run(
        outcome,
        f"registered churn-model version {registered.get('version', '?')}: "
        f"{gate.get('decision', '?')} ({gate.get('reason', '')})",
    )


@app.command()
def score(snapshot_date: DateOption = "", verbose: VerboseOption = False) -> None:
    """Score every customer of a date with the champion, with a progress bar.

    Runs `nightly_scoring_job` for the date on the local Dagster instance (ingestion,
    features, scores, analytics, drift); the run shows in the UI afterwards.
    """
    from retention_pipelines.core import registry  # noqa: PLC0415

    day = _parse_date(snapshot_date)
    _fail_abandoned_runs()
    if registry.champion_version(_mlflow_client()) is None:
        console.print(
            f"[red]no champion model yet[/red]: train one with `retention train` "
            f"(after `make demo`, or on a labelled snapshot), then score {day}",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    outcome = _run_with_progress(
        "nightly_scoring_job",
        partition_key=day.isoformat(),
        verbose=verbose,
        counters={"churn_risk_scores": ("customers scored", "customers_scored", "customers_total")},
    )
    scores = outcome.materialized.get("churn_risk_scores", {})
    bands = ", ".join(
        f"{scores.get(f'{band}_risk_customers', 0):,} {band}" for band in ("high", "medium", "low")
    )
    suppressed = outcome.materialized.get("raw_customer_snapshot", {}).get("rows_suppressed", 0)
    left_out = f" ({suppressed:,} rows of erased customers left out at ingestion)"
    _report_run(
        outcome,
        f"scored {scores.get('dagster/row_count', 0):,} customers of {day} with "
        f"churn-model v{scores.get('model_version', '?')}: {bands}{left_out if suppressed else ''}",
    )


DEMO_COUNTERS = {
    "churn_model_candidates": ("Optuna trials", "trials_done", "trials_budget"),
    "churn_risk_scores": ("customers scored", "customers_scored", "customers_total"),
}


@app.command("tune-worker")
def tune_worker(
    study: Annotated[str, typer.Option(help="The stored study to join: churn-<run id>-<family>.")],
    trials: Annotated[
        int, typer.Option(min=1, help="Most trials this worker runs (fewer once the study ends).")
    ],
) -> None:
    """Join a training run's Optuna study in Postgres and run some of its trials, one line per
    trial; any number of workers, on any machines, share the study's trial budget."""
    import optuna  # noqa: PLC0415

    from retention_pipelines.core.database import settings_database_url  # noqa: PLC0415
    from retention_pipelines.core.tune_worker import TuneWorkerError, run_worker  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker prints its own lines
    say = lambda line: console.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    try:
        url = settings_database_url(get_settings())
        report = run_worker(url, study, trials, on_trial=lambda trial: say(trial.line()))
    except TuneWorkerError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from error
    say(report.line())


@app.command()
def demo(
    customers: Annotated[
        int, typer.Option(min=1, help="Customers in the demo snapshot (enough to train on).")
    ] = 5_000,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Then serve the Dagster UI and the dashboard."),
    ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the Dagster UI.")] = 3000,
    dashboard_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port of the dashboard (default: settings)."),
    ] = None,
    dotenv: DotenvOption = None,
) -> None:
    """Build today's snapshot, train a first champion when there is none (a small budget),
    score today, print what was done, then serve the Dagster UI and the dashboard until
    Ctrl-C. What is already there is reused."""
    from retention_pipelines.demo import DemoDataError, DemoRunError, run_demo  # noqa: PLC0415
    from retention_pipelines.local_runs import terminal  # noqa: PLC0415

    _fail_abandoned_runs()
    settings = get_settings()
    try:
        with _bar_progress(Console(file=terminal()), transient=True) as progress:
            show = _run_progress_view(progress, "building today's snapshot", DEMO_COUNTERS)
            report = run_demo(
                settings, customers=customers, on_progress=show, log_path=_log_path("demo")
            )
    except DemoRunError as failed:
        _report_run(failed.outcome, "")
        raise
    except DemoDataError as refused:
        console.print(f"[red]{refused}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from refused
    if dotenv is not None:
        write_dotenv(dotenv, "DAGSTER_HOME", str(report.dagster_home))
    _print_report(report, serving=serve)
    if serve:
        from retention_pipelines.demo_processes import serve_demo  # noqa: PLC0415

        code = serve_demo(
            settings,
            dagster_port=port,
            dashboard_port=dashboard_port or settings.dashboard_port,
            console=console,
        )
        # Everything the demo started is stopped and its runs are over: the libraries' exit
        # handlers (MLflow's, Optuna's, connection pools) have nothing to do but take seconds
        # of the 10 a Ctrl-C may take.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_progress_view(
    progress: Progress, title: str, counters: dict[str, tuple[str, str, str]]
) -> Callable[[RunProgress], None]:
    """What shows a run's progress on ``progress``: a bar of its steps and, per asset in
    ``counters`` (asset: label, done key, total key), a bar of what the asset observed. A
    run of another job hides the bars of the one before."""
    steps = progress.add_task(title, total=None)
    bars = {
        asset: progress.add_task(label, total=None, visible=False)
        for asset, (label, _, _) in counters.items()
    }
    shown_job: list[str] = []

    def show(update: RunProgress) -> None:
        if shown_job != [update.job_name]:
            shown_job[:] = [update.job_name]
            for bar in bars.values():
                progress.update(bar, visible=False, completed=0, total=None)
        progress.update(steps, description=update.describe(), completed=update.steps_done,
                        total=update.steps_total)  # fmt: skip
        for asset, (label, done, total) in counters.items():
            seen = update.observed.get(asset, {})
            if done in seen:
                description = f"{label} {seen['study']}" if "study" in seen else label
                progress.update(bars[asset], visible=True, completed=seen[done],
                                total=seen.get(total), description=description)  # fmt: skip

    return show


def _print_report(report: DemoReport, *, serving: bool = False) -> None:
    table = Table(title=f"Demo of {report.snapshot_date}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in report.lines():
        table.add_row(label, value)
    console.print(table)
    console.print(
        f"Warehouse: {database.masked_url(report.database_url)}\n"
        "Look at: ml.churn_risk_scores (today's scores and reasons), "
        "analytics.customer_risk_latest (the call list), features.customer_features",
        soft_wrap=True,
    )
    if not serving:
        console.print(
            "See them: `retention dashboard` (the call list), `make dev` (the Dagster UI: Runs, "
            "the asset graph); `retention train` tunes a model with the full budget",
            soft_wrap=True,
        )
    if report.log_path is not None:
        console.print(f"log: {report.log_path}")


# --- the prediction API ------------------------------------------------------------------------

api_key_app = typer.Typer(help="Keys of the prediction API (stored hashed in ops.api_keys).")
app.add_typer(api_key_app, name="api-key")
ScopeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--scope",
        help="What the key may do: predict (POST /v1/predict...), read (GET /v1/customers/...). "
        "Repeat for both. Default: predict.",
    ),
]


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. crm-prod.")],
    scope: ScopeOption = None,
) -> None:
    """Create a key and print it once: only its hash is kept."""
    from retention_pipelines.core import api_keys  # noqa: PLC0415

    scopes = tuple(scope or ["predict"])
    url = database.settings_database_url(get_settings())
    try:
        raw_key, key = api_keys.create_key(url, name, scopes, actor=f"cli:{getpass.getuser()}")
    except api_keys.ApiKeyError as error:
        console.print(f"[red]cannot create the key: {error}[/red]", highlight=False)
        raise typer.Exit(1) from error
    console.print(
        f"key {key.name!r} (id {key.key_id}, scopes {', '.join(sorted(key.scopes))}); "
        "shown once, keep it now:",
        highlight=False,
    )
    print(raw_key)


@api_key_app.command("list")
def api_key_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
) -> None:
    """The keys, without the keys themselves."""
    from retention_pipelines.core import api_keys  # noqa: PLC0415

    url = database.settings_database_url(get_settings())
    table = Table(title="API keys")
    for column in ("id", "name", "scopes", "prefix", "created", "by", "revoked"):
        table.add_column(column)
    for key in api_keys.list_keys(url, include_revoked=revoked):
        table.add_row(
            str(key.key_id), key.name, ", ".join(key.scopes), f"{key.prefix}…",
            f"{key.created_at:%Y-%m-%d %H:%M}", key.created_by,
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )  # fmt: skip
    console.print(table)


@api_key_app.command("revoke")
def api_key_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: the API refuses it within RETENTION_API_KEY_REFRESH_S seconds."""
    from retention_pipelines.core import api_keys  # noqa: PLC0415

    url = database.settings_database_url(get_settings())
    try:
        key_id = api_keys.revoke_key(url, name, actor=f"cli:{getpass.getuser()}")
    except api_keys.ApiKeyError as error:
        console.print(f"[red]cannot revoke: {error}[/red]", highlight=False)
        raise typer.Exit(1) from error
    settings = get_settings()
    console.print(
        f"key {name!r} (id {key_id}) revoked; the API refuses it within "
        f"{settings.api_key_refresh_s:g} s",
        highlight=False,
    )


# --- personal data: the audit log, retention and erasure ----------------------------------------


@app.command()
def lookup(
    pseudonym: Annotated[
        str,
        typer.Argument(
            help="A pseudonym as Dagster, MLflow, reports and logs show it: 12 to 64 "
            "hexadecimal characters (a leading ~, as in the API's access log, is ignored)."
        ),
    ],
) -> None:
    """The customer id(s) a pseudonym stands for, found in the warehouse: for people with
    warehouse access, as the ids it prints are. One id a line; exit 1 when none has it."""
    from retention_pipelines.core import pseudonyms  # noqa: PLC0415

    settings = get_settings()
    try:
        key = pseudonyms.pseudonym_key(settings)
    except pseudonyms.PseudonymKeyError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from error
    try:
        found = pseudonyms.lookup(database.settings_database_url(settings), pseudonym, key)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="PSEUDONYM") from error
    if not found:
        console.print(
            f"[red]no customer in the warehouse has the pseudonym {pseudonym.strip()!r}[/red]: "
            "erased or purged since, or made with another RETENTION_PSEUDONYM_KEY",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(code=1)
    if len(found) > 1:
        typer.echo(f"{len(found)} customers share this pseudonym's first characters:", err=True)
    for customer_id in found:
        print(customer_id)


def _parse_since(value: str, timezone: str) -> datetime:
    """A date (its midnight) or a date and time; in RETENTION_TIMEZONE unless it has an offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(
            f"{value[:64]!r} is not a date or time like 2026-11-26 or 2026-11-26T08:30"
        ) from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(timezone))


@app.command("audit")
def audit_command(
    since: Annotated[
        str | None,
        typer.Option(
            help="From this date or time on: 2026-11-26 or 2026-11-26T08:30 "
            "(RETENTION_TIMEZONE unless an offset is given)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help=f"Only this kind: {', '.join(AUDIT_KINDS)}.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the latest N entries.")] = None,
) -> None:
    """The audit log, oldest first: model promotions, rollbacks and gate refusals, API keys,
    CRM hand-offs, erasures and purges; who, when and why."""
    import json  # noqa: PLC0415

    from retention_pipelines.core import audit  # noqa: PLC0415

    settings = get_settings()
    if kind is not None and kind not in AUDIT_KINDS:
        raise typer.BadParameter(
            f"unknown kind {kind[:64]!r}: one of {', '.join(AUDIT_KINDS)}", param_hint="--kind"
        )
    start = _parse_since(since, settings.timezone) if since else None
    url = database.settings_database_url(settings)
    found = audit.entries(url, since=start, kind=kind, limit=limit)
    zone = ZoneInfo(settings.timezone)
    table = Table(title=f"Audit log ({len(found)} entries, times in {settings.timezone})")
    for column in ("at", "kind", "actor", "subject", "reason", "details"):
        table.add_column(column, overflow="fold")
    for entry in found:
        table.add_row(
            f"{entry.recorded_at.astimezone(zone):%Y-%m-%d %H:%M:%S}", entry.kind, entry.actor,
            entry.subject, entry.reason or "",
            json.dumps(entry.details, separators=(", ", ": "), ensure_ascii=False),
        )  # fmt: skip
    console.print(table)


@app.command()
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; delete nothing.")
    ] = False,
) -> None:
    """Delete what is past each table's retention (RETENTION_KEEP_*_DAYS), date by date, each
    date recorded in the audit log; the champion's training snapshots are kept."""
    from retention_pipelines.core import audit, data_retention  # noqa: PLC0415

    settings = get_settings()
    url = database.settings_database_url(settings)
    policy = data_retention.policy_from_settings(settings)
    champion = data_retention.champion_data(_mlflow_client())
    today = policy.today()
    if dry_run:
        result = None
        plan = data_retention.plan_purge(url, policy, today=today, champion=champion)
    else:
        result = data_retention.purge(
            url, policy, today=today, champion=champion, actor=audit.cli_actor()
        )
        plan = result.plan
    _print_purge(plan, result)


def _print_purge(plan: Any, result: Any) -> None:
    from retention_pipelines.core import data_retention  # noqa: PLC0415

    done = result is not None
    title = f"Retention purge of {plan.today}" + ("" if done else " (dry run: nothing deleted)")
    table = Table(title=title)
    for column in ("table", "keeps (days)", "cut-off", "dates", "rows gone" if done
                   else "rows that would go", "kept past the cut-off"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for row in data_retention.plan_frame(plan, result).itertuples(index=False):
        table.add_row(row.table, str(row.keep_days), row.cutoff, f"{row.dates:,}",
                      f"{row.rows:,}", row.kept)  # fmt: skip
    console.print(table)
    console.print(data_retention.files_text(plan, result), highlight=False)
    for note in plan.notes():
        console.print(note, highlight=False, soft_wrap=True)


@app.command()
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer's id, as the warehouse has it.")],
    reason: ReasonOption,
    allow_again: Annotated[
        bool,
        typer.Option(
            "--allow-again",
            help="Lift the erasure instead: take the customer off the suppression list, so "
            "that ingestion stores them again (they are a customer again and consented).",
        ),
    ] = False,
) -> None:
    """Erase a customer from every warehouse table in one transaction and keep ingestion from
    storing them again (a suppression list, by pseudonym); the audit log records it by
    pseudonym. Models trained before keep their weights: retrain to remove their
    influence."""
    from retention_pipelines.core import audit, erasure, pseudonyms  # noqa: PLC0415

    settings = get_settings()
    url = database.settings_database_url(settings)
    if allow_again:
        _allow_again(url, customer_id, reason)
        return
    try:
        erased = erasure.forget_customer(
            url,
            customer_id,
            reason=reason,
            actor=audit.cli_actor(),
            key=pseudonyms.pseudonym_key(settings),
            on_wait=console.print,
        )
    except (LookupError, ValueError, pseudonyms.PseudonymKeyError) as error:
        console.print(f"[red]not erased: {error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    if erased.already_erased:
        console.print(
            f"Customer {erased.pseudonym} is already erased (on the suppression list since "
            f"{erased.erased_at:%Y-%m-%d %H:%M}): no table holds them; nothing to do.",
            highlight=False,
            soft_wrap=True,
        )
        return
    from retention_pipelines.core import crm  # noqa: PLC0415

    files = crm.erase_from_files(settings.crm_dir, customer_id)
    table = Table(title=f"Customer {erased.pseudonym} erased")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in erased.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    if files:
        console.print(
            f"CRM hand-off files rewritten without them: {', '.join(p.name for p in files)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{erased.total:,} rows removed in one transaction; recorded in the audit log as "
        f"{erased.pseudonym}; ingestion leaves the customer out from now on (lift with "
        "`retention forget --allow-again`). Models trained before keep their weights: retrain "
        "(`retention train`) for a champion that never saw this customer.",
        highlight=False,
        soft_wrap=True,
    )


def _allow_again(url: str, customer_id: str, reason: str) -> None:
    from retention_pipelines.core import audit, erasure, pseudonyms  # noqa: PLC0415

    try:
        lifted = erasure.allow_again(
            url,
            customer_id,
            reason=reason,
            actor=audit.cli_actor(),
            key=pseudonyms.pseudonym_key(get_settings()),
        )
    except (LookupError, ValueError, pseudonyms.PseudonymKeyError) as error:
        console.print(f"[red]not lifted: {error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    console.print(
        f"Customer {lifted.pseudonym} is off the suppression list (erased "
        f"{lifted.erased_at:%Y-%m-%d %H:%M}): the next ingestion of a file that holds them "
        "stores them again. Recorded in the audit log.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (RETENTION_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RETENTION_API_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (RETENTION_API_WORKERS).")
    ] = None,
) -> None:
    """Serve the prediction API (FastAPI on uvicorn); OpenAPI docs at /docs."""
    import signal  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    def stopped(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # One worker: uvicorn raises the SIGTERM it caught again once it has shut down, which by
    # default ends the process on the spot, before the metrics folder below is removed.
    # End normally instead, with status 0 as with several workers: the stop was asked for.
    signal.signal(signal.SIGTERM, stopped)
    settings = get_settings()
    # Prepare the warehouse once here, not in every worker at the same moment.
    database.settings_database_url(settings)
    metrics_dir = tempfile.mkdtemp(prefix="retention-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker imports the client
    if settings.api_metrics_port is not None:
        _serve_metrics(settings.api_metrics_port, host or settings.api_host)
    bind_host, bind_port = host or settings.api_host, port or settings.api_port
    count = workers or settings.api_workers
    console.print(
        f"prediction API on http://{bind_host}:{bind_port} ({count} worker"
        f"{'s' if count > 1 else ''}); docs at /docs",
        highlight=False,
    )
    try:
        uvicorn.run(
            "retention_pipelines.serving.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=count,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=10,
            # A spawned worker answers the supervisor's health checks only once it has
            # imported this command line: with uvicorn's 5 s, a busy host or a cold start
            # (no bytecode yet) has workers killed and respawned over and over.
            timeout_worker_healthcheck=30,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (RETENTION_DASHBOARD_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (RETENTION_DASHBOARD_PORT).")] = None,
) -> None:
    """Serve the retention team's dashboard (Streamlit), read as the reader login only."""
    from retention_pipelines.dashboard.launch import (  # noqa: PLC0415
        run_until_stopped,
        streamlit_command,
    )

    settings = get_settings()
    # Migrations, the reader role with its login, the registry's copy: as the platform,
    # which the app, reading as the reader login, never can.
    url = database.settings_database_url(settings)
    _sync_model_versions_if_registered(url)
    bind_host, bind_port = host or settings.dashboard_host, port or settings.dashboard_port
    console.print(
        f"dashboard on http://{bind_host}:{bind_port} (read as {settings.reader_login}); "
        "Ctrl-C stops it",
        highlight=False,
    )
    sys.stdout.flush()
    status = run_until_stopped(streamlit_command(bind_host, bind_port))
    console.print("dashboard stopped" if status == 0 else f"dashboard ended ({status})")
    if status != 0:
        raise typer.Exit(code=1)


def _sync_model_versions_if_registered(url: str) -> None:
    """Copy the registry to ``ml.model_versions`` when there is a registry (an installation
    that trained before the copy existed shows its champion at once); a registry that cannot
    be read leaves the last copy and a warning, not a dashboard that does not start."""
    settings = get_settings()
    with database.connect(database.with_database(url, "postgres")) as conn:
        registry_store = conn.execute(
            "select 1 from pg_database where datname = %s", (settings.mlflow_database,)
        ).fetchone()
    if registry_store is None:
        return
    try:
        _sync_model_versions(_mlflow_client())
    except Exception as error:  # any failure: the dashboard still serves
        console.print(
            f"[yellow]model versions not refreshed from the registry: {_one_line(error)}",
            highlight=False,
        )


def _serve_metrics(port: int, host: str) -> None:
    """/metrics of every worker on a port of its own (RETENTION_API_METRICS_PORT)."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client import multiprocess as prometheus_multiprocess  # noqa: PLC0415

    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
    console.print(f"metrics on http://{host}:{port}/metrics", highlight=False)


@app.command()
def exporter(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (RETENTION_EXPORTER_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (RETENTION_EXPORTER_PORT).")] = None,
) -> None:
    """Serve the platform's health (scores, rejects, drift, data quality, realised AUC, the
    champion, the nightly run) as Prometheus metrics at /metrics; Ctrl-C stops it."""
    from retention_pipelines.exporter import exporter_config, serve_exporter  # noqa: PLC0415

    settings = get_settings()
    bind_host, bind_port = host or settings.exporter_host, port or settings.exporter_port
    console.print(
        f"platform metrics on http://{bind_host}:{bind_port}/metrics (read at most every "
        f"{settings.exporter_cache_s:g} s)",
        highlight=False,
    )
    sys.stdout.flush()
    serve_exporter(exporter_config(settings), host=bind_host, port=bind_port)


# --- the stack on one machine ------------------------------------------------------------------

stack_app = typer.Typer(
    help="The compose topology as local processes: `make stack` (up), `make stack-stop` (down)."
)
app.add_typer(stack_app, name="stack")


def _stack_command(run: Callable[[Any, Console], int]) -> None:
    """Run a stack command; its refusals (a busy port, another command running) in one line."""
    from retention_pipelines.stack.control import StackError  # noqa: PLC0415

    try:
        code = run(get_settings(), console)
    except StackError as refused:
        console.print(f"[red]{refused}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from refused
    raise typer.Exit(code=code)


@stack_app.command("up")
def stack_up() -> None:
    """Start every service in the background (Dagster code server, webservers and daemon,
    MLflow, the API, the dashboard, the exporter, Prometheus), wait until each answers, and
    print where each one is. Services already running are kept."""
    from retention_pipelines.stack.control import up  # noqa: PLC0415

    _stack_command(up)


@stack_app.command("status")
def stack_status() -> None:
    """Each service, its pid, URL and health; exits 1 when any is not serving."""
    from retention_pipelines.stack.control import status  # noqa: PLC0415

    _stack_command(status)


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service of the stack (SIGTERM, then SIGKILL after a grace; 15 s at most),
    and the embedded Postgres when `stack up` started it."""
    from retention_pipelines.stack.control import down  # noqa: PLC0415

    _stack_command(down)


# --- the CRM hand-off ---------------------------------------------------------------------------

crm_app = typer.Typer(help="The CRM hand-off: retention tasks in ml.crm_outbox and their delivery.")
app.add_typer(crm_app, name="crm")
CrmDateOption = Annotated[
    str, typer.Option("--date", help="Only this snapshot date, YYYY-MM-DD (default: every date).")
]


@crm_app.command("dispatch")
def crm_dispatch(
    snapshot_date: CrmDateOption = "",
    requeue_dead_letters: Annotated[
        bool,
        typer.Option(
            "--requeue-dead-letters",
            help="Send the date's dead-lettered tasks again first (needs --date).",
        ),
    ] = False,
) -> None:
    """Send the pending tasks to RETENTION_CRM_WEBHOOK_URL (without one: the date's CSV file
    under the reports folder). Safe to repeat: a task is sent until it is delivered, always
    under the same idempotency key."""
    from retention_pipelines.core import audit, crm  # noqa: PLC0415

    if requeue_dead_letters and not snapshot_date:
        raise typer.BadParameter("--requeue-dead-letters needs --date", param_hint="--date")
    settings = get_settings()
    try:
        config = crm.CrmConfig.from_settings(settings)
    except crm.CrmConfigError as error:
        console.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    handoffs = crm.dispatch(
        database.settings_database_url(settings),
        config,
        actor=audit.cli_actor(),
        snapshot_date=_parse_date(snapshot_date) if snapshot_date else None,
        requeue_dead_letters=requeue_dead_letters,
    )
    if not handoffs:
        console.print("no pending tasks", highlight=False)
    for handoff in handoffs:
        console.print(
            f"{handoff.snapshot_date}: {handoff.sent} sent, {handoff.dead_letter} dead-lettered,"
            f" {handoff.pending} pending ({handoff.destination})",
            highlight=False,
        )
        if handoff.stopped:
            console.print(f"[red]{handoff.stopped}: run this again later[/red]", highlight=False)
            raise typer.Exit(1)


@crm_app.command("status")
def crm_status(snapshot_date: CrmDateOption = "") -> None:
    """Tasks per status of the latest dates (counts only)."""
    from retention_pipelines.core import crm  # noqa: PLC0415

    url = database.settings_database_url(get_settings())
    day = _parse_date(snapshot_date) if snapshot_date else None
    table = Table(title="CRM hand-off (ml.crm_outbox)")
    for column in ("date", "pending", "sent", "dead_letter", "last sent"):
        table.add_column(column, justify="left" if column == "date" else "right")
    for row in crm.status_by_date(url, day).itertuples(index=False):
        last = f"{row.last_sent_at:%Y-%m-%d %H:%M}" if row.last_sent_at is not None else ""
        table.add_row(str(row.snapshot_date), str(row.pending), str(row.sent),
                      str(row.dead_letter), last)  # fmt: skip
    console.print(table)
