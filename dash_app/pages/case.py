"""Registers the case page; layout and callbacks live in :mod:`dash_app.views.case`."""

import dash
from dash import callback

from dash_app.views import case as v

# Dash passes the rest of the pathname, still percent-encoded, as ``case_path``.
dash.register_page(__name__, path_template="/cases/<case_path>", name="Case", order=3)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
callback(*v.ACT_IO, prevent_initial_call=True)(v.act)
callback(*v.NEXT_IO, prevent_initial_call=True)(v.go_next)
