{#-
    The churn model's versions as the registry knows them: which is champion and challenger,
    when and why each was promoted, and how it did on its training run's test data. The
    reader role cannot reach MLflow; this is its view of it.
-#}

with

model_versions as (

    select * from {{ source('ml', 'model_versions') }}

),

renamed as (

    select

        ---------- ids
        model_name,
        model_version,
        registered_at,

        ---------- aliases
        is_champion,
        is_challenger,

        ---------- promotion
        promoted_at,
        promoted_by,
        promotion_reason,
        gate_decision,

        ---------- training
        training_snapshots,
        training_rows,
        test_roc_auc,
        test_brier,
        test_top_decile_lift,
        baseline_test_roc_auc,

        ---------- provenance
        synced_at

    from model_versions

)

select * from renamed
order by model_name, registered_at desc
