"""Synthetic Telco-like customers, reproducible from a seed, with a knob for drift.

Why this exists: the real IBM Telco file has only 5,634 customers and is never copied into the
project, yet demos, tests and scale runs need any number of realistic customers, always the same
ones for a seed, and a way to shift them so that drift monitoring and retraining have something
to notice. Every number below was read off the real file (marginals and cross-tabulations) and
rounded; the tests compare the generated marginals to the real ones.

How one customer is drawn, in this order (a small Bayesian network; every table is a module
constant):

1. ``gender`` 50/50, ``SeniorCitizen`` 16.2 %, ``Partner`` 48.3 %, ``Dependents`` given senior
   and partner (rare for seniors, common with a partner).
2. ``Contract`` given senior and partner: partners sign long contracts, seniors month to month.
3. ``tenure`` given the contract: a histogram over month bins, uniform inside a bin.
   Month-to-month customers pile up in their first months and two-year customers at 72 months,
   which makes tenure bimodal as in the real file. Tenure 0 (joined this month) is rare and
   happens almost only on long contracts.
4. ``InternetService`` given contract and senior (seniors and month-to-month customers take
   fiber). ``PhoneService`` always comes with fiber or no internet, 72 % of the time with DSL.
5. ``MultipleLines`` and the six add-ons are logistic in internet type, tenure (long-standing
   customers have bought more) and contract, fitted per service (``SERVICE_LOGITS``); TV and
   movies streaming share a per-customer taste, so they go together as in the real file. They
   read "No phone service" / "No internet service" exactly when there is no phone / internet.
6. ``PaperlessBilling`` given internet and contract; ``PaymentMethod`` given internet, contract
   and senior (fiber, month-to-month and senior customers pay by electronic check, customers
   without internet by mailed check, long contracts automatically).
7. ``MonthlyCharges`` is the list price (20 for a phone line, +5 for multiple lines, 25 for DSL
   or 50 for fiber, +5 each for security, backup, protection and support, +10 each for TV and
   movies streaming; on the real file this leaves residuals of sd 1) plus N(0, 1.1) noise (N(0, 0.5)
   without internet), rounded to 5 cents.
8. ``TotalCharges`` = tenure x MonthlyCharges x (1 + 0.2 z sqrt(tenure - 1) / tenure), z ~ N(0,1):
   past price changes, exact in the first month, rounded to 5 cents. At tenure 0 it is a single
   space, exactly as the real file writes a customer with no bill yet.
9. ``Churn`` is "Yes" with probability sigmoid(logit), where logit is the sum of
   ``CHURN_INTERCEPT`` (-0.90) and the coefficients that apply:

   ========================================  ======  ===========================================
   constant                                  value   applies when
   ========================================  ======  ===========================================
   CHURN_COEF_MONTH_TO_MONTH                 +0.60   Contract is Month-to-month
   CHURN_COEF_TWO_YEAR                       -0.95   Contract is Two year (One year is the base)
   CHURN_COEF_LOG1P_TENURE                   -0.65   times ln(1 + tenure in months)
   CHURN_COEF_FIBER_OPTIC                    +0.80   InternetService is Fiber optic
   CHURN_COEF_NO_INTERNET                    -0.30   InternetService is No
   CHURN_COEF_ELECTRONIC_CHECK               +0.45   PaymentMethod is Electronic check
   CHURN_COEF_NO_TECH_SUPPORT                +0.35   TechSupport is No (internet, no support)
   CHURN_COEF_NO_ONLINE_SECURITY             +0.40   OnlineSecurity is No
   CHURN_COEF_PAPERLESS_BILLING              +0.30   PaperlessBilling is Yes
   CHURN_COEF_SENIOR_CITIZEN                 +0.20   SeniorCitizen is 1
   CHURN_COEF_STREAMING                      +0.30   StreamingTV or StreamingMovies is Yes
   CHURN_COEF_DEPENDENTS                     -0.20   Dependents is Yes
   CHURN_COEF_PER_10_OVER_LIST_PRICE         +0.30   per 10 of MonthlyCharges above list price
   ========================================  ======  ===========================================

   These are rounded from a logistic regression fitted to the real file, and the intercept is
   calibrated so that about 26.5 % churn, as in the real file. A customer with tenure 0 never
   churns: it joined this month. The last coefficient makes price rises (see drift) drive churn.

Drift ``d`` in [0, 1] (0 is the real population) shifts the population in three documented ways,
each growing linearly with ``d``, and everything drawn after them follows (a customer moved to
month-to-month gets a month-to-month tenure, internet service and payment method):

- each One year / Two year contract becomes Month-to-month with probability ``0.5 d``;
- tenure is multiplied by ``1 - 0.4 d`` and rounded (a customer of at least one month keeps at
  least one month), so the base looks newer;
- MonthlyCharges are multiplied by ``1 + 0.3 d`` (a price rise; TotalCharges follow), which
  through ``CHURN_COEF_PER_10_OVER_LIST_PRICE`` also raises churn.

The random draws do not depend on ``drift`` or ``labelled``: the same seed gives the same
customers (same ids, same genders, same uniform draws), only shifted, so a drifted snapshot is
comparable customer by customer with the undrifted one.

Customers are drawn in chunks of ``GENERATION_CHUNK_ROWS`` from independent streams spawned from
``numpy.random.default_rng(seed)``, so writing a file never holds more than one chunk of text.

A run of days (:class:`Simulation`, :func:`write_simulation`) follows one customer base through
time, so that drift monitoring, retraining and realised performance have days to work on: the
same customers day after day (a customer scored today is found again when their label arrives),
a small daily turnover as the only noise of quiet days, drift from a chosen day on, and labels
that arrive a fixed number of days after a customer is first seen. :class:`Simulation` states the
rules.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from retention_pipelines.core.ingestion import landing_file_name
from retention_pipelines.core.schemas import TELCO_COLUMNS

__all__ = [
    "TELCO_COLUMNS",
    "SimulatedDay",
    "Simulation",
    "generate_customers",
    "landing_file_name",
    "simulated_day_chunks",
    "write_landing_csv",
    "write_simulation",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
TextArray = npt.NDArray[np.object_]

# --- Values as the landing file spells them; the tuple index is the code used while drawing. ---
GENDERS: Final[tuple[str, ...]] = ("Female", "Male")
NO_YES: Final[tuple[str, ...]] = ("No", "Yes")
MULTIPLE_LINES_VALUES: Final[tuple[str, ...]] = ("No", "Yes", "No phone service")
INTERNET_SERVICES: Final[tuple[str, ...]] = ("DSL", "Fiber optic", "No")
ADD_ON_VALUES: Final[tuple[str, ...]] = ("No", "Yes", "No internet service")
CONTRACTS: Final[tuple[str, ...]] = ("Month-to-month", "One year", "Two year")
PAYMENT_METHODS: Final[tuple[str, ...]] = (
    "Bank transfer (automatic)",
    "Credit card (automatic)",
    "Electronic check",
    "Mailed check",
)
ADD_ON_COLUMNS: Final[tuple[str, ...]] = (
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)
# What the real file writes in TotalCharges for a customer without a bill yet (tenure 0).
BLANK_TOTAL_CHARGES: Final = " "

_DSL, _FIBER, _NO_INTERNET = 0, 1, 2
_MONTH_TO_MONTH, _TWO_YEAR = 0, 2
_ELECTRONIC_CHECK = 2
_NO, _YES, _NOT_APPLICABLE = 0, 1, 2

# --- Demographics. ---
SENIOR_SHARE: Final = 0.162
PARTNER_SHARE: Final = 0.483
# P(Dependents = Yes), indexed [senior][partner].
DEPENDENTS_PROBABILITY: Final = np.array([[0.116, 0.586], [0.016, 0.158]])
# P(Contract), indexed [senior][partner] -> (Month-to-month, One year, Two year).
CONTRACT_PROBABILITIES: Final = np.array(
    [
        [[0.668, 0.181, 0.151], [0.362, 0.251, 0.387]],
        [[0.818, 0.126, 0.056], [0.582, 0.231, 0.187]],
    ]
)

# --- Tenure: month bins (first and last month inclusive) and their weights per contract. ---
TENURE_BIN_FIRST: Final = np.array([0, 1, 2, 7, 13, 25, 37, 49, 61, 72])
TENURE_BIN_LAST: Final = np.array([0, 1, 6, 12, 24, 36, 48, 60, 71, 72])
TENURE_BIN_WEIGHTS: Final = np.array(
    [
        [0.000, 0.157, 0.210, 0.153, 0.192, 0.125, 0.081, 0.056, 0.026, 0.001],  # Month-to-month
        [0.001, 0.004, 0.022, 0.055, 0.129, 0.164, 0.178, 0.228, 0.207, 0.012],  # One year
        [0.007, 0.001, 0.010, 0.023, 0.054, 0.056, 0.105, 0.162, 0.372, 0.209],  # Two year
    ]
)
MAX_TENURE: Final = 72

# --- Services. ---
# P(InternetService), indexed [contract][senior] -> (DSL, Fiber optic, No).
INTERNET_PROBABILITIES: Final = np.array(
    [
        [[0.351, 0.478, 0.171], [0.200, 0.786, 0.014]],
        [[0.397, 0.339, 0.265], [0.286, 0.640, 0.075]],
        [[0.365, 0.233, 0.402], [0.345, 0.491, 0.164]],
    ]
)
DSL_PHONE_SHARE: Final = 0.72


class ServiceLogit(NamedTuple):
    """Log-odds that a customer who can take a service (phone or internet) takes it.

    logit = by_internet[internet type] + per_tenure_month x (tenure - 36) + by_contract[contract];
    fitted per service on the real file and rounded.
    """

    by_internet: tuple[float, float, float]  # DSL, Fiber optic, No (No: only MultipleLines)
    per_tenure_month: float
    by_contract: tuple[float, float, float]  # Month-to-month, One year, Two year


SERVICE_LOGITS: Final[dict[str, ServiceLogit]] = {
    "MultipleLines": ServiceLogit((-0.21, 0.85, -1.03), 0.039, (0.0, -0.48, -0.22)),
    "OnlineSecurity": ServiceLogit((-0.41, -1.35, 0.0), 0.023, (0.0, 0.66, 1.15)),
    "OnlineBackup": ServiceLogit((-0.24, -0.29, 0.0), 0.034, (0.0, 0.20, 0.32)),
    "DeviceProtection": ServiceLogit((-0.68, -0.48, 0.0), 0.024, (0.0, 0.70, 1.22)),
    "TechSupport": ServiceLogit((-0.74, -1.49, 0.0), 0.015, (0.0, 0.93, 1.93)),
    "StreamingTV": ServiceLogit((-0.76, 0.16, 0.0), 0.021, (0.0, 0.45, 0.82)),
    "StreamingMovies": ServiceLogit((-0.71, 0.18, 0.0), 0.020, (0.0, 0.53, 0.82)),
}
SERVICE_LOGIT_CENTRE_MONTH: Final = 36
# A taste for streaming shared by TV and movies (a N(0, sd) term in both logits): people who
# stream one mostly stream both (correlation 0.42 among fiber customers in the real file).
STREAMING_TASTE_SD: Final = 1.6
STREAMING_COLUMNS: Final[tuple[str, ...]] = ("StreamingTV", "StreamingMovies")

# --- Billing. ---
# P(PaperlessBilling = Yes), indexed [internet][contract].
PAPERLESS_PROBABILITY: Final = np.array(
    [[0.596, 0.532, 0.486], [0.790, 0.723, 0.700], [0.335, 0.263, 0.274]]
)
# P(PaymentMethod), indexed [internet][contract] -> PAYMENT_METHODS order: fiber customers pay
# by electronic check, customers without internet by mailed check, long contracts automatically.
PAYMENT_PROBABILITIES: Final = np.array(
    [
        [[0.168, 0.156, 0.381, 0.295], [0.252, 0.303, 0.214, 0.231], [0.361, 0.367, 0.093, 0.179]],
        [[0.152, 0.139, 0.612, 0.097], [0.277, 0.298, 0.362, 0.063], [0.383, 0.366, 0.202, 0.049]],
        [[0.126, 0.107, 0.119, 0.648], [0.253, 0.210, 0.089, 0.448], [0.276, 0.284, 0.029, 0.411]],
    ]
)
# Seniors' weights are multiplied by these before normalising: they rarely mail cheques.
PAYMENT_SENIOR_WEIGHT: Final = np.array([1.0, 1.0, 1.1, 0.45])
# Indexed [internet][contract][senior]; rows are normalised when drawn.
_PAYMENT_TABLE: Final = np.stack(
    [PAYMENT_PROBABILITIES, PAYMENT_PROBABILITIES * PAYMENT_SENIOR_WEIGHT], axis=-2
)
PRICE_PHONE: Final = 20.0
PRICE_MULTIPLE_LINES: Final = 5.0
PRICE_INTERNET: Final = np.array([25.0, 50.0, 0.0])  # DSL, Fiber optic, No
PRICE_SUPPORT_ADD_ON: Final = 5.0  # security, backup, protection, tech support, each
PRICE_STREAMING: Final = 10.0  # TV, movies, each
PRICE_NOISE_SD: Final = np.array([1.1, 1.1, 0.5])  # per internet type
PRICE_NOISE_LIMIT_SD: Final = 4.0
TOTAL_CHARGES_NOISE: Final = 0.2

# --- Churn (see the module docstring). ---
CHURN_INTERCEPT: Final = -0.90
CHURN_COEF_MONTH_TO_MONTH: Final = 0.60
CHURN_COEF_TWO_YEAR: Final = -0.95
CHURN_COEF_LOG1P_TENURE: Final = -0.65
CHURN_COEF_FIBER_OPTIC: Final = 0.80
CHURN_COEF_NO_INTERNET: Final = -0.30
CHURN_COEF_ELECTRONIC_CHECK: Final = 0.45
CHURN_COEF_NO_TECH_SUPPORT: Final = 0.35
CHURN_COEF_NO_ONLINE_SECURITY: Final = 0.40
CHURN_COEF_PAPERLESS_BILLING: Final = 0.30
CHURN_COEF_SENIOR_CITIZEN: Final = 0.20
CHURN_COEF_STREAMING: Final = 0.30
CHURN_COEF_DEPENDENTS: Final = -0.20
CHURN_COEF_PER_10_OVER_LIST_PRICE: Final = 0.30

# --- Drift (see the module docstring). ---
DRIFT_CONTRACT_SWITCH_SHARE: Final = 0.5
DRIFT_TENURE_SHRINK: Final = 0.4
DRIFT_PRICE_RISE: Final = 0.3

# --- Customer ids: 4 digits, a dash, 5 capital letters, as in the real file. ---
_LETTER_CODES: Final = 26**5
CUSTOMER_ID_SPACE: Final = 10_000 * _LETTER_CODES

GENERATION_CHUNK_ROWS: Final = 200_000
_UNIFORM_DRAWS: Final = 20  # per customer; fixed so that drift and labelled never shift streams
_NORMAL_DRAWS: Final = 3
_CENTS_PER_NICKEL: Final = 5
_NICKELS_PER_UNIT: Final = 20

# --- Simulated days (see Simulation). ---
SIMULATION_DRIFT: Final = 0.6  # strength the default run drifts to: the drift report flags it
SIMULATION_LABEL_LAG_DAYS: Final = 3
SIMULATION_TURNOVER: Final = 0.02  # share of the customers replaced each day
# Customer slots are drawn in blocks of this many, each from a stream of its own, so a day's file
# is written block by block whatever its size, and a slot's customer depends on the seed only.
SIMULATION_BLOCK_ROWS: Final = 20_000
# Block b draws its ids from the ids congruent to b modulo this: distinct across blocks by
# construction, so no block needs to know another's ids. It bounds a run's slots to
# SIMULATION_ID_STRIPES x SIMULATION_BLOCK_ROWS (200 million).
SIMULATION_ID_STRIPES: Final = 10_000
# First spawn key of the block streams: a simulation never replays generate_customers' chunks.
_SIMULATION_STREAM: Final = 0x51D


@dataclasses.dataclass(frozen=True)
class _CustomerDraws:
    """One chunk of customers as codes (indices into the value tuples) and amounts in nickels."""

    gender: IntArray
    senior: BoolArray
    partner: BoolArray
    dependents: BoolArray
    tenure: IntArray
    phone: BoolArray
    multiple_lines: IntArray
    internet: IntArray
    add_ons: tuple[IntArray, ...]
    contract: IntArray
    paperless: BoolArray
    payment: IntArray
    monthly_nickels: IntArray
    total_nickels: IntArray
    churn: BoolArray


def generate_customers(
    n: int, *, seed: int = 0, drift: float = 0.0, labelled: bool = True
) -> pd.DataFrame:
    """``n`` synthetic customers as the landing file would hold them: every column is text.

    Text rather than typed columns so that the frame is exactly what ingestion reads from a file
    (``pandas.read_csv(path, dtype=str, keep_default_na=False)`` of a written file equals it).
    ``labelled=False`` leaves Churn empty, as in a scoring snapshot where the outcome is unknown;
    everything else stays identical to the labelled frame of the same seed.
    """
    n = _checked_count(n, drift)
    chunks = [pd.DataFrame(columns) for columns in _text_chunks(n, seed, drift, labelled)]
    if not chunks:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in TELCO_COLUMNS})
    return pd.concat(chunks, ignore_index=True)


def write_landing_csv(
    path: Path, n: int, *, seed: int = 0, drift: float = 0.0, labelled: bool = True
) -> Path:
    """Write ``n`` customers to ``path`` as a landing CSV and return ``path``.

    The format is the real file's: UTF-8 without BOM, the Telco header, ``\\n`` line ends, no
    index and no quoting (no value contains a comma or a quote). Rows are joined in plain Python
    chunk by chunk, which measured faster than ``DataFrame.to_csv`` and keeps memory bounded.
    The file appears under its name only when complete (written beside it, then renamed), so a
    sensor watching the landing folder never reads half a file.
    """
    n = _checked_count(n, drift)
    return _write_text_chunks(path, _text_chunks(n, seed, drift, labelled))


def _write_text_chunks(path: Path, chunks: Iterable[dict[str, TextArray]]) -> Path:
    """Write the header and the chunks' rows to ``path`` atomically (see write_landing_csv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            handle.write(",".join(TELCO_COLUMNS) + "\n")
            for columns in chunks:
                rows = zip(*(columns[name] for name in TELCO_COLUMNS), strict=True)
                handle.write("\n".join(map(",".join, rows)))
                handle.write("\n")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@dataclasses.dataclass(frozen=True)
