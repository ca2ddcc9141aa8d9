"""Registers the Rules page; layout and callbacks live in :mod:`dash_app.views.rules`."""

import dash
from dash import callback

from dash_app.views import rules as v

dash.register_page(__name__, path="/rules", name="Rules", order=4)

layout = v.layout
callback(*v.REFRESH_IO)(v.refresh)
callback(*v.FILL_IO, prevent_initial_call=True)(v.fill)
callback(*v.VALIDATE_IO)(v.validate)
callback(*v.ACT_IO, prevent_initial_call=True)(v.act)
callback(*v.HISTORY_IO)(v.history)
callback(*v.SELECT_IO, prevent_initial_call=True)(v.select_version)
callback(*v.DIFF_IO)(v.diff)
callback(*v.BACKTEST_IO, prevent_initial_call=True)(v.backtest)
