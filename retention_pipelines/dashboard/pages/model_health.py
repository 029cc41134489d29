"""Model health: the champion, how well its scores came true, calibration, drift and data
quality, with a red banner when any of them needs a person."""

import streamlit as st

from retention_pipelines.dashboard import charts, data
from retention_pipelines.dashboard.presentation import (
    figure,
    first_row,
    health_alerts,
    percent,
    promotion_sentence,
)
from retention_pipelines.dashboard.queries import calibration_frame

st.title("Model health")
drift = data.drift_by_date()
quality = data.quality_by_date()
performance = data.realised_performance()
latest_performance = data.latest_performance()

alerts = health_alerts(
    drift=first_row(drift),
    quality=first_row(quality),
    performance=latest_performance,
    auc_drop=data.performance_auc_drop(),
)
if alerts:
    st.error("\n\n".join(alerts), icon=":material/error:")

st.subheader("Champion")
champion = data.champion()
if champion is None:
    st.info("No champion yet: run `retention train`.")
else:
    version, auc, brier, lift = st.columns(4)
    version.metric("Champion version", champion["model_version"])
    auc.metric("Test ROC AUC", figure(champion["test_roc_auc"]))
    brier.metric("Test Brier", figure(champion["test_brier"]))
    lift.metric("Top-decile lift", figure(champion["test_top_decile_lift"], 2))
    st.markdown(promotion_sentence(champion))

realised, calibration = st.columns(2)
with realised:
    st.subheader("Realised ROC AUC")
    if performance.empty:
        st.info("No realised performance yet: it comes once a later snapshot brings labels.")
    else:
        st.caption("Solid: what the scores of each date achieved. Dashed: the figure at training.")
        st.altair_chart(charts.realised_auc_chart(performance))
with calibration:
    st.subheader("Calibration")
    bins = calibration_frame(latest_performance)
    if bins.empty:
        st.info("No calibration yet: it comes with the first realised performance.")
    else:
        st.caption(
            f"Scores of {latest_performance['score_date']} against the labels of "
            f"{latest_performance['evaluated_on']}; the dashed line is perfect calibration."
        )
        st.altair_chart(charts.calibration_chart(bins))

st.subheader("Drift")
if drift.empty:
    st.info("No drift report yet: the monitoring job writes one per scored date.")
else:
    st.altair_chart(charts.drift_share_chart(drift))
    day = st.date_input("Drift report of", value=drift["snapshot_date"].iloc[0], key="drift_day")
    report = data.drift_on(day)
    if report is None:
        st.info(f"No drift report for {day}: the monitoring job has not run on that date.")
    else:
        st.markdown(
            f"**{day}**: {'dataset drift' if report['dataset_drift'] else 'no dataset drift'}; "
            f"{percent(report['drift_share'])} of the columns drifted (threshold "
            f"{percent(report['drift_share_threshold'])}) against the training data of "
            f"version {report['reference_model_version']}. Drifted: "
            f"{report['drifted_columns'] or 'none'}."
        )
    st.dataframe(
        drift.assign(dataset_drift=drift["dataset_drift"].map({True: "drift", False: "none"})),
        hide_index=True,
        width="stretch",
        column_config={
            "snapshot_date": st.column_config.DateColumn("Date"),
            "dataset_drift": st.column_config.TextColumn("Dataset drift"),
            "drift_share": st.column_config.NumberColumn("Drifted share", format="percent"),
            "drift_share_threshold": st.column_config.NumberColumn("Threshold", format="percent"),
            "drifted_column_count": st.column_config.NumberColumn("Drifted columns"),
            "drifted_columns": st.column_config.TextColumn("Which"),
            "reference_model_version": st.column_config.TextColumn("Reference version"),
            "current_rows": st.column_config.NumberColumn("Rows"),
        },
    )

st.subheader("Data quality")
if quality.empty:
    st.info("No data quality check yet: the suite runs on every snapshot's features.")
else:
    st.dataframe(
        quality.assign(success=quality["success"].map({True: "pass", False: "FAIL"})),
        hide_index=True,
        width="stretch",
        column_config={
            "snapshot_date": st.column_config.DateColumn("Date"),
            "success": st.column_config.TextColumn("Verdict"),
            "expectations": st.column_config.NumberColumn("Expectations"),
            "failed": st.column_config.NumberColumn("Failed"),
            "failed_expectations": st.column_config.TextColumn("Which failed"),
            "checked_at": st.column_config.DatetimeColumn("Checked at"),
        },
    )