class Simulation:
    """A run of ``days`` daily snapshots of one customer base, reproducible from ``seed``.

    Days are numbered from 1; day ``i`` is dated ``start + (i - 1)`` days.

    Customers. An endless sequence of customer slots is drawn from the seed (independent
    customers, as in :func:`generate_customers`). Day ``i`` holds the ``customers`` slots from
    ``(i - 1) x k`` on, where ``k = round(customers x turnover)``: each day the ``k`` customers
    who have been there longest leave and ``k`` new ones join. Which slots leave is unrelated to
    who they are, so a quiet day is the same population as the day before, resampled in ``k``
    customers: this is the only noise of quiet days (a customer who stays keeps their row, byte
    for byte, until drift changes them), and ``turnover=0`` makes quiet days identical.

    Drift (:meth:`drift_on`). Days before ``drift_from`` have drift 0; from ``drift_from`` on, the
    strength climbs linearly to ``drift`` over ``ramp_days`` days and stays there. The default,
    ``ramp_days=1``, is a step: one clean change, so the drift sensor sees one drifted date
    and a retraining on that date's labels learns the new population at once. Drift applies to
    the whole day's file, customers who stayed included (``generate_customers`` shifts the same
    draws, so a customer is comparable with themself across the change); ``drift_from=0`` means
    never.

    Labels (:attr:`labelled_rows`). A customer's churn outcome is known ``label_lag`` days after
    they are first seen: in each day's file, the customers who were already there ``label_lag``
    days earlier carry Churn (Yes/No), the ones who joined since have it blank. The outcome is
    the generator's for the customer as that day's file describes them, so labelled rows of a
    drifted day show the drifted population's churn. The base is taken to have turned over the
    same way before day 1, so day 1 is labelled too: ``customers - label_lag x k`` rows every
    day, the oldest ones.
    """

    customers: int
    days: int
    start: date
    drift_from: int = 0
    drift: float = SIMULATION_DRIFT
    label_lag: int = SIMULATION_LABEL_LAG_DAYS
    turnover: float = SIMULATION_TURNOVER
    ramp_days: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        problem = next(self._problems(), None)
        if problem is not None:
            raise ValueError(problem)

    def _problems(self) -> Iterator[str]:
        """What makes the run impossible, checked in the order a person reads the options."""
        if self.days < 1:
            yield f"days must be at least 1, got {self.days}"
        if not 0 <= self.drift_from <= self.days:
            yield (
                f"drift_from must be a day from 1 to {self.days} (or 0: never),"
                f" got {self.drift_from}"
            )
        if self.customers < 1:
            yield f"customers must be at least 1, got {self.customers}"
        if not 0.0 <= self.drift <= 1.0:
            yield f"drift must be between 0 and 1, got {self.drift}"
        if self.label_lag < 0:
            yield f"label_lag must be 0 or more days, got {self.label_lag}"
        if not 0.0 <= self.turnover <= 1.0:
            yield f"turnover must be between 0 and 1, got {self.turnover}"
        if self.ramp_days < 1:
            yield f"ramp_days must be at least 1, got {self.ramp_days}"
        if self.seed < 0:
            yield f"seed must be 0 or more, got {self.seed}"
        yield from self._capacity_problems()

    def _capacity_problems(self) -> Iterator[str]:
        if self.labelled_rows < 1:
            yield (
                f"no customer would be labelled: {self.label_lag} days of label lag at"
                f" {self.daily_turnover:,} new customers a day replace all {self.customers:,}"
            )
        slots = self.first_slot(self.days) + self.customers
        if slots > SIMULATION_ID_STRIPES * SIMULATION_BLOCK_ROWS:
            yield (
                f"the run needs {slots:,} distinct customers; at most"
                f" {SIMULATION_ID_STRIPES * SIMULATION_BLOCK_ROWS:,} (fewer days or less turnover)"
            )

    @property
    def daily_turnover(self) -> int:
        """Customers who leave, and join, each day."""
        return round(self.customers * self.turnover)

    @property
    def labelled_rows(self) -> int:
        """Rows with a Churn value in every day's file: the customers of ``label_lag`` days ago."""
        return self.customers - self.label_lag * self.daily_turnover

    def snapshot_date(self, day: int) -> date:
        return self.start + timedelta(days=day - 1)

    def first_slot(self, day: int) -> int:
        """The slot of the longest-standing customer of ``day``; the day holds the next
        ``customers`` slots from it."""
        return (day - 1) * self.daily_turnover

    def drift_on(self, day: int) -> float:
        """Drift strength of ``day``: 0 before ``drift_from``, then a ramp of ``ramp_days`` days
        (a step when 1) up to ``drift``."""
        if self.drift_from == 0 or day < self.drift_from:
            return 0.0
        return self.drift * min(1.0, (day - self.drift_from + 1) / self.ramp_days)


