{#-
    What a retention team works from: every scored customer once, with their latest score, its
    three strongest reasons and the profile of the same snapshot, in the order to act on.
    A table, rebuilt by every partition run of the analytics step (after the night's scores),
    so the dashboard pages, filters and counts a million customers without recomputing the
    latest score of each on every click.
-#}

{{
    config(
        materialized='table',
        indexes=[
            {'columns': ['risk_rank'], 'unique': True},
            {'columns': ['customer_id'], 'unique': True},
            {'columns': ['snapshot_date']},
        ],
    )
}}

with

scores as (

    select * from {{ source('ml', 'churn_risk_scores') }}

),

latest_scores as (

    -- A customer missing from later snapshots keeps their last score (and its snapshot_date).
    select distinct on (customer_id) *
    from scores
    order by customer_id, snapshot_date desc

),

customer_features as (

    select * from {{ ref('customer_features') }}

),

joined as (

    select

        ---------- ids
        latest_scores.customer_id,
        latest_scores.snapshot_date,

        ---------- score
        latest_scores.churn_probability,
        latest_scores.risk_band,
        latest_scores.top_reason_1,
        latest_scores.top_reason_1_contribution,
        latest_scores.top_reason_2,
        latest_scores.top_reason_2_contribution,
        latest_scores.top_reason_3,
        latest_scores.top_reason_3_contribution,

        ---------- profile, as of the scored snapshot
        customer_features.contract,
        customer_features.tenure_months,
        customer_features.monthly_charges,
        customer_features.payment_method,
        customer_features.internet_service,

        ---------- provenance
        latest_scores.model_name,
        latest_scores.model_version,
        latest_scores.scored_at

    from latest_scores
    -- A left join: a score stays visible even if its feature row has been deleted since.
    left join customer_features
        on latest_scores.snapshot_date = customer_features.snapshot_date
        and latest_scores.customer_id = customer_features.customer_id

),

ranked as (

    select
        row_number() over (
            order by
                case risk_band when 'high' then 1 when 'medium' then 2 else 3 end,
                churn_probability desc,
                customer_id
        ) as risk_rank,
        *
    from joined

)

select * from ranked
order by risk_rank
