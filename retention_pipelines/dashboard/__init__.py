"""The retention team's dashboard (Streamlit): the call list, one customer, trends and model
health, read from the ``analytics`` schema as the read-only reader login.

``retention dashboard`` serves ``server.py``: the app (``app.py`` and its ``pages/``) and the
call list's CSV export route (``export.py``). Queries live in ``queries.py``, their cached use
in ``data.py``, charts in ``charts.py``, the small decisions between in ``presentation.py``;
the page files only lay out.
"""
