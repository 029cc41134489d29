{#-
    What most often puts customers at risk, per scored day: each customer's strongest reason
    (top_reason_1) counted, the trend page's "most frequent first reasons".
    An incremental table, built like risk_band_summary: every day at first, then each
    partition run replaces its own day.
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

per_reason as (

    select
        snapshot_date,
        top_reason_1 as reason,
        count(*) as customers
    from scores
    group by snapshot_date, top_reason_1

),

ranked as (

    select
        snapshot_date,
        reason,
        customers,
        cast(customers as double precision)
        / sum(customers) over (partition by snapshot_date) as share_of_customers,
        -- Ties go to the reason first in alphabetical order, so the rank is unique per day.
        row_number() over (
            partition by snapshot_date order by customers desc, reason
        ) as reason_rank
    from per_reason

)

select * from ranked
order by snapshot_date desc, reason_rank
