"""Nightly scoring speed and memory, against a naive pipeline, for both model families.

    uv run python benchmarks/scoring.py [--customers 100000 1000000] [--baseline-rows 100000]

In a throwaway database on the platform's Postgres it generates a labelled training snapshot
and one unlabelled snapshot per size (``retention generate``), ingests them and builds their
features through the real assets, trains a champion with a small budget (``retrain_job``),
fits the other model family the same way, and an XGBoost model of the reference size (300
trees of depth 5), each blended with the champion's logistic part. Then, each in a fresh
process so that its peak RSS is its own, it times:

- the scoring core (read features, predict, explain, reasons, write) for every size and
  every model, with seconds per stage;
- on the smallest size, the naive pipeline: ``pd.read_sql``, ``predict_proba``,
  ``shap.TreeExplainer(...).shap_values`` and ``DataFrame.to_sql``;
- how often the top reason scoring writes (the path approximation, with exact TreeSHAP for
  high-risk customers whose approximate top two reasons are close) is the one exact TreeSHAP
  of every row names;
- the next night of the largest size, in which ``--changed-share`` of the customers changed:
  the others keep their score, carried over inside Postgres.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from retention_pipelines.churn_model.model import ChurnModel
from retention_pipelines.core import database, registry, scoring
from retention_pipelines.core.features import feature_frame
from retention_pipelines.core.model_search import (
    MODEL_KINDS,
    TrainingResult,
    blend_and_calibrate,
    refit_candidate,
)
from retention_pipelines.core.training import THREADS, TrainingSplit, fit_baseline, labels_of
from retention_pipelines.datagen import write_landing_csv
from retention_pipelines.settings import get_settings

# The children measure scoring alone: Dagster, dbt and MLflow are imported by the parent only.

TRAIN_DAY = "2026-03-31"
NEXT_NIGHT = "2026-05-01"
REFERENCE_TREES = 300
SMALL_BUDGET = {
    "xgboost_trials": 10,
    "xgboost_timeout_s": 60,
    "catboost_trials": 3,
    "catboost_timeout_s": 90,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--agreement-rows", type=int, default=20_000)
    parser.add_argument("--chunk-rows", type=int, default=get_settings().scoring_chunk_rows)
    parser.add_argument(
        "--changed-share", type=float, default=0.05,
        help="share of customers whose features change by the next night",
    )  # fmt: skip
    args = parser.parse_args()
    settings = get_settings()
    server = database.resolve_database_url(settings.database_url, settings.embedded_pgdata)
    suffix = uuid.uuid4().hex[:8]
    warehouse_db, mlflow_db = f"retention_bench_{suffix}", f"retention_bench_mlflow_{suffix}"
    database.ensure_database(server, warehouse_db)
    url = database.with_database(server, warehouse_db)
    try:
        with tempfile.TemporaryDirectory() as folder:
            days = _prepare(url, server, mlflow_db, Path(folder), args)
            models = _models(url, server, mlflow_db, Path(folder))
            _measure(url, days, models, Path(folder), args)
    finally:
        database.drop_database(server, warehouse_db)
        database.drop_database(server, mlflow_db)


def _prepare(
    url: str, server: str, mlflow_db: str, folder: Path, args: argparse.Namespace
) -> dict[int, str]:
    """Land and build the training snapshot and one snapshot per size; train the champion."""
    import dagster as dg  # noqa: PLC0415

    from retention_pipelines.assets.features import retention_dbt_models  # noqa: PLC0415
    from retention_pipelines.assets.ingestion import raw_customer_snapshot  # noqa: PLC0415
    from retention_pipelines.definitions import load_definitions  # noqa: PLC0415

    landing = folder / "landing"
    days = {n: f"2026-04-{index + 1:02d}" for index, n in enumerate(sorted(args.customers))}
    write_landing_csv(landing / f"customers_{TRAIN_DAY}.csv", args.train_customers, seed=1)
    for index, (n, day) in enumerate(days.items()):
        write_landing_csv(landing / f"customers_{day}.csv", n, seed=100 + index, labelled=False)
    resources = _resources(url, server, mlflow_db, folder)
    instance = dg.DagsterInstance.ephemeral()
    for day in [TRAIN_DAY, *days.values()]:
        started = time.perf_counter()
        dg.materialize(
            [raw_customer_snapshot, retention_dbt_models],
            partition_key=day,
            resources=resources,
            instance=instance,
        )
        print(f"built snapshot {day} in {time.perf_counter() - started:.1f} s", flush=True)
    config = {"config": {**SMALL_BUDGET, "baseline_tolerance": 1.0}}
    run = (
        load_definitions()
        .resolve_job_def("retrain_job")
        .execute_in_process(
            resources=resources,
            instance=instance,
            run_config={"ops": {"training_set": config, "churn_model_candidates": config}},
        )
    )
    training: TrainingResult = run.output_for_node("churn_model_candidates")
    split: TrainingSplit = run.output_for_node("training_set")
    (folder / "training.pkl").write_bytes(pickle.dumps((training, split)))
    return days


def _resources(url: str, server: str, mlflow_db: str, folder: Path) -> dict[str, object]:
    from dagster_dbt import DbtCliResource  # noqa: PLC0415

    from retention_pipelines.assets.features import retention_dbt_project  # noqa: PLC0415
    from retention_pipelines.resources import (  # noqa: PLC0415
        LandingResource,
        MlflowResource,
        WarehouseResource,
        dbt_executable,
    )

    warehouse = WarehouseResource(database_url=url)
    return {
        "warehouse": warehouse,
        "landing": LandingResource(landing_dir=str(folder / "landing")),
        "dbt": DbtCliResource(project_dir=retention_dbt_project, dbt_executable=dbt_executable()),
        "mlflow_registry": MlflowResource(
            warehouse=warehouse,
            tracking_uri=registry.mlflow_tracking_uri(server, mlflow_db),
            artifact_root=str(folder / "mlartifacts"),
        ),
    }


def _models(url: str, server: str, mlflow_db: str, folder: Path) -> dict[str, Path]:
    """The champion as registered, and the other family fitted with its tuned parameters."""
    from mlflow import MlflowClient  # noqa: PLC0415

    client = MlflowClient(registry.mlflow_tracking_uri(server, mlflow_db))
    champion, version = registry.load_champion(client)
    training, split = pickle.loads((folder / "training.pkl").read_bytes())  # noqa: S301
    # The champion's logistic part, refitted as training fitted it (same data, same seed).
    baseline = fit_baseline(champion.encoder, split, seed=get_settings().training_seed)
    other_kind = next(kind for kind in MODEL_KINDS if kind != champion.kind)
    booster, _, _ = refit_candidate(
        other_kind,
        training.candidates[other_kind].tuned.params,
        champion.encoder,
        split,
        get_settings().training_seed,
    )
    other, _, _ = blend_and_calibrate(
        other_kind, booster, baseline, champion.encoder, split, get_settings().training_seed
    )
    reference, _, _ = blend_and_calibrate(
        "xgboost",
        _reference_xgboost(champion, split),
        baseline,
        champion.encoder,
        split,
        get_settings().training_seed,
    )
    paths = {}
    for label, model in (
        (f"{champion.kind} (champion v{version})", champion),
        (other_kind, other),
        ("xgboost at the reference size", reference),
    ):
        path = folder / f"model-{len(paths)}.pkl"
        path.write_bytes(pickle.dumps(model))
        paths[label] = path
        print(f"{label}: {_size(model)}", flush=True)
    return paths


def _reference_xgboost(champion: ChurnModel, split: TrainingSplit) -> xgb.Booster:
    """XGBoost at the size the reference figures name, 300 trees of depth 5, whatever the
    tuning chose: the size at which exact TreeSHAP is the naive pipeline's bottleneck."""
    train = xgb.DMatrix(
        champion.encoder.tree_input(split.train), labels_of(split.train), enable_categorical=True
    )
    params = {"objective": "binary:logistic", "max_depth": 5, "eta": 0.05, "tree_method": "hist"}
    params |= {"max_cat_to_onehot": 8, "nthread": THREADS, "seed": get_settings().training_seed}
    booster = xgb.train(params, train, num_boost_round=REFERENCE_TREES)
    booster.best_iteration = REFERENCE_TREES - 1
    return booster


