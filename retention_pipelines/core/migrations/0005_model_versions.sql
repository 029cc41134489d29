-- The model registry's facts, in the warehouse: business users' dashboard reads them through
-- the dbt view analytics.model_versions, and neither the reader role nor dbt can reach MLflow.
-- Replaced whole (per model, in one transaction) from the registry by
-- core/warehouse/model_versions.py after every promotion gate, promotion and rollback.

-- One row per registered version of a model.
create table if not exists ml.model_versions (
    model_name                 text             not null,
    model_version              text             not null,
    registered_at              timestamptz      not null,  -- when the version was registered
    is_champion                boolean          not null,  -- the `champion` alias points here
    is_challenger              boolean          not null,  -- the `challenger` alias points here
    promoted_at                timestamptz,                -- its latest promotion; null: never
    promoted_by                text,                       -- who promoted it (a run, a CLI user)
    promotion_reason           text,
    gate_decision              text,                       -- the promotion gate's reason
    training_snapshots         text,                       -- snapshot dates trained on, comma-separated
    training_rows              integer,
    test_roc_auc               double precision,           -- on the training run's test split
    test_brier                 double precision,
    test_top_decile_lift       double precision,
    baseline_test_roc_auc      double precision,           -- the logistic baseline's, same split
    synced_at                  timestamptz      not null,  -- when the registry was read
    primary key (model_name, model_version)
);

comment on table ml.model_versions is
    'Every registered version of a model with its aliases (champion, challenger), promotion '
    '(when, by whom, why), gate decision, training data and test metrics, copied from the '
    'MLflow registry after each change of it.';
