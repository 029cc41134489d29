"""Trends: how the scored customers split into bands, their mean risk and the commonest
first reasons, per date over a chosen range."""

import streamlit as st

from retention_pipelines.dashboard import charts, data
from retention_pipelines.dashboard.presentation import NO_SCORES, date_span, default_span

st.title("Trends")
scored = data.scored_date_range()
if scored is None:
    st.info(NO_SCORES)
    st.stop()

first, last = scored
chosen = st.date_input(
    "Dates", value=default_span(first, last), min_value=first, max_value=last, key="dates"
)
start, end = date_span(chosen, first, last)

st.subheader("Customers per band")
st.altair_chart(charts.band_stack_chart(data.band_counts_by_date(start, end)))

st.subheader("Mean churn probability")
st.altair_chart(charts.mean_probability_chart(data.mean_probability_by_date(start, end)))

st.subheader("Most frequent first reasons")
reasons = data.top_first_reasons(start, end)
if reasons.empty:
    st.info(f"No reasons were recorded between {start} and {end}.")
else:
    st.altair_chart(charts.reason_frequency_chart(reasons))