def _size(model: ChurnModel) -> str:
    if model.kind == "xgboost":
        trees = model.booster.best_iteration + 1
        depth = json.loads(model.booster.save_config())["learner"]["gradient_booster"]
        depth = depth["tree_train_param"]["max_depth"]
        return f"{trees} trees, max depth {depth}, tree weight {model.tree_weight:.2f}"
    params = model.booster.get_all_params()
    return (
        f"{model.booster.tree_count_} trees, depth {params['depth']}, "
        f"tree weight {model.tree_weight:.2f}"
    )


def _measure(
    url: str, days: dict[int, str], models: dict[str, Path], folder: Path, args: argparse.Namespace
) -> None:
    smallest, largest = min(days), max(days)
    changed = _next_night(url, days[largest], args.changed_share)
    rows = []
    for label, path in models.items():
        for n, day in days.items():
            result = _child("score", url, day, path, args.chunk_rows)
            rows.append((label, n, result))
            _print_score(label, n, result)
        night = _child("score_next_night", url, NEXT_NIGHT, path, args.chunk_rows)
        print(
            f"  the next night ({largest:,} customers, {changed:,} of them changed): "
            f"{night['seconds']:.1f} s ({night['rows'] / night['seconds']:,.0f} rows/s), "
            f"{night['reused']:,} scores carried over, peak RSS {night['rss_mib']:,.0f} MiB",
            flush=True,
        )
        if args.baseline_rows:
            naive = _child("naive", url, days[smallest], path, args.baseline_rows)
            _print_naive(
                label, naive, next(r for lbl, n, r in rows if lbl == label and n == smallest)
            )
        agreement = _child("agreement", url, days[smallest], path, args.agreement_rows)
        print(
            f"  top reason as scored vs exact TreeSHAP on {args.agreement_rows:,} rows: the same "
            f"for {agreement['high']:.1%} of {agreement['high_rows']:,} high-risk customers "
            f"({agreement['high_exact']:.1%} of them explained exactly) and "
            f"{agreement['other']:.1%} of {agreement['other_rows']:,} others "
            f"(predict and explain: exact for all {agreement['exact_rows_per_s']:,.0f} rows/s, "
            f"as scored {agreement['scoring_rows_per_s']:,.0f} rows/s)",
            flush=True,
        )