@dataclasses.dataclass(frozen=True)
class SimulatedDay:
    """One written day of a simulation: what the summary of a run shows."""

    day: int
    snapshot_date: date
    path: Path
    customers: int
    drift: float
    labelled: int
    churned: int  # labelled rows with Churn "Yes"


def write_simulation(simulation: Simulation, folder: Path) -> Iterator[SimulatedDay]:
    """Write each day's landing file ``customers_YYYY-MM-DD.csv`` into ``folder``, in date
    order, and yield its summary once the file is complete.

    A generator, so a caller can show progress: nothing is written until it is iterated, and each
    file is written block by block (:func:`simulated_day_chunks`), so memory does not grow with
    the number of customers. Existing files of the same dates are replaced.
    """
    for day in range(1, simulation.days + 1):
        path = folder / landing_file_name(simulation.snapshot_date(day))
        churn_values: Counter[str] = Counter()
        chunks = _counting_churn(simulated_day_chunks(simulation, day), churn_values)
        _write_text_chunks(path, chunks)
        yield SimulatedDay(
            day=day,
            snapshot_date=simulation.snapshot_date(day),
            path=path,
            customers=simulation.customers,
            drift=simulation.drift_on(day),
            labelled=churn_values["Yes"] + churn_values["No"],
            churned=churn_values["Yes"],
        )


