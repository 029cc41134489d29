"""The dashboard's entry point: the page settings and the navigation between its pages."""

import streamlit as st

st.set_page_config(page_title="RetentionAI", page_icon=":material/support_agent:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/call_list.py", title="Call list", icon=":material/call:", default=True),
        st.Page("pages/customer.py", title="Customer", icon=":material/person_search:"),
        st.Page("pages/trends.py", title="Trends", icon=":material/trending_up:"),
        st.Page("pages/model_health.py", title="Model health", icon=":material/monitor_heart:"),
    ]
)
navigation.run()