def _next_night(url: str, day: str, share: float) -> int:
    """The night after ``day`` in features: the same customers, ``share`` of them with a new
    monthly charge (what dbt would build from the next landing file); returns how many."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as conn:
        conn.execute(
            "create temp table next_night as select * from features.customer_features"
            " where snapshot_date = %s",
            (day,),
        )
        conn.execute("update next_night set snapshot_date = %s", (NEXT_NIGHT,))
        changed = conn.execute(
            "update next_night set monthly_charges = monthly_charges + 5"
            " where abs(hashtext(customer_id)) %% 10000 < %s",
            (round(share * 10_000),),
        ).rowcount
        conn.execute("insert into features.customer_features select * from next_night")
    return changed


def _child(mode: str, url: str, day: str, model: Path, rows: int) -> dict[str, float]:
    completed = subprocess.run(  # this very script
        [sys.executable, __file__, "--child", mode, url, day, str(model), str(rows)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _print_score(label: str, n: int, result: dict[str, float]) -> None:
    stages = ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in result.items() if name.startswith("s_")
    ).replace("s_", "")
    print(
        f"{label}: {n:,} customers scored with reasons in {result['seconds']:.1f} s "
        f"({result['rows'] / result['seconds']:,.0f} rows/s; {stages} s), "
        f"peak RSS {result['rss_mib']:,.0f} MiB",
        flush=True,
    )


def _print_naive(label: str, naive: dict[str, float], ours: dict[str, float]) -> None:
    stages = ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in naive.items() if name.startswith("s_")
    ).replace("s_", "")
    naive_rate = naive["rows"] / naive["seconds"]
    ours_rate = ours["rows"] / ours["seconds"]
    print(
        f"  naive pipeline on {naive['rows']:,.0f} rows: {naive['seconds']:.1f} s "
        f"({naive_rate:,.0f} rows/s; {stages} s), peak RSS {naive['rss_mib']:,.0f} MiB; "
        f"the scoring core is {ours_rate / naive_rate:.1f}x faster",
        flush=True,
    )


# --- Child processes: one measurement each, printed as one JSON line. ---


def _child_main(mode: str, url: str, day: str, model_path: str, rows: int) -> None:
    model: ChurnModel = pickle.loads(Path(model_path).read_bytes())  # noqa: S301
    snapshot = date.fromisoformat(day)
    measure = {
        "score": _score_core,
        "score_next_night": _score_next_night,
        "naive": _score_naive,
        "agreement": _agreement,
    }[mode]
    result = measure(url, snapshot, model, rows)
    result["rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def _peak_rss_mib() -> float:
    """This process's own peak RSS. ``getrusage`` would also count the parent's peak, which a
    child inherits across fork and exec on Linux; ``VmHWM`` belongs to this address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _score_next_night(url: str, day: date, model: ChurnModel, chunk_rows: int) -> dict[str, float]:
    return _score_core(url, day, model, chunk_rows, reuse=True)


