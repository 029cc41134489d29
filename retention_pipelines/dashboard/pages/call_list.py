"""Call list: the latest scored date's customers in the order to contact them, filtered."""

import streamlit as st

from retention_pipelines.dashboard import data
from retention_pipelines.dashboard.presentation import (
    NO_SCORES,
    export_link_html,
    filter_from_widgets,
    money,
    page_count,
)
from retention_pipelines.dashboard.queries import BANDS

st.title("Call list")
latest = data.latest_scores()
if latest is None:
    st.info(NO_SCORES)
    st.stop()

st.caption(
    f"{latest.customers:,} customers scored on {latest.snapshot_date}, in the order to contact "
    "them: the high band first, then the highest churn probability."
)

with st.sidebar:
    st.header("Filters")
    bands = st.multiselect("Risk band", BANDS, placeholder="Any band", key="bands")
    probability = st.slider("Churn probability", 0.0, 1.0, (0.0, 1.0), step=0.01, key="probability")
    contracts = st.multiselect(
        "Contract", latest.contracts, placeholder="Any contract", key="contracts"
    )
    tenure_bounds = (latest.tenure_min, latest.tenure_max)
    tenure = tenure_bounds
    if latest.tenure_min < latest.tenure_max:
        tenure = st.slider("Tenure (months)", *tenure_bounds, tenure_bounds, key="tenure")
    payment_methods = st.multiselect(
        "Payment method", latest.payment_methods, placeholder="Any method", key="payment_methods"
    )
    internet_services = st.multiselect(
        "Internet service",
        latest.internet_services,
        placeholder="Any service",
        key="internet_services",
    )
    reason_contains = st.text_input(
        "Reason contains", key="reason_contains", placeholder="e.g. Fiber optic"
    )

filters = filter_from_widgets(
    bands=bands,
    probability=probability,
    contracts=contracts,
    tenure=tenure,
    tenure_bounds=tenure_bounds,
    payment_methods=payment_methods,
    internet_services=internet_services,
    reason_contains=reason_contains,
)
totals = data.call_list_totals(filters)

selected, high, at_risk = st.columns(3)
selected.metric("Customers selected", f"{totals.customers:,}")
high.metric("Of them in the high band", f"{totals.high_band:,}")
at_risk.metric(
    "Expected monthly revenue at risk",
    money(totals.revenue_at_risk),
    help="The selected customers' churn probability times their monthly charges, summed.",
)
st.markdown(export_link_html(filters, totals.customers), unsafe_allow_html=True)

table = st.container()
# A new filter starts again from its first page.
if st.session_state.get("call_list_filter") != filters:
    st.session_state["call_list_filter"] = filters
    st.session_state["page"] = 1
pages = page_count(totals.customers, data.page_size())
if st.session_state.get("page", 1) > pages:  # the date was rebuilt with fewer customers
    st.session_state["page"] = pages
page = st.number_input("Page", min_value=1, max_value=pages, step=1, key="page")
st.caption(f"Page {page:,} of {pages:,}, {data.page_size()} customers a page.")

rows = data.call_list_page(filters, int(page))
if rows.empty:
    table.info("No customer matches these filters.")
else:
    table.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "risk_rank": st.column_config.NumberColumn("Rank", format="%d"),
            "customer_id": st.column_config.TextColumn("Customer"),
            "churn_probability": st.column_config.ProgressColumn(
                "Churn probability", format="percent", min_value=0.0, max_value=1.0
            ),
            "risk_band": st.column_config.TextColumn("Band"),
            "top_reason_1": st.column_config.TextColumn("Reason 1"),
            "top_reason_2": st.column_config.TextColumn("Reason 2"),
            "top_reason_3": st.column_config.TextColumn("Reason 3"),
            "monthly_charges": st.column_config.NumberColumn("Monthly charges", format="dollar"),
            "contract": st.column_config.TextColumn("Contract"),
            "tenure_months": st.column_config.NumberColumn("Tenure (months)", format="%d"),
            "payment_method": st.column_config.TextColumn("Payment method"),
            "internet_service": st.column_config.TextColumn("Internet service"),
        },
    )
