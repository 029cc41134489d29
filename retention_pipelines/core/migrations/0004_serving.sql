-- The live prediction API: the keys its clients present, and the log of every answer it gave.
create schema if not exists ops;

-- API keys. Only a SHA-256 of each key is kept (keys are 256-bit random, so a plain hash
-- cannot be reversed by search); the raw key is shown once, when it is created.
create table if not exists ops.api_keys (
    key_id        bigint generated always as identity primary key,
    name          text        not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    scopes        text[]      not null check (scopes <@ array['predict', 'read'] and cardinality(scopes) > 0),
    key_prefix    text        not null,
    key_hash      text        not null unique,
    created_at    timestamptz not null default now(),
    created_by    text        not null,
    revoked_at    timestamptz     null,
    revoked_by    text            null
);
-- One live key per name: a name is what people revoke by.
create unique index if not exists api_keys_live_name on ops.api_keys (name) where revoked_at is null;

comment on table ops.api_keys is
    'Keys of the prediction API (retention api-key create/list/revoke): hashed, scoped, revocable.';

-- Every answer of the API, written in batches off the request path. A shadow row is the
-- challenger's answer to a request the champion served: logged, never returned.
create table if not exists ml.prediction_log (
    request_id         uuid             not null,
    row_index          integer          not null,   -- position in a batch; 0 for one customer
    predicted_at       timestamptz      not null,
    customer_id        text             not null,
    variant            text             not null check (variant in ('champion', 'challenger')),
    served             boolean          not null,   -- false: a shadow answer, not returned
    model_name         text             not null,
    model_version      text             not null,
    churn_probability  double precision not null check (churn_probability between 0 and 1),
    risk_band          text             not null check (risk_band in ('low', 'medium', 'high')),
    latency_ms         double precision not null,
    api_key_id         bigint               null
);
create index if not exists prediction_log_predicted_at on ml.prediction_log (predicted_at);
create index if not exists prediction_log_customer on ml.prediction_log (customer_id, predicted_at);

comment on table ml.prediction_log is
    'Every answer of the prediction API: who asked (api_key_id), which model and variant answered, '
    'what it said and how long it took.';

-- A customer's scores over time (analytics.customer_score_history; the API's latest-score lookup).
create index if not exists churn_risk_scores_customer
    on ml.churn_risk_scores (customer_id, snapshot_date desc);
