{#-
    The feature contract the churn model reads: one row per customer per snapshot_date.

    With the var `snapshot_date` (the nightly Dagster run passes its partition,
    --vars '{"snapshot_date": "2026-11-26"}') only that day is selected, and delete+insert on
    snapshot_date replaces exactly that day in one transaction; other days stay untouched.
    Without the var every snapshot is selected: the first build, or a rebuild of every date raw
    still holds. Raw snapshots are kept for fewer days than features (RETENTION_KEEP_RAW_DAYS,
    _FEATURES_DAYS), so `--full-refresh` is ignored here: dropping the table would lose the
    older features for good (drop it by hand to rebuild it from what raw holds).

    The index on the key is made by a post-hook, on a new table and on one built before it
    existed alike: each night's delete of its date, scoring's and the drift report's read of
    one date, and the retention purge find that date's rows through it instead of reading
    every date the table keeps.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='snapshot_date',
        on_schema_change='fail',
        full_refresh=false,
        post_hook=[
            "create unique index if not exists customer_features_snapshot_customer
                on {{ this }} (snapshot_date, customer_id)",
        ],
    )
}}

{%- set snapshot_date = var('snapshot_date', none) %}

with

customers as (

    select * from {{ ref('stg_customers') }}
    {%- if snapshot_date is not none %}
    where snapshot_date = cast('{{ snapshot_date }}' as date)
    {%- endif %}

),

spend as (

    select
        *,
        -- A new customer has no billing history yet: their monthly charge is their average.
        cast(
            case
                when tenure_months = 0 then monthly_charges
                else total_charges / tenure_months
            end
            as numeric(12, 2)
        ) as avg_monthly_spend

    from customers

),

features as (

    select

        ---------- keys
        snapshot_date,
        customer_id,

        ---------- profile and categorical inputs
        gender,
        is_senior_citizen,
        has_partner,
        has_dependents,
        has_phone_service,
        multiple_lines,
        internet_service,
        online_security,
        online_backup,
        device_protection,
        tech_support,
        streaming_tv,
        streaming_movies,
        contract,
        is_paperless_billing,
        payment_method,

        ---------- numerics
        tenure_months,
        monthly_charges,
        total_charges,

        ---------- engineered
        case
            when tenure_months <= 6 then '0-6'
            when tenure_months <= 12 then '7-12'
            when tenure_months <= 24 then '13-24'
            when tenure_months <= 48 then '25-48'
            else '49+'
        end as tenure_band,
        avg_monthly_spend,
        cast(monthly_charges - avg_monthly_spend as numeric(12, 2)) as charge_increase,
        (case when online_security = 'Yes' then 1 else 0 end)
        + (case when online_backup = 'Yes' then 1 else 0 end)
        + (case when device_protection = 'Yes' then 1 else 0 end)
        + (case when tech_support = 'Yes' then 1 else 0 end)
        + (case when streaming_tv = 'Yes' then 1 else 0 end)
        + (case when streaming_movies = 'Yes' then 1 else 0 end) as add_on_service_count,
        internet_service <> 'No' as has_internet,
        internet_service = 'Fiber optic' as has_fiber_optic,
        internet_service = 'DSL' as has_dsl,
        case contract
            when 'Month-to-month' then 1
            when 'One year' then 12
            when 'Two year' then 24
        end as contract_length_months,
        payment_method like '%(automatic)' as is_automatic_payment,
        streaming_tv = 'Yes' and streaming_movies = 'Yes' as streaming_bundle,
        online_security = 'Yes'
        and online_backup = 'Yes'
        and device_protection = 'Yes'
        and tech_support = 'Yes' as protection_bundle,

        ---------- label (null = not known yet)
        churned

    from spend

)

select * from features
