"""Customer: one customer's latest score, why, their profile and how their risk moved."""

import streamlit as st

from retention_pipelines.dashboard import charts, data
from retention_pipelines.dashboard.presentation import (
    NO_SCORES,
    history_with_version_changes,
    percent,
    profile_rows,
)

st.title("Customer")
if data.latest_scores() is None:
    st.info(NO_SCORES)
    st.stop()

customer_id = st.text_input(
    "Customer id",
    value=st.query_params.get("customer_id", ""),
    key="customer_id",
    placeholder="e.g. 7590-VHVEG",
).strip()
if not customer_id:
    st.caption("Type a customer id (from the call list) to see their risk and its reasons.")
    st.stop()

risk = data.customer_risk(customer_id)
if risk is None:
    st.warning(f"No scored customer has the id {customer_id!r}.")
    st.stop()

probability, band, rank, scored = st.columns(4)
probability.metric("Churn probability", percent(risk.churn_probability))
band.metric("Risk band", risk.risk_band)
rank.metric("Place in the call list", f"{risk.risk_rank:,}")
scored.metric("Scored on", str(risk.snapshot_date), help=f"Model version {risk.model_version}")

reasons, profile = st.columns([3, 2])
with reasons:
    st.subheader("Why")
    st.caption("Bars to the right push the risk up, bars to the left pull it down.")
    st.altair_chart(charts.reasons_chart(risk.reasons), key="reasons_chart")
with profile:
    st.subheader("Profile")
    st.caption(f"As of {risk.snapshot_date}.")
    st.dataframe(profile_rows(risk.profile), hide_index=True, width="stretch")

st.subheader("Score history")
history = data.customer_history(customer_id)
st.altair_chart(charts.score_history_chart(history_with_version_changes(history)))
st.dataframe(
    history,
    hide_index=True,
    width="stretch",
    column_config={
        "snapshot_date": st.column_config.DateColumn("Scored date"),
        "churn_probability": st.column_config.NumberColumn("Churn probability", format="percent"),
        "risk_band": st.column_config.TextColumn("Band"),
        "model_version": st.column_config.TextColumn("Model version"),
        "top_reason_1": st.column_config.TextColumn("First reason"),
    },
)
