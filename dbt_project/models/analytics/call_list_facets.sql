{#-
    What the call list's filters offer on its latest scored date, in one row: the customers,
    the contracts, payment methods and internet services present, the tenure range, and every
    distinct reason text. Rebuilt with customer_risk_latest, so the dashboard fills its filter
    widgets and turns "reason contains" into exact reasons without scanning a million rows.
-#}

{{ config(materialized='table') }}

with

call_list as (

    select * from {{ ref('customer_risk_latest') }}

),

latest as (

    select *
    from call_list
    where snapshot_date = (select max(snapshot_date) from call_list)

),

reasons as (

    select distinct reason
    from latest
    cross join lateral (
        values (top_reason_1), (top_reason_2), (top_reason_3)
    ) as named (reason)
    where reason is not null

),

facets as (

    select
        snapshot_date,
        count(*) as customers,
        array_agg(distinct contract) filter (where contract is not null) as contracts,
        array_agg(distinct payment_method)
            filter (where payment_method is not null) as payment_methods,
        array_agg(distinct internet_service)
            filter (where internet_service is not null) as internet_services,
        min(tenure_months) as tenure_min,
        max(tenure_months) as tenure_max,
        (select array_agg(reason order by reason) from reasons) as reasons
    from latest
    group by snapshot_date

)

select * from facets