def simulated_day_chunks(simulation: Simulation, day: int) -> Iterator[dict[str, TextArray]]:
    """The text columns of ``day``'s customers (see :class:`Simulation`), one block at a time.

    Every block of slots the day touches is drawn whole at the day's drift, so a slot's customer
    never depends on which day or window asks for it, then cut to the day's slots; all but the
    day's newest ``label_lag x daily_turnover`` customers keep their Churn value.
    """
    first = simulation.first_slot(day)
    stop = first + simulation.customers
    labelled_stop = first + simulation.labelled_rows
    drift = simulation.drift_on(day)
    for block in range(first // SIMULATION_BLOCK_ROWS, math.ceil(stop / SIMULATION_BLOCK_ROWS)):
        block_first = block * SIMULATION_BLOCK_ROWS
        low, high = max(first, block_first), min(stop, block_first + SIMULATION_BLOCK_ROWS)
        rows = slice(low - block_first, high - block_first)
        block_text = _simulated_block(simulation.seed, block, drift)
        columns = {name: values[rows] for name, values in block_text.items()}
        labelled = np.arange(low, high) < labelled_stop
        columns["Churn"] = np.where(labelled, columns["Churn"], "")
        yield columns


def _simulated_block(seed: int, block: int, drift: float) -> dict[str, TextArray]:
    """The labelled text of block ``block``'s customers at ``drift``, from the block's own stream.

    Ids come from residue class ``block`` modulo ``SIMULATION_ID_STRIPES``, drawn without
    replacement, so they are distinct within the block and across blocks.
    """
    spawn_key = (_SIMULATION_STREAM, block)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))
    stripe_ids = rng.choice(
        CUSTOMER_ID_SPACE // SIMULATION_ID_STRIPES, size=SIMULATION_BLOCK_ROWS, replace=False
    )
    ids = block + SIMULATION_ID_STRIPES * stripe_ids
    return _format_customers(ids, _draw_customers(rng, SIMULATION_BLOCK_ROWS, drift), labelled=True)


