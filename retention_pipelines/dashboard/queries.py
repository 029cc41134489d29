"""Every question the dashboard asks Postgres, as plain psycopg functions of a connection.

The filtering, ordering, paging and aggregation happen in SQL, so a page moves a page of rows
or a handful of aggregates over the wire, never a whole date of scores. Values a person typed
reach Postgres only as bound parameters; the SQL text is built from this module's constants.
The relations read are the ``analytics`` views and tables dbt builds, the only ones the
reader role may read. Before the first nightly build they do not exist yet: the functions
then answer "nothing yet" (None, an empty frame), which the pages turn into what to do.

No Streamlit here: the pages cache these answers (``data.py``), the export route streams one
of them, and the tests call them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, Final, TypeVar

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

CUSTOMER_RISK_LATEST: Final = sql.SQL("analytics.customer_risk_latest")
CALL_LIST_FACETS: Final = sql.SQL("analytics.call_list_facets")
CUSTOMER_SCORE_HISTORY: Final = sql.SQL("analytics.customer_score_history")
RISK_BAND_SUMMARY: Final = sql.SQL("analytics.risk_band_summary")
TOP_REASONS_DAILY: Final = sql.SQL("analytics.top_reasons_daily")
MODEL_VERSIONS: Final = sql.SQL("analytics.model_versions")
MODEL_PERFORMANCE_DAILY: Final = sql.SQL("analytics.model_performance_daily")
DRIFT_DAILY: Final = sql.SQL("analytics.drift_daily")
DATA_QUALITY_DAILY: Final = sql.SQL("analytics.data_quality_daily")

BANDS: Final[tuple[str, ...]] = ("high", "medium", "low")
# Bounds on what a filter may hold: enough for any real choice, small enough that a crafted
# export URL cannot make Postgres compare against a huge list or pattern.
MAX_CHOICES: Final = 100
MAX_CHOICE_CHARS: Final = 200
MAX_REASON_CHARS: Final = 200
MAX_TENURE_MONTHS: Final = 1200
# How the call list's CSV export is cut into HTTP chunks (COPY hands over a row at a time).
CSV_CHUNK_BYTES: Final = 64 * 1024

# The call list's page: what a person acts on.
PAGE_COLUMNS: Final[tuple[str, ...]] = (
    "risk_rank",
    "customer_id",
    "churn_probability",
    "risk_band",
    "top_reason_1",
    "top_reason_2",
    "top_reason_3",
    "monthly_charges",
    "contract",
    "tenure_months",
    "payment_method",
    "internet_service",
)
# The CSV export: the page's columns, the reasons' weights and the provenance.
EXPORT_COLUMNS: Final[tuple[str, ...]] = (
    "risk_rank",
    "customer_id",
    "snapshot_date",
    "churn_probability",
    "risk_band",
    "top_reason_1",
    "top_reason_1_contribution",
    "top_reason_2",
    "top_reason_2_contribution",
    "top_reason_3",
    "top_reason_3_contribution",
    "monthly_charges",
    "contract",
    "tenure_months",
    "payment_method",
    "internet_service",
    "model_version",
)


# --- the call list's filter ------------------------------------------------------------------


@dataclass(frozen=True)
class CallListFilter:
    """What a person narrows the call list to. An empty choice means "any".

    Built from the page's widgets and from the export URL's query string alike, so both
    answer with the same rows; a value out of bounds raises ValueError with a sentence that
    says which and why (the export route answers it as a 400).
    """

    bands: tuple[str, ...] = ()
    probability_min: float = 0.0
    probability_max: float = 1.0
    contracts: tuple[str, ...] = ()
    tenure_min: int | None = None
    tenure_max: int | None = None
    payment_methods: tuple[str, ...] = ()
    internet_services: tuple[str, ...] = ()
    reason_contains: str = ""

    def __post_init__(self) -> None:
        for name in ("bands", "contracts", "payment_methods", "internet_services"):
            object.__setattr__(self, name, _choices(name, getattr(self, name)))
        unknown = sorted(set(self.bands) - set(BANDS))
        if unknown:
            raise ValueError(f"unknown risk band {unknown[0]!r}: choose from {', '.join(BANDS)}")
        _check_probability_range(self.probability_min, self.probability_max)
        _check_tenure_range(self.tenure_min, self.tenure_max)
        reason = self.reason_contains.strip()
        if len(reason) > MAX_REASON_CHARS:
            raise ValueError(f"'reason contains' is longer than {MAX_REASON_CHARS} characters")
        object.__setattr__(self, "reason_contains", reason)

    @classmethod
    def from_query_params(cls, items: Iterable[tuple[str, str]]) -> CallListFilter:
        """The filter a query string describes (``band=high&band=medium&p_min=0.5...``)."""
        values: dict[str, list[str]] = {}
        for key, value in items:
            if key not in QUERY_PARAMS:
                raise ValueError(f"unknown filter {key!r}: use {', '.join(sorted(QUERY_PARAMS))}")
            values.setdefault(key, []).append(value)
        arguments: dict[str, Any] = {}
        for key, given in values.items():
            name, parse = QUERY_PARAMS[key]
            if name in _CHOICE_FIELDS:
                arguments[name] = tuple(given)
                continue
            if len(given) > 1:
                raise ValueError(f"the filter {key!r} is given {len(given)} times: give it once")
            arguments[name] = parse(key, given[0])
        return cls(**arguments)

    def to_query_params(self) -> list[tuple[str, str]]:
        """The query string's pairs for this filter; defaults are left out."""
        pairs: list[tuple[str, str]] = []
        for key, (name, _) in QUERY_PARAMS.items():
            value = getattr(self, name)
            if value == _DEFAULTS[name]:
                continue
            if name in _CHOICE_FIELDS:
                pairs.extend((key, choice) for choice in value)
            else:
                pairs.append((key, repr(value) if isinstance(value, float) else str(value)))
        return pairs


