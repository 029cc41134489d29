{#-
    Every nightly score of every customer, one row per customer per scored date: how a
    customer's risk moved and which model said so. The prediction API reads a customer's
    latest row from here (ml.churn_risk_scores has an index on customer_id, snapshot_date).
-#}

with

scores as (

    select * from {{ source('ml', 'churn_risk_scores') }}

),

history as (

    select

        ---------- ids
        customer_id,
        snapshot_date,

        ---------- score
        churn_probability,
        risk_band,
        top_reason_1,
        top_reason_1_contribution,
        top_reason_2,
        top_reason_2_contribution,
        top_reason_3,
        top_reason_3_contribution,

        ---------- provenance
        model_name,
        model_version,
        scored_at

    from scores

)

select * from history