def _counting_churn(
    chunks: Iterable[dict[str, TextArray]], counts: Counter[str]
) -> Iterator[dict[str, TextArray]]:
    """Pass the chunks through, counting their Churn values into ``counts`` on the way."""
    for columns in chunks:
        values, frequencies = np.unique(columns["Churn"].astype(str), return_counts=True)
        counts.update(dict(zip(values.tolist(), frequencies.tolist(), strict=True)))
        yield columns


def _text_chunks(n: int, seed: int, drift: float, labelled: bool) -> Iterator[dict[str, TextArray]]:
    """Draw and format the customers chunk by chunk; one id draw covers all chunks.

    Ids come from the root generator and each chunk from its own spawned stream, so a chunk's
    customers do not depend on how the chunks are consumed (a frame or a file).
    """
    root = np.random.default_rng(seed)
    ids = _draw_customer_ids(root, n)
    chunk_count = math.ceil(n / GENERATION_CHUNK_ROWS)
    for index, chunk_rng in enumerate(root.spawn(chunk_count)):
        chunk_ids = ids[index * GENERATION_CHUNK_ROWS : (index + 1) * GENERATION_CHUNK_ROWS]
        draws = _draw_customers(chunk_rng, chunk_ids.size, drift)
        yield _format_customers(chunk_ids, draws, labelled)


