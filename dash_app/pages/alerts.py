"""Registers the case queue; layout and callbacks live in :mod:`dash_app.views.alerts`."""

import dash
from dash import callback

from dash_app.views import alerts as v

dash.register_page(__name__, path="/alerts", name="Case queue", order=1)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
callback(*v.ACT_IO, prevent_initial_call=True)(v.act)
callback(*v.ASSIGNEES_IO)(v.assignees)
callback(*v.EXPORT_IO, prevent_initial_call=True)(v.export)
callback(*v.NAV_IO, prevent_initial_call=True)(v.open_case)