def _score_core(
    url: str, day: date, model: ChurnModel, chunk_rows: int, *, reuse: bool = False
) -> dict[str, float]:
    settings = get_settings()
    times = scoring.StageTimes()
    started = time.perf_counter()
    outcome = scoring.score_partition(
        url,
        day,
        scoring.ModelRef(model, registry.MODEL_NAME, f"bench-{model.kind}"),
        bands=scoring.RiskBands(settings.risk_high_threshold, settings.risk_medium_threshold),
        chunk_rows=chunk_rows,
        scored_at=datetime.now(UTC),
        reuse_unchanged=reuse,
        exact_gap=settings.scoring_exact_gap,
        times=times,
    )
    seconds = time.perf_counter() - started
    return {"rows": outcome.rows, "reused": outcome.reused, "seconds": seconds} | {
        f"s_{k}": v for k, v in times.seconds.items()
    }


def _score_naive(url: str, day: date, model: ChurnModel, rows: int) -> dict[str, float]:
    import shap  # noqa: PLC0415
    import sqlalchemy  # noqa: PLC0415
    import xgboost as xgb  # noqa: PLC0415

    engine = sqlalchemy.create_engine(database.sqlalchemy_url(url))
    started = time.perf_counter()
    frame = pd.read_sql(
        sqlalchemy.text(
            "select * from features.customer_features where snapshot_date = :day"
            " order by customer_id limit :rows"
        ),
        engine,
        params={"day": day, "rows": rows},
    )
    read = time.perf_counter()
    features = feature_frame(frame)
    probabilities = model.predict_proba(features)
    predicted = time.perf_counter()
    explainer = shap.TreeExplainer(model.booster)
    if model.kind == "xgboost":
        matrix = xgb.DMatrix(model.encoder.tree_input(features), enable_categorical=True)
        values = np.asarray(explainer.shap_values(matrix))
    else:
        tree = model.encoder.tree_input(features)
        values = np.asarray(explainer.shap_values(model.encoder.catboost_from_tree(tree)))
    top = np.argsort(-values, axis=1)[:, :3]
    explained = time.perf_counter()
    columns = np.array(features.columns)
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "churn_probability": probabilities,
            **{f"top_reason_{k + 1}": columns[top[:, k]] for k in range(3)},
        }
    )
    out.to_sql("naive_scores", engine, schema="ml", if_exists="replace", index=False)
    written = time.perf_counter()
    return {
        "rows": len(frame),
        "seconds": written - started,
        "s_read": read - started,
        "s_predict": predicted - read,
        "s_explain": explained - predicted,
        "s_write": written - explained,
    }


def _agreement(url: str, day: date, model: ChurnModel, rows: int) -> dict[str, float]:
    """Top reason as scoring names it against exact TreeSHAP of every row, on a sample."""
    import psycopg  # noqa: PLC0415

    from retention_pipelines.core.warehouse import features  # noqa: PLC0415

    with psycopg.connect(url) as conn:
        frame = feature_frame(
            next(features.read_features(conn, features.on_date(day), chunk_rows=rows))
        )
    settings = get_settings()
    started = time.perf_counter()
    exact = model.score(frame)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    scored = model.score(
        frame, exact_from=settings.risk_high_threshold, exact_gap=settings.scoring_exact_gap
    )
    scored_s = time.perf_counter() - started
    same = exact.contributions.argmax(axis=1) == scored.contributions.argmax(axis=1)
    high = scored.probabilities >= settings.risk_high_threshold
    return {
        "high": float(same[high].mean()) if high.any() else float("nan"),
        "high_rows": int(high.sum()),
        "high_exact": float(scored.exact[high].mean()) if high.any() else float("nan"),
        "other": float(same[~high].mean()) if (~high).any() else float("nan"),
        "other_rows": int((~high).sum()),
        "exact_rows_per_s": len(frame) / exact_s,
        "scoring_rows_per_s": len(frame) / scored_s,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        main()