def _draw_customer_ids(rng: np.random.Generator, n: int) -> IntArray:
    """``n`` distinct id numbers out of the whole id space, in random order.

    Sampling without replacement (numpy switches to a set-based method when ``n`` is small next
    to the space) guarantees uniqueness for any ``n`` up to the 118.8 billion possible ids, so a
    file never holds the same customer twice by accident.
    """
    return rng.choice(CUSTOMER_ID_SPACE, size=n, replace=False)


def _checked_count(n: int, drift: float) -> int:
    """Refuse what cannot be generated before anything is written; ``n`` must be an integer."""
    n = operator.index(n)
    if not 0 <= n <= CUSTOMER_ID_SPACE:
        raise ValueError(f"n must be between 0 and {CUSTOMER_ID_SPACE:,}, got {n}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift}")
    return n


def _draw_customers(rng: np.random.Generator, size: int, drift: float) -> _CustomerDraws:
    """Draw one chunk following the network of the module docstring."""
    uniforms = iter(rng.random((_UNIFORM_DRAWS, size)))
    normals = rng.standard_normal((_NORMAL_DRAWS, size))
    gender = (next(uniforms) < 0.5).astype(np.int64)
    senior = next(uniforms) < SENIOR_SHARE
    partner = next(uniforms) < PARTNER_SHARE
    dependents = next(uniforms) < DEPENDENTS_PROBABILITY[senior.astype(int), partner.astype(int)]
    contract = _draw_category(next(uniforms), CONTRACT_PROBABILITIES, senior, partner)
    switched = next(uniforms) < DRIFT_CONTRACT_SWITCH_SHARE * drift
    contract = np.where(switched, _MONTH_TO_MONTH, contract)
    tenure = _draw_tenure(next(uniforms), next(uniforms), contract, drift)
    internet = _draw_category(next(uniforms), INTERNET_PROBABILITIES, contract, senior)
    phone = (next(uniforms) < DSL_PHONE_SHARE) | (internet != _DSL)
    multiple_lines = _draw_service(
        next(uniforms),
        SERVICE_LOGITS["MultipleLines"],
        internet=internet,
        contract=contract,
        tenure=tenure,
        available=phone,
    )
    streaming_taste = STREAMING_TASTE_SD * normals[2]
    add_ons = tuple(
        _draw_service(
            next(uniforms),
            SERVICE_LOGITS[column],
            internet=internet,
            contract=contract,
            tenure=tenure,
            available=internet != _NO_INTERNET,
            taste=streaming_taste if column in STREAMING_COLUMNS else None,
        )
        for column in ADD_ON_COLUMNS
    )
    paperless = next(uniforms) < PAPERLESS_PROBABILITY[internet, contract]
    payment = _draw_category(next(uniforms), _PAYMENT_TABLE, internet, contract, senior)
    list_price = _list_price(phone, multiple_lines, internet, add_ons)
    noise = PRICE_NOISE_SD[internet] * np.clip(
        normals[0], -PRICE_NOISE_LIMIT_SD, PRICE_NOISE_LIMIT_SD
    )
    monthly = (list_price + noise) * (1.0 + DRIFT_PRICE_RISE * drift)
    monthly_nickels = np.rint(monthly * _NICKELS_PER_UNIT).astype(np.int64)
    total_nickels = _total_nickels(tenure, monthly_nickels, normals[1])
    features = _CustomerDraws(
        gender=gender,
        senior=senior,
        partner=partner,
        dependents=dependents,
        tenure=tenure,
        phone=phone,
        multiple_lines=multiple_lines,
        internet=internet,
        add_ons=add_ons,
        contract=contract,
        paperless=paperless,
        payment=payment,
        monthly_nickels=monthly_nickels,
        total_nickels=total_nickels,
        churn=np.zeros(size, dtype=bool),  # drawn below, from the features above
    )
    churn_logit = _churn_logit(features, monthly_nickels / _NICKELS_PER_UNIT - list_price)
    churn = (next(uniforms) < _sigmoid(churn_logit)) & (tenure > 0)
    return dataclasses.replace(features, churn=churn)


