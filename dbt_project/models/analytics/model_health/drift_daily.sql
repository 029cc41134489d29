{#-
    Whether each day's customers still look like the ones the champion was trained on: the
    drift report's verdict, with the drifted columns as one readable list.
-#}

with

drift_reports as (

    select * from {{ source('monitoring', 'drift_reports') }}

),

drifted_columns as (

    select
        drift_reports.snapshot_date,
        string_agg(drifted.value ->> 'column', ', ' order by drifted.value ->> 'column')
            as drifted_columns
    from drift_reports
    cross join lateral jsonb_array_elements(drift_reports.drifted_columns) as drifted (value)
    group by drift_reports.snapshot_date

),

joined as (

    select

        ---------- ids
        drift_reports.snapshot_date,
        drift_reports.reference_model_version,

        ---------- verdict
        drift_reports.dataset_drift,
        drift_reports.drift_share,
        drift_reports.drift_share_threshold,
        jsonb_array_length(drift_reports.drifted_columns) as drifted_column_count,
        coalesce(drifted_columns.drifted_columns, '') as drifted_columns,

        ---------- provenance
        drift_reports.current_rows,
        drift_reports.created_at

    from drift_reports
    left join drifted_columns
        on drift_reports.snapshot_date = drifted_columns.snapshot_date

)

select * from joined
order by snapshot_date desc
