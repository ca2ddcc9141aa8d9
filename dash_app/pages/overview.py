"""Registers the overview page; layout and callbacks live in :mod:`dash_app.views.overview`."""

import dash
from dash import callback

from dash_app.views import overview as v

dash.register_page(__name__, path="/", name="Overview", order=0)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
callback(*v.NAV_IO, prevent_initial_call=True)(v.open_user)