def _draw_category(
    uniform: FloatArray, table: FloatArray, *index: npt.NDArray[np.integer] | BoolArray
) -> IntArray:
    """Inverse-CDF draw of one category per row from ``table[index]`` (last axis: categories).

    The cumulative sums are taken on the small table, then one threshold at a time is looked up
    per row, which is several times faster than gathering a row-by-category matrix.
    """
    cumulative = np.cumsum(table, axis=-1)
    cumulative /= cumulative[..., -1:]
    rows = tuple(np.asarray(position, dtype=np.intp) for position in index)
    code = np.zeros(uniform.size, dtype=np.int64)
    for category in range(table.shape[-1] - 1):
        code += uniform >= cumulative[..., category][rows]
    return code


def _draw_tenure(
    bin_uniform: FloatArray, month_uniform: FloatArray, contract: IntArray, drift: float
) -> IntArray:
    """Months with the company: a bin by contract, a month uniform in it, then drift's shrink."""
    tenure_bin = _draw_category(bin_uniform, TENURE_BIN_WEIGHTS, contract)
    first = TENURE_BIN_FIRST[tenure_bin]
    width = TENURE_BIN_LAST[tenure_bin] - first + 1
    tenure = first + np.floor(month_uniform * width).astype(np.int64)
    shrunk = np.rint(tenure * (1.0 - DRIFT_TENURE_SHRINK * drift)).astype(np.int64)
    return np.where(tenure > 0, np.maximum(shrunk, 1), 0)


def _draw_service(
    uniform: FloatArray,
    model: ServiceLogit,
    *,
    internet: IntArray,
    contract: IntArray,
    tenure: IntArray,
    available: BoolArray,
    taste: FloatArray | None = None,
) -> IntArray:
    """A service code: No/Yes from the service's logit, or "not applicable" (code 2) without the
    phone line or internet it needs."""
    logit = (
        np.asarray(model.by_internet)[internet]
        + model.per_tenure_month * (tenure - SERVICE_LOGIT_CENTRE_MONTH)
        + np.asarray(model.by_contract)[contract]
    )
    if taste is not None:
        # A shared N(0, sd) taste would pull the share taken towards one half; scaling the logit by
        # sqrt(1 + pi sd^2 / 8) keeps it (E[sigmoid(m + sd Z)] ~ sigmoid(m / that factor)).
        logit = logit * math.sqrt(1.0 + math.pi * STREAMING_TASTE_SD**2 / 8.0) + taste
    taken = (uniform < _sigmoid(logit)).astype(np.int64)
    return np.where(available, taken, _NOT_APPLICABLE)


def _list_price(
    phone: BoolArray, multiple_lines: IntArray, internet: IntArray, add_ons: tuple[IntArray, ...]
) -> FloatArray:
    """The monthly price of the services taken, before noise and drift."""
    support = sum((add_on == _YES).astype(np.float64) for add_on in add_ons[:4])
    streaming = sum((add_on == _YES).astype(np.float64) for add_on in add_ons[4:])
    return (
        PRICE_PHONE * phone
        + PRICE_MULTIPLE_LINES * (multiple_lines == _YES)
        + PRICE_INTERNET[internet]
        + PRICE_SUPPORT_ADD_ON * support
        + PRICE_STREAMING * streaming
    )


def _total_nickels(tenure: IntArray, monthly_nickels: IntArray, normal: FloatArray) -> IntArray:
    """TotalCharges in nickels: tenure x monthly, blurred by past price changes after month 1."""
    safe_tenure = np.maximum(tenure, 1)
    blur = TOTAL_CHARGES_NOISE * normal * np.sqrt(safe_tenure - 1) / safe_tenure
    factor = np.clip(1.0 + blur, 0.5, 1.5)
    return np.rint(tenure * monthly_nickels * factor).astype(np.int64)


