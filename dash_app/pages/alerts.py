"""Registers the case queue; layout and callbacks live in :mod:`dash_app.views.alerts`
(the grid's reload and page selection run in the browser: ``assets/queue.js``)."""

import dash
from dash import ClientsideFunction, callback, clientside_callback

from dash_app.views import alerts as v

dash.register_page(__name__, path="/alerts", name="Case queue", order=1)

layout = v.layout
callback(*v.PAGE_IO, prevent_initial_call=True)(v.page)
clientside_callback(ClientsideFunction("queue", "reload"), *v.RELOAD_IO, prevent_initial_call=True)
clientside_callback(
    ClientsideFunction("queue", "selection"), *v.SELECT_IO, prevent_initial_call=True
)
callback(*v.ACT_IO, prevent_initial_call=True)(v.act)
callback(*v.ASSIGNEES_IO)(v.assignees)
callback(*v.EXPORT_IO, prevent_initial_call=True)(v.export)
callback(*v.NAV_IO, prevent_initial_call=True)(v.open_case)
callback(*v.LIVE_IO, prevent_initial_call=True)(v.on_push)
callback(*v.SAVE_VIEW_IO, prevent_initial_call=True)(v.on_save_view)
callback(*v.VIEW_OPTIONS_IO)(v.view_options)
callback(*v.APPLY_VIEW_IO, prevent_initial_call=True)(v.apply_view)
