{#-
    How the scores of each day turned out once churn labels arrived, per model version, next to
    what the version promised at training: the figure that says whether the model can still
    be trusted.
-#}

with

model_performance as (

    select * from {{ source('monitoring', 'model_performance') }}

),

model_versions as (

    -- The scores, and so their realised performance, are the registered churn model's.
    select * from {{ source('ml', 'model_versions') }}
    where model_name = 'churn-model'

),

latest_judgement as (

    -- A score date is judged again by every labelled snapshot within the horizon after it;
    -- the latest judgement is the one shown.
    select distinct on (score_date, model_version) *
    from model_performance
    order by score_date, model_version, evaluated_on desc

),

joined as (

    select

        ---------- ids
        latest_judgement.score_date,
        latest_judgement.evaluated_on,
        latest_judgement.model_version,

        ---------- what was judged
        latest_judgement.customers,
        latest_judgement.churned,

        ---------- realised figures
        latest_judgement.roc_auc,
        latest_judgement.brier,
        latest_judgement.top_decile_lift,
        latest_judgement.mean_probability,
        latest_judgement.churn_rate,
        latest_judgement.calibration,

        ---------- against training
        model_versions.test_roc_auc as training_roc_auc,
        model_versions.test_roc_auc - latest_judgement.roc_auc as roc_auc_drop

    from latest_judgement
    left join model_versions
        on latest_judgement.model_version = model_versions.model_version

)

select * from joined
order by score_date desc, model_version