def _churn_logit(draws: _CustomerDraws, over_list_price: FloatArray) -> FloatArray:
    """The log-odds of churn from the documented coefficients."""
    security, _, _, tech_support, streaming_tv, streaming_movies = draws.add_ons
    return (
        CHURN_INTERCEPT
        + CHURN_COEF_MONTH_TO_MONTH * (draws.contract == _MONTH_TO_MONTH)
        + CHURN_COEF_TWO_YEAR * (draws.contract == _TWO_YEAR)
        + CHURN_COEF_LOG1P_TENURE * np.log1p(draws.tenure)
        + CHURN_COEF_FIBER_OPTIC * (draws.internet == _FIBER)
        + CHURN_COEF_NO_INTERNET * (draws.internet == _NO_INTERNET)
        + CHURN_COEF_ELECTRONIC_CHECK * (draws.payment == _ELECTRONIC_CHECK)
        + CHURN_COEF_NO_TECH_SUPPORT * (tech_support == _NO)
        + CHURN_COEF_NO_ONLINE_SECURITY * (security == _NO)
        + CHURN_COEF_PAPERLESS_BILLING * draws.paperless
        + CHURN_COEF_SENIOR_CITIZEN * draws.senior
        + CHURN_COEF_STREAMING * ((streaming_tv == _YES) | (streaming_movies == _YES))
        + CHURN_COEF_DEPENDENTS * draws.dependents
        + CHURN_COEF_PER_10_OVER_LIST_PRICE * over_list_price / 10.0
    )


def _sigmoid(logit: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-logit))


def _format_customers(ids: IntArray, draws: _CustomerDraws, labelled: bool) -> dict[str, TextArray]:
    """Turn codes into the landing file's text, by table look-ups rather than per-row formatting."""
    add_on_text = dict(zip(ADD_ON_COLUMNS, draws.add_ons, strict=True))
    total_text = _amount_text(draws.total_nickels, whole_suffix="")
    total_text[draws.tenure == 0] = BLANK_TOTAL_CHARGES
    churn_text = (
        _lookup(NO_YES, draws.churn) if labelled else np.full(draws.churn.size, "", dtype=object)
    )
    return {
        "customerID": _customer_id_text(ids),
        "gender": _lookup(GENDERS, draws.gender),
        "SeniorCitizen": _lookup(("0", "1"), draws.senior),
        "Partner": _lookup(NO_YES, draws.partner),
        "Dependents": _lookup(NO_YES, draws.dependents),
        "tenure": _lookup(tuple(str(month) for month in range(MAX_TENURE + 1)), draws.tenure),
        "PhoneService": _lookup(NO_YES, draws.phone),
        "MultipleLines": _lookup(MULTIPLE_LINES_VALUES, draws.multiple_lines),
        "InternetService": _lookup(INTERNET_SERVICES, draws.internet),
        **{column: _lookup(ADD_ON_VALUES, codes) for column, codes in add_on_text.items()},
        "Contract": _lookup(CONTRACTS, draws.contract),
        "PaperlessBilling": _lookup(NO_YES, draws.paperless),
        "PaymentMethod": _lookup(PAYMENT_METHODS, draws.payment),
        "MonthlyCharges": _amount_text(draws.monthly_nickels, whole_suffix=".0"),
        "TotalCharges": total_text,
        "Churn": churn_text,
    }


def _lookup(values: tuple[str, ...], codes: npt.NDArray[np.integer] | BoolArray) -> TextArray:
    return np.array(values, dtype=object)[codes.astype(np.intp)]


def _amount_text(nickels: IntArray, *, whole_suffix: str) -> TextArray:
    """Amounts as Python prints a float with at most two decimals: ``53.85``, ``42.3``.

    Whole amounts end in ``whole_suffix``: the real file writes MonthlyCharges ``84.0`` but
    TotalCharges ``97``.
    """
    if nickels.size == 0:
        return np.empty(0, dtype=object)
    units, remainder = np.divmod(nickels, _NICKELS_PER_UNIT)
    unit_text = np.array([str(unit) for unit in range(int(units.max()) + 1)], dtype=object)
    fractions = [
        f".{remainder * _CENTS_PER_NICKEL:02d}".rstrip("0") if remainder else whole_suffix
        for remainder in range(_NICKELS_PER_UNIT)
    ]
    return unit_text[units] + np.array(fractions, dtype=object)[remainder]


def _customer_id_text(ids: IntArray) -> TextArray:
    """Ids like ``7590-VHVEG``: built as one ASCII buffer and split, far faster than f-strings."""
    if ids.size == 0:
        return np.empty(0, dtype=object)
    digits, letters = np.divmod(ids, _LETTER_CODES)
    buffer = np.empty((ids.size, 11), dtype=np.uint8)
    for position in range(3, -1, -1):
        digits, digit = np.divmod(digits, 10)
        buffer[:, position] = digit + ord("0")
    buffer[:, 4] = ord("-")
    for position in range(9, 4, -1):
        letters, letter = np.divmod(letters, 26)
        buffer[:, position] = letter + ord("A")
    buffer[:, 10] = ord(",")
    text = buffer.tobytes().decode("ascii")
    return np.array(text[:-1].split(","), dtype=object)