def _choices(name: str, values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of values, not one text")
    chosen = tuple(dict.fromkeys(str(value) for value in values))
    if len(chosen) > MAX_CHOICES:
        raise ValueError(f"{name}: at most {MAX_CHOICES} values, got {len(chosen)}")
    if any(len(value) > MAX_CHOICE_CHARS for value in chosen):
        raise ValueError(f"{name}: a value is longer than {MAX_CHOICE_CHARS} characters")
    return chosen


def _check_probability_range(low: float, high: float) -> None:
    if not all(isinstance(value, int | float) and math.isfinite(value) for value in (low, high)):
        raise ValueError("the probability range must be two numbers")
    if not 0 <= low <= high <= 1:
        raise ValueError(
            f"the probability range must lie within 0 and 1, lowest first (got {low:g} to {high:g})"
        )


def _check_tenure_range(low: int | None, high: int | None) -> None:
    for value in (low, high):
        if value is not None and not (isinstance(value, int) and 0 <= value <= MAX_TENURE_MONTHS):
            raise ValueError(f"tenure must be whole months from 0 to {MAX_TENURE_MONTHS}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"the tenure range must be lowest first (got {low} to {high})")


def _parse_float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {text!r}")
    return value


def _parse_int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{key} must be a whole number of months, got {text!r}") from None


def _parse_text(key: str, text: str) -> str:
    return text


# Query-string key -> (field of CallListFilter, parser of one value).
QUERY_PARAMS: Final[dict[str, tuple[str, Callable[[str, str], Any]]]] = {
    "band": ("bands", _parse_text),
    "p_min": ("probability_min", _parse_float),
    "p_max": ("probability_max", _parse_float),
    "contract": ("contracts", _parse_text),
    "tenure_min": ("tenure_min", _parse_int),
    "tenure_max": ("tenure_max", _parse_int),
    "payment": ("payment_methods", _parse_text),
    "internet": ("internet_services", _parse_text),
    "reason": ("reason_contains", _parse_text),
}
_CHOICE_FIELDS: Final = frozenset({"bands", "contracts", "payment_methods", "internet_services"})
_DEFAULTS: Final[dict[str, Any]] = {item.name: item.default for item in fields(CallListFilter)}


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken
    literally (backslash is the escape character the queries declare)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filter_conditions(
    filters: CallListFilter, reasons: Sequence[str] = ()
) -> tuple[sql.Composed, list[Any]]:
    """The WHERE clause of the call list (the latest scored date, narrowed by ``filters``)
    and its parameters, in order. ``reasons`` are the reason texts that "reason contains"
    matches (see :func:`matching_reasons`): a customer is kept when any of their three
    reasons is one of them."""
    narrowing: list[tuple[bool, str, tuple[Any, ...]]] = [
        (
            bool(filters.bands) and set(filters.bands) != set(BANDS),
            "risk_band = any(%s)",
            (list(filters.bands),),
        ),
        (filters.probability_min > 0, "churn_probability >= %s", (filters.probability_min,)),
        (filters.probability_max < 1, "churn_probability <= %s", (filters.probability_max,)),
        (bool(filters.contracts), "contract = any(%s)", (list(filters.contracts),)),
        (filters.tenure_min is not None, "tenure_months >= %s", (filters.tenure_min,)),
        (filters.tenure_max is not None, "tenure_months <= %s", (filters.tenure_max,)),
        (
            bool(filters.payment_methods),
            "payment_method = any(%s)",
            (list(filters.payment_methods),),
        ),
        (
            bool(filters.internet_services),
            "internet_service = any(%s)",
            (list(filters.internet_services),),
        ),
        # Equality with a constant list, which Postgres hashes: several times faster than
        # matching a pattern against every customer's three reasons.
        (
            bool(filters.reason_contains),
            "(top_reason_1 = any(%s) or top_reason_2 = any(%s) or top_reason_3 = any(%s))",
            (list(reasons),) * 3,
        ),
    ]
    conditions: list[sql.Composable] = [
        sql.SQL("snapshot_date = (select max(snapshot_date) from {})").format(CUSTOMER_RISK_LATEST)
    ]
    params: list[Any] = []
    for active, condition, values in narrowing:
        if active:
            conditions.append(sql.SQL(condition))  # type: ignore[arg-type]  # constants above
            params.extend(values)
    return sql.SQL(" and ").join(conditions), params


def matching_reasons(conn: psycopg.Connection, reason_contains: str) -> list[str]:
    """The latest date's distinct reason texts holding ``reason_contains`` (any case), from
    the list dbt keeps of them: a few hundred texts searched instead of a million rows."""
    if not reason_contains:
        return []
    rows = conn.execute(
        sql.SQL(
            "select reason from {}, unnest(reasons) as reason where reason ilike %s escape '\\'"
        ).format(CALL_LIST_FACETS),
        (like_pattern(reason_contains),),
    ).fetchall()
    return [reason for (reason,) in rows]


def _where(conn: psycopg.Connection, filters: CallListFilter) -> tuple[sql.Composed, list[Any]]:
    return filter_conditions(filters, matching_reasons(conn, filters.reason_contains))


# --- reading ---------------------------------------------------------------------------------

_T = TypeVar("_T")


def _until_built(empty: _T) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Answer ``empty`` while the relation read does not exist yet (before dbt's first
    build): a fresh installation is a state the pages explain, not an error."""

    def decorate(query: Callable[..., _T]) -> Callable[..., _T]:
        def guarded(conn: psycopg.Connection, *args: Any, **kwargs: Any) -> _T:
            try:
                return query(conn, *args, **kwargs)
            except psycopg.errors.UndefinedTable:
                if not conn.autocommit:
                    conn.rollback()
                return empty() if callable(empty) else empty

        guarded.__name__ = query.__name__
        guarded.__qualname__ = query.__qualname__
        guarded.__doc__ = query.__doc__
        return guarded

    return decorate


def _frame(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence[Any] | Mapping[str, Any]
) -> pd.DataFrame:
    cursor = conn.execute(query, params)
    columns = [column.name for column in cursor.description or ()]
    return pd.DataFrame(cursor.fetchall(), columns=columns)


def _row(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence[Any] = ()
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchone()


# --- the call list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LatestScores:
    """The latest scored date and what the filter widgets offer on it."""

    snapshot_date: date
    customers: int
    contracts: tuple[str, ...]
    payment_methods: tuple[str, ...]
    internet_services: tuple[str, ...]
    tenure_min: int
    tenure_max: int


@_until_built(None)
def latest_scores(conn: psycopg.Connection) -> LatestScores | None:
    """The latest scored date of the call list with its filter choices, from the one row dbt
    keeps of them (no scan of the date's customers); None: no scores yet."""
    row = _row(
        conn,
        sql.SQL(
            "select snapshot_date, customers, contracts, payment_methods, internet_services,"
            " coalesce(tenure_min, 0) as tenure_min, coalesce(tenure_max, 0) as tenure_max"
            " from {} order by snapshot_date desc limit 1"
        ).format(CALL_LIST_FACETS),
    )
    if row is None:
        return None
    return LatestScores(
        snapshot_date=row["snapshot_date"],
        customers=int(row["customers"]),
        contracts=tuple(sorted(row["contracts"] or ())),
        payment_methods=tuple(sorted(row["payment_methods"] or ())),
        internet_services=tuple(sorted(row["internet_services"] or ())),
        tenure_min=int(row["tenure_min"]),
        tenure_max=int(row["tenure_max"]),
    )


@dataclass(frozen=True)
class CallListTotals:
    """What the filters select, in customers and money."""

    customers: int
    high_band: int
    revenue_at_risk: float  # sum of probability x monthly charges: expected monthly loss


@_until_built(CallListTotals(customers=0, high_band=0, revenue_at_risk=0.0))
def call_list_totals(conn: psycopg.Connection, filters: CallListFilter) -> CallListTotals:
    """Counts and the expected monthly revenue at risk of the filtered call list."""
    where, params = _where(conn, filters)
    row = _row(
        conn,
        sql.SQL(
            "select count(*) as customers,"
            " count(*) filter (where risk_band = 'high') as high_band,"
            " coalesce(sum(churn_probability * monthly_charges), 0)::double precision"
            "  as revenue_at_risk"
            " from {latest} where {where}"
        ).format(latest=CUSTOMER_RISK_LATEST, where=where),
        params,
    )
    assert row is not None  # an aggregate without GROUP BY answers one row  # noqa: S101
    return CallListTotals(
        customers=int(row["customers"]),
        high_band=int(row["high_band"]),
        revenue_at_risk=float(row["revenue_at_risk"]),
    )


def _columns(names: Sequence[str]) -> sql.Composed:
    casts = {"monthly_charges": sql.SQL("monthly_charges::double precision as monthly_charges")}
    return sql.SQL(", ").join(casts.get(name, sql.Identifier(name)) for name in names)


@_until_built(lambda: pd.DataFrame(columns=list(PAGE_COLUMNS)))
def call_list_page(
    conn: psycopg.Connection, filters: CallListFilter, page: int, page_size: int
) -> pd.DataFrame:
    """The ``page``-th (from 1) ``page_size`` customers of the filtered call list, in the
    order to act on (risk_rank)."""
    if page < 1 or page_size < 1:
        raise ValueError("pages count from 1 and hold at least one customer")
    where, params = _where(conn, filters)
    return _frame(
        conn,
        sql.SQL(
            "select {columns} from {latest} where {where} order by risk_rank limit %s offset %s"
        ).format(columns=_columns(PAGE_COLUMNS), latest=CUSTOMER_RISK_LATEST, where=where),
        [*params, page_size, (page - 1) * page_size],
    )


def call_list_copy_query(
    filters: CallListFilter, reasons: Sequence[str] = ()
) -> tuple[sql.Composed, list[Any]]:
    """``COPY (the filtered call list) TO STDOUT`` as CSV with a header, and its parameters
    (``reasons`` as for :func:`filter_conditions`)."""
    where, params = filter_conditions(filters, reasons)
    query = sql.SQL(
        "copy (select {columns} from {latest} where {where} order by risk_rank)"
        " to stdout with (format csv, header)"
    ).format(columns=_columns(EXPORT_COLUMNS), latest=CUSTOMER_RISK_LATEST, where=where)
    return query, params


def stream_call_list_csv(
    conn: psycopg.Connection, filters: CallListFilter, chunk_bytes: int = CSV_CHUNK_BYTES
) -> Generator[bytes, None, None]:
    """The filtered call list as CSV, in chunks of about ``chunk_bytes``: one COPY read as
    it arrives, so memory follows the chunk, never the row count."""
    query, params = call_list_copy_query(filters, matching_reasons(conn, filters.reason_contains))
    pending = bytearray()
    with conn.cursor() as cursor, cursor.copy(query, params) as copy:
        for block in copy:
            pending += block
            if len(pending) >= chunk_bytes:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


# --- one customer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRisk:
    """A customer's latest score, its reasons and their profile of the same snapshot."""

    customer_id: str
    snapshot_date: date
    risk_rank: int
    churn_probability: float
    risk_band: str
    reasons: tuple[tuple[str, float], ...]  # text, contribution in log-odds (+ raises risk)
    profile: dict[str, Any] = field(hash=False)
    model_version: str
    scored_at: datetime


PROFILE_COLUMNS: Final[tuple[str, ...]] = (
    "contract",
    "tenure_months",
    "monthly_charges",
    "payment_method",
    "internet_service",
)


@_until_built(None)
def customer_risk(conn: psycopg.Connection, customer_id: str) -> CustomerRisk | None:
    """The customer's latest score; None when the id was never scored."""
    row = _row(
        conn,
        sql.SQL("select * from {latest} where customer_id = %s").format(
            latest=CUSTOMER_RISK_LATEST
        ),
        (customer_id,),
    )
    if row is None:
        return None
    profile = {name: row[name] for name in PROFILE_COLUMNS}
    if profile["monthly_charges"] is not None:
        profile["monthly_charges"] = float(profile["monthly_charges"])
    return CustomerRisk(
        customer_id=row["customer_id"],
        snapshot_date=row["snapshot_date"],
        risk_rank=int(row["risk_rank"]),
        churn_probability=float(row["churn_probability"]),
        risk_band=row["risk_band"],
        reasons=tuple(
            (row[f"top_reason_{rank}"], float(row[f"top_reason_{rank}_contribution"]))
            for rank in (1, 2, 3)
        ),
        profile=profile,
        model_version=row["model_version"],
        scored_at=row["scored_at"],
    )


HISTORY_COLUMNS: Final[tuple[str, ...]] = (
    "snapshot_date",
    "churn_probability",
    "risk_band",
    "model_version",
    "top_reason_1",
)


@_until_built(lambda: pd.DataFrame(columns=list(HISTORY_COLUMNS)))
def customer_history(conn: psycopg.Connection, customer_id: str) -> pd.DataFrame:
    """Every score of the customer, oldest first, with the model version of each."""
    return _frame(
        conn,
        sql.SQL(
            "select {columns} from {history} where customer_id = %s order by snapshot_date"
        ).format(columns=_columns(HISTORY_COLUMNS), history=CUSTOMER_SCORE_HISTORY),
        (customer_id,),
    )


# --- trends ----------------------------------------------------------------------------------


@_until_built(None)
def scored_date_range(conn: psycopg.Connection) -> tuple[date, date] | None:
    """The first and last scored dates; None: no scores yet."""
    row = _row(
        conn,
        sql.SQL("select min(snapshot_date) as first, max(snapshot_date) as last from {}").format(
            RISK_BAND_SUMMARY
        ),
    )
    if row is None or row["first"] is None:
        return None
    return row["first"], row["last"]


@_until_built(lambda: pd.DataFrame(columns=["snapshot_date", "risk_band", "customers"]))
def band_counts_by_date(conn: psycopg.Connection, start: date, end: date) -> pd.DataFrame:
    """Customers per band per scored date in ``[start, end]``, oldest first."""
    return _frame(
        conn,
        sql.SQL(
            "select snapshot_date, risk_band, customers::bigint as customers,"
            " share_of_customers from {} where snapshot_date between %s and %s"
            " order by snapshot_date,"
            " case risk_band when 'high' then 1 when 'medium' then 2 else 3 end"
        ).format(RISK_BAND_SUMMARY),
        (start, end),
    )


@_until_built(lambda: pd.DataFrame(columns=["snapshot_date", "mean_probability", "customers"]))
def mean_probability_by_date(conn: psycopg.Connection, start: date, end: date) -> pd.DataFrame:
    """The mean churn probability of each scored date in ``[start, end]``, oldest first."""
    return _frame(
        conn,
        sql.SQL(
            "select snapshot_date,"
            " sum(mean_churn_probability * customers) / sum(customers) as mean_probability,"
            " sum(customers)::bigint as customers"
            " from {} where snapshot_date between %s and %s"
            " group by snapshot_date order by snapshot_date"
        ).format(RISK_BAND_SUMMARY),
        (start, end),
    )


@_until_built(lambda: pd.DataFrame(columns=["reason", "customers", "share_of_customers"]))
def top_first_reasons(
    conn: psycopg.Connection, start: date, end: date, limit: int = 10
) -> pd.DataFrame:
    """The most frequent first reasons over ``[start, end]``: customers (summed over the
    dates) and their share of every score in the range."""
    return _frame(
        conn,
        sql.SQL(
            "select reason, sum(customers)::bigint as customers,"
            " sum(customers)::double precision"
            "  / sum(sum(customers)) over () as share_of_customers"
            " from {} where snapshot_date between %s and %s"
            " group by reason order by customers desc, reason limit %s"
        ).format(TOP_REASONS_DAILY),
        (start, end, limit),
    )


# --- model health ----------------------------------------------------------------------------


@_until_built(None)
def champion(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The champion's row of ``model_versions``; None: no champion yet."""
    return _row(
        conn,
        sql.SQL(
            "select * from {} where is_champion order by promoted_at desc nulls last limit 1"
        ).format(MODEL_VERSIONS),
    )


@_until_built(pd.DataFrame)
def realised_performance(conn: psycopg.Connection, days: int) -> pd.DataFrame:
    """Realised ROC AUC per score date (and model version) of the last ``days`` score
    dates, each from its latest labelled evaluation, with the version's training figure."""
    return _frame(
        conn,
        sql.SQL(
            "select distinct on (score_date, model_version) score_date, model_version,"
            " evaluated_on, customers, churned, roc_auc, brier, top_decile_lift,"
            " training_roc_auc, roc_auc_drop"
            " from {performance}"
            " where score_date > (select max(score_date) from {performance}) - %s"
            " order by score_date, model_version, evaluated_on desc"
        ).format(performance=MODEL_PERFORMANCE_DAILY),
        (days,),
    )


@_until_built(None)
def latest_performance(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The latest realised performance (newest score date, then newest labels), with its
    calibration bins; None: no labels have come back yet."""
    return _row(
        conn,
        sql.SQL(
            "select * from {} order by score_date desc, evaluated_on desc, model_version limit 1"
        ).format(MODEL_PERFORMANCE_DAILY),
    )


def calibration_frame(performance: Mapping[str, Any] | None) -> pd.DataFrame:
    """The calibration bins of a realised-performance row as rows (bin, mean probability,
    churn rate, customers); empty without any."""
    columns = ["bin", "mean_probability", "churn_rate", "customers"]
    bins = (performance or {}).get("calibration") or []
    frame = pd.DataFrame([{name: item.get(name) for name in columns} for item in bins])
    return frame if not frame.empty else pd.DataFrame(columns=columns)


@_until_built(pd.DataFrame)
def drift_by_date(conn: psycopg.Connection, days: int) -> pd.DataFrame:
    """The drift reports of the last ``days`` report dates, newest first."""
    return _frame(
        conn,
        sql.SQL(
            "select snapshot_date, dataset_drift, drift_share, drift_share_threshold,"
            " drifted_column_count, drifted_columns, reference_model_version, current_rows"
            " from {drift} where snapshot_date > (select max(snapshot_date) from {drift}) - %s"
            " order by snapshot_date desc"
        ).format(drift=DRIFT_DAILY),
        (days,),
    )


@_until_built(None)
def drift_on(conn: psycopg.Connection, snapshot_date: date) -> dict[str, Any] | None:
    """The drift report of one date; None: none was made for it."""
    return _row(
        conn,
        sql.SQL("select * from {} where snapshot_date = %s").format(DRIFT_DAILY),
        (snapshot_date,),
    )


@_until_built(pd.DataFrame)
def quality_by_date(conn: psycopg.Connection, days: int) -> pd.DataFrame:
    """The data quality verdicts of the last ``days`` checked dates, newest first."""
    return _frame(
        conn,
        sql.SQL(
            "select snapshot_date, success, expectations, failed, failed_expectations,"
            " checked_at from {quality}"
            " where snapshot_date > (select max(snapshot_date) from {quality}) - %s"
            " order by snapshot_date desc"
        ).format(quality=DATA_QUALITY_DAILY),
        (days,),
    )
