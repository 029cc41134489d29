{#-
    How each day's scored customers split into risk bands: the trend a business user follows,
    and a quick check that a new model did not move everyone into one band.
    An incremental table: the first build counts every scored day, then each partition run
    replaces its own day (delete+insert on snapshot_date), so the trend pages read a few rows
    per day whatever the number of customers.
-#}

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='snapshot_date',
        on_schema_change='fail',
        indexes=[{'columns': ['snapshot_date']}],
    )
}}

{%- set snapshot_date = var('snapshot_date', none) %}

with

scores as (

    select * from {{ source('ml', 'churn_risk_scores') }}
    {%- if is_incremental() and snapshot_date is not none %}
    where snapshot_date = cast('{{ snapshot_date }}' as date)
    {%- endif %}

),

per_band as (

    select
        snapshot_date,
        risk_band,
        count(*) as customers,
        avg(churn_probability) as mean_churn_probability,
        string_agg(distinct model_version, ', ' order by model_version) as model_versions
    from scores
    group by snapshot_date, risk_band

),

with_share as (

    select
        snapshot_date,
        risk_band,
        customers,
        cast(customers as double precision)
        / sum(customers) over (partition by snapshot_date) as share_of_customers,
        mean_churn_probability,
        model_versions
    from per_band

)

select * from with_share
order by
    snapshot_date desc,
    case risk_band when 'high' then 1 when 'medium' then 2 else 3 end
