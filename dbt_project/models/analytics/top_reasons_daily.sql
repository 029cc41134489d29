{#-
    What most often puts customers at risk, per scored day: each customer's strongest reason
    (top_reason_1) counted, the trend page's "most frequent first reasons".
-#}

with

scores as (

    select * from {{ source('ml', 'churn_risk_scores') }}

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
