{#-
    Whether each day's features passed the Great Expectations suite, and if not, which
    expectations failed, as one readable line.
-#}

with

data_quality as (

    select * from {{ source('monitoring', 'data_quality') }}

),

failures as (

    select
        data_quality.snapshot_date,
        string_agg(
            concat(result.value ->> 'expectation', ' on ' || (result.value ->> 'column')),
            '; '
            order by result.position
        ) as failed_expectations
    from data_quality
    cross join lateral jsonb_array_elements(data_quality.results)
        with ordinality as result (value, position)
    where not (result.value ->> 'success')::boolean
    group by data_quality.snapshot_date

),

joined as (

    select

        ---------- ids
        data_quality.snapshot_date,

        ---------- verdict
        data_quality.success,
        data_quality.expectations,
        data_quality.failed,
        coalesce(failures.failed_expectations, '') as failed_expectations,

        ---------- provenance
        data_quality.checked_at

    from data_quality
    left join failures
        on data_quality.snapshot_date = failures.snapshot_date

)

select * from joined
order by snapshot_date desc
