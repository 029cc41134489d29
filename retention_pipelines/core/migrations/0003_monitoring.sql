-- Monitoring: what the drift report, the data quality suite and the realised performance
-- of past scores found. Each table is replaced per its key in one transaction by its asset;
-- the retraining sensor reads them.

-- One row per snapshot date: the partition's features against the champion's training data.
create table if not exists monitoring.drift_reports (
    snapshot_date              date             primary key,
    reference_model_version    text             not null,
    reference_snapshots        text             not null,
    reference_rows             integer          not null,
    current_rows               integer          not null,
    dataset_drift              boolean          not null,
    drift_share                double precision not null check (drift_share between 0 and 1),
    drift_share_threshold      double precision not null,
    drifted_columns            jsonb            not null,  -- [{column, method, score, threshold}]
    column_results             jsonb            not null,  -- every column tested, drifted or not
    findings                   jsonb            not null,  -- guards: empty, all-null, constant, missing-share jumps
    prediction_drift           jsonb,                      -- churn probabilities against the reference's
    report_path                text             not null,
    created_at                 timestamptz      not null default now()
);

comment on table monitoring.drift_reports is
    'Per snapshot date: Evidently data drift of customer_features against the training data of '
    'the champion of the day (reference_model_version), the guards'' findings and prediction drift.';

-- One row per snapshot date: the Great Expectations suite on that date's customer_features.
create table if not exists monitoring.data_quality (
    snapshot_date              date             primary key,
    success                    boolean          not null,
    expectations               integer          not null,
    failed                     integer          not null,
    results                    jsonb            not null,  -- [{expectation, column, success, observed}]
    docs_path                  text,
    checked_at                 timestamptz      not null default now()
);

comment on table monitoring.data_quality is
    'Per snapshot date: the Great Expectations suite on features.customer_features.';

-- Realised performance: scores of earlier dates joined to the churn labels a later snapshot
-- brought. Replaced per labelled snapshot (evaluated_on).
create table if not exists monitoring.model_performance (
    evaluated_on               date             not null,  -- the snapshot whose labels were used
    score_date                 date             not null,
    model_version              text             not null,
    customers                  integer          not null,
    churned                    integer          not null,
    roc_auc                    double precision,           -- null when one class only
    top_decile_lift            double precision,
    brier                      double precision not null,
    mean_probability           double precision not null,
    churn_rate                 double precision not null,
    calibration                jsonb            not null,  -- [{bin, mean_probability, churn_rate, customers}]
    evaluated_at               timestamptz      not null default now(),
    primary key (evaluated_on, score_date, model_version)
);

comment on table monitoring.model_performance is
    'Realised ROC AUC, top-decile lift and calibration of past scores, per score date and model '
    'version, once a later snapshot brought the customers'' churn labels.';
