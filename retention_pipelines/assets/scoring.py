"""Nightly scoring: every customer of a snapshot date scored by the champion, with reasons."""

import re
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from retention_pipelines.assets.partitions import daily_partitions, one_partition_per_run
from retention_pipelines.core import registry
from retention_pipelines.core.scoring import (
    SCORE_CHECKS,
    ModelRef,
    RiskBands,
    ScoreSummary,
    check_scores,
    count_features,
    score_partition,
    summarize_scores,
)
from retention_pipelines.resources import MlflowResource, WarehouseResource
from retention_pipelines.settings import get_settings

GROUP = "scoring"
ASSET = "churn_risk_scores"
# The per-chunk progress line; `retention score` reads it back to drive its progress bar.
PROGRESS = "scored {rows:,} of {total:,} customers"
PROGRESS_PATTERN = re.compile(r"scored ([\d,]+) of ([\d,]+) customers")


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=one_partition_per_run,
    deps=["customer_features"],
    kinds={"postgres", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=ASSET, description=text, blocking=True)
        for name, text in SCORE_CHECKS.items()
    ],
)
def churn_risk_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    """``ml.churn_risk_scores`` for the partition's date: calibrated churn probability, risk
    band and the three strongest reasons per customer, replaced in one transaction."""
    settings = get_settings()
    day = date.fromisoformat(context.partition_key)
    url = warehouse.url()
    total = count_features(url, day)
    if total == 0:
        raise dg.Failure(
            f"features.customer_features has no rows for {day}: "
            "materialize raw_customer_snapshot and customer_features for that date first"
        )
    pyfunc, version = registry.load_champion(mlflow_registry.client(warehouse))
    model = ModelRef(pyfunc.unwrap_python_model().model, registry.MODEL_NAME, version)
    context.log.info(f"scoring {total:,} customers of {day} with {registry.MODEL_NAME} v{version}")
    outcome = score_partition(
        url,
        day,
        model,
        bands=RiskBands(high=settings.risk_high_threshold, medium=settings.risk_medium_threshold),
        chunk_rows=settings.scoring_chunk_rows,
        scored_at=datetime.now(UTC),
        reuse_unchanged=settings.scoring_reuse_unchanged,
        exact_gap=settings.scoring_exact_gap,
        on_chunk=lambda rows: context.log.info(PROGRESS.format(rows=rows, total=total)),
    )
    if outcome.reused:
        context.log.info(f"{outcome.reused:,} unchanged customers kept their earlier score")
    summary = summarize_scores(url, day)
    return dg.MaterializeResult(
        metadata={
            **_metadata(outcome.rows, version, summary),
            "customers_rescored": outcome.rows - outcome.reused,
            "customers_carried_over": outcome.reused,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                metadata=check.metadata,
                severity=dg.AssetCheckSeverity.ERROR,
            )
            for check in check_scores(url, day, version)
        ],
    )


def _metadata(written: int, version: str, summary: ScoreSummary) -> dict[str, object]:
    share = {band: count / max(1, written) for band, count in summary.band_counts.items()}
    return {
        "dagster/row_count": written,
        "model_name": registry.MODEL_NAME,
        "model_version": version,
        "mean_churn_probability": dg.MetadataValue.float(round(summary.mean_probability, 4)),
        **{f"{band}_risk_customers": count for band, count in summary.band_counts.items()},
        "risk_bands": dg.MetadataValue.md(
            _table(
                ["band", "customers", "share"],
                [
                    [band, f"{count:,}", f"{share[band]:.1%}"]
                    for band, count in summary.band_counts.items()
                ],
            )
        ),
        "probability_histogram": dg.MetadataValue.md(_histogram(summary.histogram)),
        "top_first_reasons": dg.MetadataValue.md(
            _table(["first reason", "customers"], [[r, f"{n:,}"] for r, n in summary.top_reasons])
        ),
        "highest_risk_customers": dg.MetadataValue.md(_markdown(summary.highest_risk)),
    }


def _histogram(buckets: list[tuple[str, int]]) -> str:
    peak = max((count for _, count in buckets), default=0) or 1
    rows = [[label, f"{count:,}", "█" * round(30 * count / peak)] for label, count in buckets]
    return _table(["churn probability", "customers", ""], rows)


def _markdown(frame: pd.DataFrame) -> str:
    return _table(list(frame.columns), frame.astype(str).to_numpy().tolist())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
