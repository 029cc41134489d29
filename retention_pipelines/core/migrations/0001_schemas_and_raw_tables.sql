-- The warehouse schemas (docs/architecture.md) and the raw tables that ingestion writes.
create schema if not exists raw;
create schema if not exists staging;
create schema if not exists features;
create schema if not exists ml;
create schema if not exists monitoring;
create schema if not exists analytics;

-- One row per customer per snapshot, as received (normalized and validated, not yet renamed
-- or cast to booleans: that is dbt staging's job).
create table if not exists raw.customer_snapshots (
    snapshot_date      date          not null,
    customer_id        text          not null,
    gender             text          not null,
    senior_citizen     smallint      not null check (senior_citizen in (0, 1)),
    partner            text          not null,
    dependents         text          not null,
    tenure             integer       not null check (tenure between 0 and 120),
    phone_service      text          not null,
    multiple_lines     text          not null,
    internet_service   text          not null,
    online_security    text          not null,
    online_backup      text          not null,
    device_protection  text          not null,
    tech_support       text          not null,
    streaming_tv       text          not null,
    streaming_movies   text          not null,
    contract           text          not null,
    paperless_billing  text          not null,
    payment_method     text          not null,
    monthly_charges    numeric(10,2) not null check (monthly_charges >= 0),
    total_charges      numeric(12,2) not null check (total_charges >= 0),
    churn              text              null check (churn in ('Yes', 'No')),
    source             text          not null,
    source_row_number  integer       not null,
    ingested_at        timestamptz   not null default now(),
    primary key (snapshot_date, customer_id)
);

-- Quarantine: every row that failed validation, exactly as read, with every reason.
create table if not exists raw.customer_rejects (
    snapshot_date  date        not null,
    source         text        not null,
    row_number     integer     not null,
    customer_id    text            null,
    record         jsonb       not null,
    reasons        text[]      not null,
    rejected_at    timestamptz not null default now(),
    primary key (snapshot_date, source, row_number)
);

-- One row per ingested partition: what was read and where each row went.
create table if not exists raw.ingestion_runs (
    snapshot_date          date        not null primary key,
    source                 text        not null,
    file_sha256            text        not null,
    file_bytes             bigint      not null,
    rows_read              integer     not null,
    rows_valid             integer     not null,
    rows_rejected          integer     not null,
    duplicates_collapsed   integer     not null,
    ingested_at            timestamptz not null default now(),
    check (rows_read = rows_valid + rows_rejected + duplicates_collapsed)
);
