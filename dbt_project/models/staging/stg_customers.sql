with

source as (

    select * from {{ source('raw', 'customer_snapshots') }}

),

renamed as (

    select

        ---------- ids
        customer_id,
        snapshot_date,

        ---------- profile
        gender,
        case senior_citizen when 1 then true when 0 then false end as is_senior_citizen,
        {{ yes_no_to_boolean('partner') }} as has_partner,
        {{ yes_no_to_boolean('dependents') }} as has_dependents,
        tenure as tenure_months,

        ---------- services
        {{ yes_no_to_boolean('phone_service') }} as has_phone_service,
        multiple_lines,
        internet_service,
        online_security,
        online_backup,
        device_protection,
        tech_support,
        streaming_tv,
        streaming_movies,

        ---------- account
        contract,
        {{ yes_no_to_boolean('paperless_billing') }} as is_paperless_billing,
        payment_method,

        ---------- numerics
        cast(monthly_charges as numeric(10, 2)) as monthly_charges,
        -- A new customer (tenure 0) has not been billed yet: the source leaves TotalCharges blank,
        -- which means 0, not unknown.
        cast(
            case when tenure = 0 then coalesce(total_charges, 0) else total_charges end
            as numeric(12, 2)
        ) as total_charges,

        ---------- label (null = not known yet)
        {{ yes_no_to_boolean('churn') }} as churned

    from source

)

select * from renamed
