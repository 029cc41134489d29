"""What ``retention dashboard`` serves: the Streamlit app (``app.py`` and its pages) and, beside
it, the call list's CSV export route (``export.py``).

``streamlit run retention_pipelines/dashboard/server.py`` finds ``app`` and serves both.
"""

from pathlib import Path

import streamlit as st

from retention_pipelines.dashboard.export import ROUTES

app = st.App(Path(__file__).with_name("app.py"), routes=ROUTES)
