-- Nightly churn scores: one row per customer per snapshot date, replaced per date in one
-- transaction by the scoring asset. The primary key makes a duplicate impossible even if two
-- runs of one date raced past the advisory lock the writer takes.
create table if not exists ml.churn_risk_scores (
    snapshot_date              date             not null,
    customer_id                text             not null,
    churn_probability          double precision not null
        check (churn_probability between 0 and 1),
    risk_band                  text             not null
        check (risk_band in ('high', 'medium', 'low')),
    top_reason_1               text             not null,
    top_reason_1_contribution  double precision not null,
    top_reason_2               text             not null,
    top_reason_2_contribution  double precision not null,
    top_reason_3               text             not null,
    top_reason_3_contribution  double precision not null,
    model_name                 text             not null,
    model_version              text             not null,
    scored_at                  timestamptz      not null,
    primary key (snapshot_date, customer_id)
);

comment on table ml.churn_risk_scores is
    'Calibrated churn probability, risk band and the three strongest reasons per customer and '
    'snapshot date. Contributions are in log-odds; positive pushes risk up.';
