{#-
    How each day's scored customers split into risk bands: the trend a business user follows,
    and a quick check that a new model did not move everyone into one band.
-#}

with

scores as (

    select * from {{ source('ml', 'churn_risk_scores') }}

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
